"""Plans: pickle-free files with a version, validation, and proven bounds that real runs respect."""

from __future__ import annotations

import io
import json
import math
import secrets
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppinfer.compiler.activations import Function
from ppinfer.compiler.bounds import analyze, check_key_fits
from ppinfer.compiler.plan import (
    Activation,
    Dense,
    MaskSettings,
    Plan,
    PlanError,
    load_plan,
    save_plan,
)
from ppinfer.compiler.program import Program
from ppinfer.compiler.simulator import simulate
from ppinfer.encoding.fixedpoint import FixedPoint
from ppinfer.encoding.masks import multiplier_noise
from ppinfer.paillier import PrivateKey, PublicKey

Keypair = tuple[PublicKey, PrivateKey]


PARAMETERS = {"leaky_relu": (0.1,), "hardtanh": (-0.5, 2.0), "softplus": (2.0, 20.0)}


def make_plan(activation: str = "relu", seed: int = 0, pooled: bool = False) -> Plan:
    """6 -> 5 -> activation (optionally max over windows of 2 of 6) -> 4 -> tanh -> 3."""
    rng = np.random.default_rng(seed)
    function = Function(activation, PARAMETERS.get(activation, ()))
    first = (
        Activation((function,), 16, np.array([[0, 1], [2, 3], [4, 4], [1, 3], [0, 2]]))
        if pooled
        else Activation((function,), 16)
    )
    return Plan(
        name=f"test-{activation}",
        input_shape=(2, 3),
        input_format=FixedPoint(12, 16),
        dense=(
            Dense(rng.normal(size=(5, 6)), rng.normal(size=5), 14),
            Dense(rng.normal(size=(4, 5)), rng.normal(size=4), 14),
            Dense(rng.normal(size=(3, 4)), rng.normal(size=3), 14),
        ),
        activations=(first, Activation((Function("tanh"),), 16)),
        client_activation="softmax",
    )


@pytest.mark.parametrize("pooled", [False, True])
def test_save_and_load_round_trip(tmp_path: Path, pooled: bool) -> None:
    plan = make_plan("leaky_relu", pooled=pooled)
    save_plan(plan, tmp_path / "m.ppi")
    loaded = load_plan(tmp_path / "m.ppi")
    assert loaded.name == plan.name and loaded.input_shape == plan.input_shape
    assert loaded.activations == plan.activations and loaded.masks == plan.masks
    for ours, theirs in zip(loaded.dense, plan.dense, strict=True):
        np.testing.assert_array_equal(ours.weight, theirs.weight)
        assert ours.weight_frac_bits == theirs.weight_frac_bits


