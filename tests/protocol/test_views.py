"""What each server sees. A and B are instrumented (observers record everything they get
in the clear) during real inferences, over gRPC and in one process, and their views are
checked against the true values computed here: the leakage table of docs/PROTOCOL.md,
tested."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from deployment import LINKS, deploy_over

from ppinfer.compiler.bounds import analyze
from ppinfer.compiler.program import Program
from ppinfer.compiler.simulator import simulate_batch
from ppinfer.protocol.session_keys import SealError, open_sealed

INFERENCES = 48


def _mean_abs_position_correlation(seen: np.ndarray, truth: np.ndarray) -> float:
    """Mean over positions of |corr| across inferences between what a server saw and the truth."""
    correlations = []
    for k in range(truth.shape[1]):
        if np.std(seen[:, k]) > 0 and np.std(truth[:, k]) > 0:
            correlations.append(abs(np.corrcoef(seen[:, k], truth[:, k])[0, 1]))
    return float(np.mean(correlations))


@pytest.fixture(scope="module", params=LINKS)
def views(
    request: pytest.FixtureRequest, keypair_1024: Any, digits: Any, digits_plan: Any
) -> dict[str, Any]:
    recorded: dict[str, list[Any]] = {
        "activation": [],
        "activation_exact": [],
        "seal": [],
        "masked_input": [],
        "stage_answer": [],
        "multipliers": [],
        "sealed": [],
    }

    def key_observer(what: str, values: Sequence[int]) -> None:
        recorded[what].append(np.array([float(v) for v in values]))
        if what == "activation":
            recorded["activation_exact"].append([int(v) for v in values])

    def model_observer(what: str, values: object) -> None:
        recorded[what].append(values)

    inputs = digits.test_x[:INFERENCES]
    with (
        deploy_over(
            request.param, [digits_plan], keypair_1024, key_observer, model_observer
        ) as deployment,
        deployment.client() as client,
    ):
        logits = np.array(list(client.predict_stream(inputs)))
        session = client.session_id
    return {"recorded": recorded, "inputs": inputs, "logits": logits, "session": session}


def test_model_server_sees_only_masked_inputs(views: dict[str, Any], digits_plan: Any) -> None:
    masked = np.array(views["recorded"]["masked_input"], dtype=np.float64)
    encoded = np.array([digits_plan.input_format.encode(x) for x in views["inputs"]], dtype=float)
    assert masked.shape == encoded.shape
    assert not np.any(masked == encoded)  # never the input itself
    # u = x^ + r with r uniform over 60 bits: nothing of x^ survives, position by position.
    assert _mean_abs_position_correlation(masked, encoded) < 0.3
    assert masked.min() > 2.0**40  # masks dominate the 20-bit inputs


def test_model_server_sees_stage_results_only_under_masks(
    views: dict[str, Any], digits_plan: Any
) -> None:
    answers = views["recorded"]["stage_answer"]
    stages = len(digits_plan.activations)
    assert len(answers) == INFERENCES * stages
    numerics = analyze(digits_plan)
    sigma = digits_plan.masks.answer_sigma
    for stage in range(stages):
        seen = np.array(answers[stage::stages], dtype=np.float64)
        results_bits = numerics.layers[stage].answer_bits
        assert results_bits is not None  # hidden layers have answers
        # y + t with |y| < 2^answer_bits and t uniform below 2^(answer_bits + sigma)
        assert seen.min() > -(2.0**results_bits)
        assert seen.max() < 2.0 ** (results_bits + sigma) + 2.0**results_bits
        assert np.median(seen) > 2.0 ** (results_bits + sigma - 3)
        # no answer repeats across inferences and positions: every t was fresh
        assert len(np.unique(seen)) == seen.size


def test_model_server_cannot_open_the_output(views: dict[str, Any]) -> None:
    sealed = views["recorded"]["sealed"]
    assert len(sealed) == INFERENCES
    for request_id, blob in enumerate(sealed, start=1):
        with pytest.raises(SealError):  # A knows the session and request ids, not k_out
            open_sealed(bytes(32), views["session"], request_id, blob)


def test_key_server_sees_masked_permuted_preactivations(
    views: dict[str, Any], digits_plan: Any
) -> None:
    seen = np.array(views["recorded"]["activation"])
    numerics = analyze(digits_plan)
    scale = 2.0 ** numerics.layers[0].out_scale
    first = digits_plan.dense[0]
    truth = np.array([first.weight @ x + first.bias for x in views["inputs"]]) * scale
    assert seen.shape == truth.shape == (INFERENCES, 32)
    # Permuted afresh per inference: position k of B's view is not neuron k.
    assert _mean_abs_position_correlation(seen, truth) < 0.3
    # Multiplied by d >= 2^8: B's magnitudes are not the true ones.
    ratio = np.median(np.abs(seen[seen != 0])) / np.median(np.abs(truth))
    assert ratio > 2**8
    # What the leakage table says B does learn: the sign pattern (z >= 0 or not) as a count
    # per inference; d z + e with 0 <= e < d keeps it.
    assert np.array_equal((seen >= 0).sum(axis=1), (np.rint(truth) >= 0).sum(axis=1))


def test_key_server_cannot_tell_the_multiplicative_mask(
    views: dict[str, Any], digits_plan: Any
) -> None:
    """Finding 2: B used to get d·z exactly, and the divisors of d·z in [2^8, 2^16) left a
    handful of candidates for d (so for z). With d·z + e, 0 <= e < d, every d in range is
    consistent with what B sees unless it would make z exceed its proven bound: over
    every value B saw, the consistent d stay close to the whole range."""
    masks = digits_plan.masks
    z_bits = analyze(digits_plan).layers[0].z_bits
    candidates = np.arange(2**masks.min_bits, 2**masks.max_bits, dtype=np.int64)
    fractions = []
    for values in views["recorded"]["activation_exact"]:
        for v in values[::4]:  # every fourth value keeps the test quick
            z = np.floor_divide(np.int64(v), candidates)  # the z each d would imply
            consistent = (np.abs(z) < 2**z_bits) & (v - z * candidates < candidates)
            fractions.append(np.count_nonzero(consistent) / candidates.size)
    assert len(fractions) >= INFERENCES * 8
    assert np.median(fractions) > 0.99 and np.min(fractions) > 0.9
    # The divisor attack: d divided every value B saw (d·z); now only about 1 in d does.
    seen = views["recorded"]["activation_exact"]
    multipliers = views["recorded"]["multipliers"]
    assert len(multipliers) == len(seen) == INFERENCES * len(digits_plan.activations)
    pairs = [
        (v, d)
        for values, scales in zip(seen, multipliers, strict=True)  # both in stage order
        for v, d in zip(values, scales, strict=True)
    ]
    divided = sum(1 for v, d in pairs if v % d == 0)
    assert divided < 0.02 * len(pairs)


def test_key_server_cannot_read_the_output(views: dict[str, Any], digits_plan: Any) -> None:
    seen = np.array(views["recorded"]["seal"])
    numerics = analyze(digits_plan)
    truth = views["logits"] * 2.0**numerics.output_scale
    assert seen.shape == truth.shape
    assert _mean_abs_position_correlation(seen, truth) < 0.3
    # Masks answer_sigma (64) bits wider than the logits' bound: the values are lost in them.
    sigma = digits_plan.masks.answer_sigma
    assert np.median(np.abs(seen)) > 2.0 ** (sigma - 5) * np.max(np.abs(truth))
    expected = simulate_batch(Program(digits_plan), views["inputs"])
    np.testing.assert_allclose(views["logits"], expected, atol=5e-3)  # and the client got it
