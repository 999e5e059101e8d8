"""The protocol suite end to end, over the in-process link and over gRPC on localhost:
exact predictions, streams, concurrency, progress, the preprocessing store, and the errors a user
can cause arriving as clear ones."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from daemon_helpers import wait_for
from deployment import (
    LINKS,
    TEST_STORE_SIZE,
    Deployment,
    compiled,
    deploy_over,
    float_logits,
)

from ppinfer.compiler.program import Program
from ppinfer.compiler.simulator import simulate_batch
from ppinfer.errors import (
    EncodingRangeError,
    KeyMismatchError,
    PPInferError,
    ProtocolOrderError,
    ServerError,
)
from ppinfer.example_models import breast_cancer_split, train_mlp
from ppinfer.paillier import PrivateKey, PublicKey

Keypair = tuple[PublicKey, PrivateKey]


@pytest.fixture(scope="module", params=LINKS)
def small_deployment(
    request: pytest.FixtureRequest, keypair_1024: Keypair, digits_plan: Any
) -> Any:
    """The protocol suite's deployment: in one process, and over gRPC on localhost."""
    with deploy_over(request.param, [digits_plan], keypair_1024) as deployment:
        yield deployment


def test_many_inferences_on_one_stream_come_back_in_order(
    small_deployment: Any, digits: Any, digits_plan: Any
) -> None:
    inputs = digits.test_x[:24]
    with small_deployment.client(max_in_flight=6) as client:
        streamed = list(client.predict_stream(inputs))
        single = client.predict(inputs[5])
        assert client.stats.inferences == 25
    expected = simulate_batch(Program(digits_plan), inputs)
    np.testing.assert_allclose(np.array(streamed), expected, atol=5e-3)
    np.testing.assert_allclose(single, streamed[5], atol=5e-3)