def _rewrite_meta(path: Path, **changes: object) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    meta_bytes = np.load(path, allow_pickle=False)["plan.json"].tobytes()
    meta = json.loads(meta_bytes)
    meta.update(changes)
    arrays = {
        name: np.load(path, allow_pickle=False)[name]
        for name in (n.removesuffix(".npy") for n in members)
    }
    arrays["plan.json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 99}, "compile the model again"),
        ({"format": "x"}, "not a ppinfer plan"),
        (
            {
                "activations": [
                    {
                        "functions": [{"name": "erf", "parameters": []}],
                        "after": [],
                        "pooled": False,
                        "out_frac_bits": 16,
                        "label": "",
                        "output_shape": [],
                    }
                ]
                * 2
            },
            "unknown function 'erf'",
        ),
        ({"dense": []}, "one activation between"),
    ],
)
def test_damaged_plans_are_refused(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    path = tmp_path / "m.ppi"
    save_plan(make_plan(), path)
    _rewrite_meta(path, **changes)
    with pytest.raises(PlanError, match=message):
        load_plan(path)


def test_a_pickle_is_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "m.ppi"
    with path.open("wb") as handle:
        np.savez(handle, **{"plan.json": np.array([{"format": "ppinfer-plan"}], dtype=object)})  # type: ignore[arg-type]
    with pytest.raises(PlanError):
        load_plan(path)
    (tmp_path / "junk.ppi").write_bytes(b"not a zip")
    with pytest.raises(PlanError, match="cannot read"):
        load_plan(tmp_path / "junk.ppi")


def test_inconsistent_plans_are_refused() -> None:
    good = make_plan()
    with pytest.raises(PlanError, match="takes 6 inputs but gets 5"):
        Plan("x", (5,), good.input_format, good.dense, good.activations)
    with pytest.raises(PlanError, match="one activation between"):
        Plan("x", (2, 3), good.input_format, good.dense, good.activations[:1])
    with pytest.raises(PlanError, match="int64"):
        Plan("x", (2, 3), FixedPoint(12, 30), good.dense, good.activations)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sigma": 39}, "at least 40"),
        ({"answer_sigma": 20}, "at least 40"),
        ({"min_bits": 0}, "min_bits >= 1"),
        ({"spread_bits": 0}, "spread_bits >= 1"),
        ({"min_bits": 20, "spread_bits": 16}, "<= 32"),
    ],
)
def test_weak_mask_settings_are_refused(
    tmp_path: Path, settings: dict[str, int], message: str
) -> None:
    """Finding 7: a plan with sigma < 40, min_bits < 1 or spread_bits < 1 used to load and
    be served; it is refused when built and when a damaged file declares it."""
    with pytest.raises(PlanError, match=message):
        MaskSettings(**settings)
    good = make_plan()
    save_plan(good, tmp_path / "p.ppi")
    with zipfile.ZipFile(tmp_path / "p.ppi") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    meta = json.loads(np.load(io.BytesIO(members["plan.json.npy"])).tobytes())
    meta["masks"].update(settings)
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    members["plan.json.npy"] = buffer.getvalue()
    with zipfile.ZipFile(tmp_path / "weak.ppi", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(PlanError, match=message):
        load_plan(tmp_path / "weak.ppi")


@given(
    z=st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=9),
    d=st.integers(2**8, 2**16 - 1),
)
def test_the_noisy_multiplicative_mask_keeps_signs_and_window_order(z: list[int], d: int) -> None:
    """d·z + e with 0 <= e < d: the sign of z (z >= 0 or not), which value of a window is
    largest, and z itself (floor((d·z + e) / d)) survive, so ReLU and max stay exact up to
    less than one unit of z's scale."""
    sent = [d * v + e for v, e in zip(z, multiplier_noise([d] * len(z)), strict=True)]
    assert [v >= 0 for v in sent] == [v >= 0 for v in z]
    assert [s // d for s in sent] == z
    assert z[sent.index(max(sent))] == max(z)


def test_the_noise_hides_the_multiplier_of_a_window() -> None:
    """Over a 2x2 pooling window sharing one d, the gcd of the four values of d·z was a
    multiple of d; with the noise it is a multiple of d about once in 10^9 draws."""
    d, windows = 40_000, 200
    hits = 0
    for _ in range(windows):
        z = [secrets.randbelow(2**30) - 2**29 for _ in range(4)]
        sent = [d * v + e for v, e in zip(z, multiplier_noise([d] * 4), strict=True)]
        hits += math.gcd(*sent) % d == 0
    assert hits == 0


def test_sparse_weights_are_stored_as_coordinates(tmp_path: Path) -> None:
    plan = make_plan()
    weight = np.zeros((5, 6))
    weight[1, 2], weight[4, 0] = 0.5, -1.25
    sparse = Plan(
        plan.name,
        plan.input_shape,
        plan.input_format,
        (Dense(weight, np.zeros(5), 14), *plan.dense[1:]),
        plan.activations,
    )
    save_plan(sparse, tmp_path / "s.ppi")
    with np.load(tmp_path / "s.ppi", allow_pickle=False) as archive:
        assert "dense0.rows" in archive.files and "dense0.weight" not in archive.files
    np.testing.assert_array_equal(load_plan(tmp_path / "s.ppi").dense[0].weight, weight)


def test_windows_must_index_the_layer() -> None:
    good = make_plan(pooled=True)
    bad = Activation(good.activations[0].functions, 16, np.array([[0, 5]]))
    with pytest.raises(PlanError, match="windows must index its 5 inputs"):
        Plan("x", (2, 3), good.input_format, good.dense, (bad, good.activations[1]))


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize(
    "activation",
    ["relu", "leaky_relu", "square", "sigmoid", "identity", "hardtanh", "gelu", "softplus"],
)
def test_bounds_hold_at_the_edges_of_the_input_range(activation: str, pooled: bool) -> None:
    plan = make_plan(activation, pooled=pooled)
    program = Program(plan)
    numerics = program.numerics
    limit = plan.input_format.max_abs_real
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.choice([-limit, limit], size=plan.input_shape)
        logits = simulate(program, x)
        integers = np.abs(logits) * 2.0**numerics.output_scale
        assert np.all(integers < 2.0 ** numerics.layers[-1].z_bits)


def test_key_too_small_for_the_plan_is_refused() -> None:
    numerics = analyze(make_plan("square"))
    with pytest.raises(PlanError, match="bits, but a 64-bit key holds 62"):
        check_key_fits(numerics, 64, "m")
    check_key_fits(numerics, 2048, "m")


def test_a_single_array_is_not_taken_for_a_plan(tmp_path: Path) -> None:
    """Issue 22, item 7: serve-model --model x.npy ended in a TypeError traceback."""
    np.save(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(PlanError, match="single numpy array, not a plan"):
        load_plan(tmp_path / "x.npy")
