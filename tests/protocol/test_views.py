"""What each server sees. A and B are instrumented (observers record everything they get
in the clear) during real inferences, over gRPC and in one process, and their views are
checked against the true values computed here: the leakage table of docs/PROTOCOL.md,
tested."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from daemon_helpers import wait_for
from deployment import LINKS, deploy_over

from ppinfer.compiler.bounds import analyze
from ppinfer.compiler.program import Program
from ppinfer.compiler.simulator import simulate_batch
from ppinfer.protocol.session_keys import SealError, open_sealed, open_ticket

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
        "share": [],
        "ticket": [],
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
    # masks dominate the inputs: r is uniform below 2^mask_bits, so about 1 value in 256
    # lies below 2^(mask_bits - 8), while every input lies below 2^value_bits
    mask_bits = digits_plan.input_format.value_bits + digits_plan.masks.sigma
    assert np.quantile(masked, 0.01) > 2.0 ** (mask_bits - 8)


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


def test_model_server_cannot_open_the_tickets(views: dict[str, Any]) -> None:
    """The seeds of the client's input masks reach A only sealed under k_mask."""
    tickets = views["recorded"]["ticket"]
    assert len(tickets) == INFERENCES  # each result carries the next request's ticket
    assert len(set(tickets)) == len(tickets)
    for request_id, ticket in enumerate(tickets, start=2):
        with pytest.raises(SealError):
            open_ticket(bytes(32), views["session"], request_id, ticket)


def test_key_server_shares_are_lost_in_their_masks(
    views: dict[str, Any], digits_plan: Any, keypair_1024: Any
) -> None:
    """B's share s = d·(-W m) + lambda of each stage and of the output: lambda is
    answer_sigma bits wider than any d·W m, so the shares spread over lambda's whole
    range and never repeat; they are not the mask parts B could compute W from."""
    public, _ = keypair_1024
    program = Program(digits_plan)
    layouts = program.layouts(public.bits).shares
    shares = views["recorded"]["share"]
    # the parts by their sizes (entries made at once interleave theirs)
    sizes = [stage.sent for stage in program.stages] + [digits_plan.outputs]
    assert len(set(sizes)) == len(sizes)
    layout_of = dict(zip(sizes, layouts, strict=True))
    assert len(shares) >= INFERENCES * len(layouts)
    values = []
    for share in shares:
        bits = layout_of[len(share)].value_bits - 1  # lambda's width
        c = bits - digits_plan.masks.answer_sigma  # the mask part's bound
        assert share.min() > -(2.0**c) and share.max() < 2.0**bits + 2.0**c
        values.extend(share / 2.0**bits)
    spread = np.array(values)
    # uniform on [0, 1): the quartiles sit at a quarter, a half, three quarters
    np.testing.assert_allclose(np.quantile(spread, [0.25, 0.5, 0.75]), [0.25, 0.5, 0.75],
                               atol=0.05)  # fmt: skip
    assert len(np.unique(spread)) == spread.size


@pytest.mark.parametrize("link", LINKS)
def test_key_server_answers_requests_without_a_paillier_operation(
    link: str, keypair_1024: Any, digits: Any, digits_plan: Any
) -> None:
    """With the store full and the filler idle, a session's requests change none of B's
    Paillier counters: no decryption, no encryption, no randomizer. And each entry is
    bound once: one per ticket, the first request's and one per result."""
    with deploy_over(
        link, [digits_plan], keypair_1024, store_size=8, store_low_water=0
    ) as deployment:
        wait_for(lambda: deployment.a_counters(digits_plan.name).get("store.store_depth", 0) == 8,
                 "a full store", timeout=120)  # fmt: skip
        before = deployment.key_core.stats()
        with deployment.client(max_in_flight=1) as client:
            logits = np.array(list(client.predict_stream(digits.test_x[:5])))
        after = deployment.key_core.stats()
    for counter in ("decryptions", "masks", "entries", "pool_hits", "pool_misses"):
        assert after.get(counter, 0) == before.get(counter, 0), counter
    assert after["entries_bound"] - before.get("entries_bound", 0) == 5 + 1
    assert after["activations"] > before.get("activations", 0)  # B did answer the stages
    expected = simulate_batch(Program(digits_plan), digits.test_x[:5])
    np.testing.assert_allclose(logits, expected, atol=5e-3)


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