def test_two_clients_at_once(small_deployment: Any, digits: Any, digits_relu_model: Any) -> None:
    reference = float_logits(digits_relu_model, digits.test_x[:20]).argmax(axis=1)
    results: dict[int, np.ndarray] = {}
    failures: list[BaseException] = []

    def run(index: int, inputs: np.ndarray) -> None:
        try:
            with small_deployment.client() as client:
                results[index] = np.array(list(client.predict_stream(inputs))).argmax(axis=1)
        except BaseException as error:
            failures.append(error)

    threads = [
        threading.Thread(target=run, args=(i, digits.test_x[i * 10 : i * 10 + 10]))
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures
    assert np.array_equal(np.concatenate([results[0], results[1]]), reference)


def test_bad_inputs_are_refused_at_the_client(small_deployment: Any) -> None:
    with small_deployment.client() as client:
        with pytest.raises(PPInferError, match="input shape"):
            client.predict(np.zeros(63))
        with pytest.raises(EncodingRangeError, match="NaN"):
            client.predict(np.full(64, np.nan))
        with pytest.raises(EncodingRangeError, match="outside the declared range"):
            client.predict(np.full(64, 1e6))
        assert client.predict(np.zeros(64)).shape == (10,)  # the session survived


def test_unknown_model_and_wrong_pin(small_deployment: Any) -> None:
    with pytest.raises(ServerError) as caught, small_deployment.client(model="nope"):
        pass
    assert caught.value.status == "NOT_FOUND" and "digits-relu" in caught.value.message
    with (
        pytest.raises(KeyMismatchError, match="pinned"),
        small_deployment.client(expected_key_id="0" * 64),
    ):
        pass


def test_a_pin_is_any_prefix_of_16_hex_digits_or_more_in_either_case(
    small_deployment: Any,
) -> None:
    """Issue 22, item 10: --pin refused the 16-hex id B's banner printed, and upper case."""
    key_id = small_deployment.key_core.fingerprint
    for pin in (key_id, key_id[:16], key_id[:20].upper()):
        with small_deployment.client(expected_key_id=pin) as client:
            assert client.predict(np.zeros(64)).shape == (10,)
    wrong = ("0" if key_id[0] != "0" else "1") + key_id[1:16]
    with pytest.raises(KeyMismatchError), small_deployment.client(expected_key_id=wrong):
        pass
    with pytest.raises(PPInferError, match="16 to 64 hex digits"):
        small_deployment.client(expected_key_id=key_id[:8])


def test_progress_events_only_when_asked(small_deployment: Any) -> None:
    with small_deployment.client() as quiet:
        quiet.predict(np.zeros(64))
        if isinstance(small_deployment, Deployment):  # messages are the wire's
            assert quiet.stats.messages_down == 2  # opened, then the result alone
    events: list[tuple[int, int, int]] = []
    with small_deployment.client(on_progress=lambda *e: events.append(e)) as told:
        told.predict(np.zeros(64))
        told.predict(np.ones(64))
    steps = events[-1][2]
    assert steps == 3  # two layers and the seal
    assert events == [(r, s, steps) for r in (1, 2) for s in range(1, steps + 1)]


def test_sessions_take_entries_the_store_made_ahead(small_deployment: Any, digits: Any) -> None:
    """Every request runs on an entry made before it: taken from the store when one is
    ready, made for it otherwise (a miss). Open binds the first ticket, each inference
    the next: one entry more than inferences. The answers do not depend on where the
    entry came from."""
    inputs = digits.test_x[:5]
    reference = simulate_batch(Program(small_deployment.plans[0]), inputs)
    _wait_for_store(small_deployment, TEST_STORE_SIZE)
    before = _a_counters(small_deployment)
    with small_deployment.client(max_in_flight=1) as client:
        answers = np.array([client.predict(x) for x in inputs])
    after = _a_counters(small_deployment)
    np.testing.assert_allclose(answers, reference, atol=2e-3)
    taken = after.get("store.taken", 0) - before.get("store.taken", 0)
    missed = after.get("store.missed", 0) - before.get("store.missed", 0)
    assert taken + missed == len(inputs) + 1
    assert taken >= TEST_STORE_SIZE  # those ready when the session began
    assert after["store.made"] >= TEST_STORE_SIZE and after["entry_us"] > 0
    # B performed no Paillier operation online: its decryptions are the shares' alone
    assert after.get("failed_online", 0) == before.get("failed_online", 0)


def _wait_for_store(deployment: Any, entries: int, model: str = "digits-relu") -> None:
    wait_for(
        lambda: _a_counters(deployment, model).get("store.store_depth", 0) >= entries,
        f"{entries} entries in the store",
        timeout=120,
    )


def _a_counters(deployment: Any, model: str = "digits-relu") -> dict[str, int]:
    counters: dict[str, int] = deployment.a_counters(model)
    return counters


@pytest.mark.parametrize("link", LINKS)
def test_a_stage_without_multiplicative_masks(keypair_1024: Keypair, link: str) -> None:
    """Tanh allows no multiplicative mask: the stages' shares are permuted and packed
    only; with two hidden layers, both stages and the output have their shares."""
    split = breast_cancer_split()
    model = train_mlp(split, [12, 8], "tanh")
    plan = compiled(model, split, "breast-cancer-tanh2")
    inputs = split.test_x[:4]
    reference = simulate_batch(Program(plan), inputs)
    with (
        deploy_over(link, [plan], keypair_1024) as deployment,
        deployment.client(max_in_flight=2) as client,
    ):
        answers = np.array(list(client.predict_stream(inputs)))
    np.testing.assert_allclose(answers, reference, atol=2e-3)


def test_a_stream_stopped_early_leaves_the_client_usable(small_deployment: Any) -> None:
    """Issue 22, item 3: leaving predict_stream after two results, or a NaN in the batch,
    made every later call fail with 'expected the result of 7, got 3'."""
    inputs = [np.full(64, k / 16) for k in range(6)]
    with small_deployment.client(max_in_flight=4) as client:
        expected = [client.predict(x) for x in inputs[:3]]
        for count, _ in enumerate(client.predict_stream(inputs), start=1):
            if count == 2:
                break
        np.testing.assert_allclose(client.predict(inputs[2]), expected[2], atol=2e-3)
        batch = [*inputs[:2], np.full(64, np.nan), inputs[0]]
        with pytest.raises(EncodingRangeError, match=r"input 2: .*NaN"):
            list(client.predict_stream(batch))
        kept = client.predict_stream(inputs)
        next(kept)  # a stream held with results due, then another call
        np.testing.assert_allclose(client.predict(inputs[1]), expected[1], atol=2e-3)


def test_a_closed_client_and_string_inputs_are_clear_errors(small_deployment: Any) -> None:
    """Issue 22, item 13: predict after close() gave 'RuntimeError: Event loop is closed',
    and a string input a bare ValueError."""
    client = small_deployment.client()
    with client:
        with pytest.raises(EncodingRangeError, match="real numbers"):
            client.predict(np.array(["a"] * 64))
        assert client.predict(np.zeros(64)).shape == (10,)  # still usable
    with pytest.raises(ProtocolOrderError, match="closed"):
        client.predict(np.zeros(64))
