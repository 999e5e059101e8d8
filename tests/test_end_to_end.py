"""Private inference end to end over real gRPC on localhost: exact predictions, streams,
concurrency, and every error a user can cause arriving as a clear status."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from deployment import LINKS, Deployment, compiled, deploy, deploy_over, float_logits
from raw_session import RawSession

from ppinfer.compiler.program import Program
from ppinfer.compiler.simulator import simulate_batch
from ppinfer.errors import (
    EncodingRangeError,
    KeyMismatchError,
    PPInferError,
    ProtocolOrderError,
    ProtocolRevisionError,
    ServerError,
)
from ppinfer.example_models import breast_cancer_split, train_mlp
from ppinfer.paillier import PrivateKey, PublicKey
from ppinfer.protocol.revision import PROTOCOL_REVISION
from ppinfer.protocol.session_keys import input_mask, key_server_fingerprint, public_bytes
from ppinfer.rpc.client_transport import StreamTransport
from ppinfer.v1 import model_service_pb2, model_service_pb2_grpc, tensors_pb2

Keypair = tuple[PublicKey, PrivateKey]


def _run_split(deployment: Deployment, inputs: np.ndarray) -> tuple[np.ndarray, Any]:
    with deployment.client() as client:
        logits = np.array(list(client.predict_stream(inputs)))
        return logits, client.stats


def test_digits_relu_mlp_full_test_split_at_2048_bits(
    keypair_2048: Keypair, digits: Any, digits_relu_model: Any, digits_plan: Any
) -> None:
    reference = float_logits(digits_relu_model, digits.test_x)
    with deploy([digits_plan], keypair_2048) as deployment:
        private, stats = _run_split(deployment, digits.test_x)
    agreement = np.mean(private.argmax(axis=1) == reference.argmax(axis=1))
    error = float(np.max(np.abs(private - reference)))
    print(
        f"digits relu: agreement {agreement:.2%} over {len(private)}, max logit error {error:.2e}, "
        f"client {stats.bytes_up / len(private):.0f} B up {stats.bytes_down / len(private):.0f} "
        f"B down per inference"
    )
    assert len(private) == len(digits.test_x) == 360
    assert agreement == 1.0
    assert error < 0.01


def test_breast_cancer_tanh_mlp_full_test_split_at_2048_bits(keypair_2048: Keypair) -> None:
    split = breast_cancer_split()
    model = train_mlp(split, [16], "tanh")
    plan = compiled(model, split, "breast-cancer-tanh")
    reference = float_logits(model, split.test_x)
    with deploy([plan], keypair_2048) as deployment:
        private, _ = _run_split(deployment, split.test_x)
    error = float(np.max(np.abs(private - reference)))
    print(f"breast cancer tanh: {len(private)} inputs, max logit error {error:.2e}")
    assert len(private) == len(split.test_x) == 114
    assert np.array_equal(private.argmax(axis=1), reference.argmax(axis=1))
    assert error < 0.01


@pytest.fixture(scope="module", params=LINKS)
def small_deployment(
    request: pytest.FixtureRequest, keypair_1024: Keypair, digits_plan: Any
) -> Any:
    """The protocol suite's deployment: in one process, and over gRPC on localhost."""
    with deploy_over(request.param, [digits_plan], keypair_1024) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def grpc_deployment(keypair_1024: Keypair, digits_plan: Any) -> Any:
    """For what only the wire shows: raw messages, statuses, the admin listener, B down."""
    with deploy([digits_plan], keypair_1024) as deployment:
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


def _lying_server_info(
    monkeypatch: pytest.MonkeyPatch, change: Callable[[model_service_pb2.ServerInfo], None]
) -> None:
    """A's ServerInfo as a deviating A would send it: the real answer, changed by
    ``change`` on its way to the client."""
    honest = StreamTransport.server_info

    def lying(self: StreamTransport, request: Any, timeout: float) -> Any:
        info = honest(self, request, timeout)
        change(info)
        return info

    monkeypatch.setattr(StreamTransport, "server_info", lying)


def test_the_pin_covers_the_key_servers_x25519_key(
    grpc_deployment: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 3: the pin covered n alone, so an A that swapped in an X25519 key of its own
    learnt k_mask (so x) and k_out. The client now recomputes the fingerprint over n and
    the X25519 key it received, and checks the pin and A's stated id against it."""
    with grpc_deployment.client() as client:
        pin = client.model.key_id
    substitute = public_bytes(X25519PrivateKey.generate().public_key())

    def swap_consistently(info: model_service_pb2.ServerInfo) -> None:
        info.key_server_x25519 = substitute
        info.key_id = key_server_fingerprint(bytes(info.paillier.n), substitute)

    _lying_server_info(monkeypatch, swap_consistently)
    with (
        pytest.raises(KeyMismatchError, match="pinned"),
        grpc_deployment.client(expected_key_id=pin),
    ):
        pass

    def swap_keeping_the_id(info: model_service_pb2.ServerInfo) -> None:
        info.key_server_x25519 = substitute

    monkeypatch.undo()
    _lying_server_info(monkeypatch, swap_keeping_the_id)
    with (
        pytest.raises(KeyMismatchError, match="does not match the keys it sent"),
        grpc_deployment.client(expected_key_id=pin),
    ):
        pass


def test_the_client_refuses_weak_input_masks(
    grpc_deployment: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 7: a model that claimed a 20-bit sigma was accepted by the client."""

    def weaken(info: model_service_pb2.ServerInfo) -> None:
        info.model.mask_sigma = 20

    _lying_server_info(monkeypatch, weaken)
    with pytest.raises(PPInferError, match="at least 40"), grpc_deployment.client():
        pass


def test_a_low_order_client_key_is_a_clear_status(grpc_deployment: Any) -> None:
    """Finding 7: an all-zero X25519 point gave INTERNAL and a traceback in B's log."""

    def low_order(offer: Any, message: model_service_pb2.OpenSession) -> Any:
        message.client_x25519 = bytes(32)
        return message

    with (
        pytest.raises(ServerError) as caught,
        RawSession(grpc_deployment.address, grpc_deployment.tls, low_order),
    ):
        pass
    assert caught.value.status == "INVALID_ARGUMENT" and "low-order" in caught.value.message


def test_stats_are_for_operators_only(grpc_deployment: Any) -> None:
    """Finding 7: GetStats told any client non-zero weight counts, hidden widths and other
    tenants' activity. The client port refuses it; the admin listener serves it."""
    with grpc_deployment.channel() as channel, pytest.raises(grpc.RpcError) as caught:
        model_service_pb2_grpc.ModelServiceStub(channel).GetStats(
            tensors_pb2.StatsRequest(), timeout=30
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "--admin-listen" in (caught.value.details() or "")
    with grpc_deployment.admin_channel() as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        counters = stub.GetStats(tensors_pb2.StatsRequest(), timeout=30).counters
        assert "model_server.open_sessions" in counters
        with pytest.raises(grpc.RpcError) as refused:  # sessions are not served there
            stub.GetServerInfo(model_service_pb2.ServerInfoRequest(), timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


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


@pytest.mark.parametrize(
    ("revision", "upgrade"),
    [(0, "upgrade the ppinfer client"), (PROTOCOL_REVISION + 1, "upgrade the ppinfer model")],
)
def test_clients_of_another_protocol_revision_are_refused(
    grpc_deployment: Any, monkeypatch: pytest.MonkeyPatch, revision: int, upgrade: str
) -> None:
    """A client from before the sealed outputs were reduced (it sends no revision) would
    read them as full-width values: it gets a status telling it to upgrade instead."""

    def dated(offer: Any, message: model_service_pb2.OpenSession) -> Any:
        message.protocol = revision
        return message

    with (
        pytest.raises(ServerError) as caught,
        RawSession(grpc_deployment.address, grpc_deployment.tls, dated),
    ):
        pass
    assert caught.value.status == "FAILED_PRECONDITION" and upgrade in caught.value.message
    with grpc_deployment.client() as client:
        assert client.predict(np.zeros(64)).shape == (10,)


def test_a_model_server_of_an_older_revision_is_refused_by_the_client(
    grpc_deployment: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = StreamTransport.server_info

    def older(
        self: StreamTransport, request: model_service_pb2.ServerInfoRequest, timeout: float
    ) -> model_service_pb2.ServerInfo:
        info = current(self, request, timeout)
        info.model.ClearField("output_modulus_bits")  # as a server before revision 1 sends it
        return info

    monkeypatch.setattr(StreamTransport, "server_info", older)
    with (
        pytest.raises(ProtocolRevisionError, match="upgrade the model server"),
        grpc_deployment.client(),
    ):
        pass


def test_malformed_messages_get_statuses_not_crashes(grpc_deployment: Any) -> None:
    with RawSession(grpc_deployment.address, grpc_deployment.tls) as raw:
        bad = model_service_pb2.InferRequest(
            request_id=99, masked_input=model_service_pb2.InferRequest().masked_input
        )
        bad.masked_input.shape.extend([64])
        bad.masked_input.data = b"\0" * 10
        raw.send(model_service_pb2.ClientMessage(infer=bad))
        with pytest.raises(ServerError) as caught:
            raw.receive()
        assert (
            caught.value.status == "INVALID_ARGUMENT" and "needs 512 bytes" in caught.value.message
        )
    with RawSession(grpc_deployment.address, grpc_deployment.tls) as raw:
        raw.send_masked(1, np.full(64, 2**62, dtype=np.int64))
        with pytest.raises(ServerError) as caught:
            raw.receive()
        assert caught.value.status == "OUT_OF_RANGE"
    with grpc_deployment.client() as client:  # the server is still fine
        assert client.predict(np.zeros(64)).shape == (10,)


def test_hidden_values_pushed_past_their_bounds_give_one_generic_error(
    grpc_deployment: Any,
) -> None:
    """Finding 7: a client knows its mask r, so it can send x^ far beyond the declared
    range while u = x^ + r stays in the range A can check. The hidden values then pass
    their proven bounds and B refuses; the client used to read which check failed, and
    where (an oracle on hidden magnitudes). It now gets one generic OUT_OF_RANGE."""
    messages = []
    for request_id in (1, 2):  # each failure ends its session: one session each
        with RawSession(grpc_deployment.address, grpc_deployment.tls) as raw:
            model, keys = raw.opened.model, raw.opened.keys
            r = input_mask(keys.k_mask, request_id, 64, model.mask_bits)
            # u within what A can check, x^ = u - r past the declared 2^value_bits: just
            # past it on every other value, or by up to 2^mask_bits on all of them
            pushed = np.full(64, 2**model.mask_bits - 1, dtype=np.int64)
            if request_id == 1:
                pushed[::2] = r[::2] + 2**model.input_format.value_bits
            raw.send_masked(request_id, pushed)
            with pytest.raises(ServerError) as caught:
                raw.receive()
            messages.append((caught.value.status, caught.value.message))
    assert messages[0] == messages[1]
    status, message = messages[0]
    assert status == "OUT_OF_RANGE" and "outside the model's declared range" in message
    for detail in ("slot", "stage", "exceed", "2^"):
        assert detail not in message


def test_reused_request_id_is_refused(grpc_deployment: Any) -> None:
    with RawSession(grpc_deployment.address, grpc_deployment.tls) as raw:
        raw.predict(7, np.zeros(64))  # a buggy client reusing its mask
        with pytest.raises(ServerError) as caught:
            raw.predict(7, np.ones(64) / 2)
    assert caught.value.status == "ALREADY_EXISTS"
    assert "reveal the difference" in caught.value.message


def test_key_server_down_gives_unavailable_and_model_server_stays_up(
    keypair_1024: Keypair, digits_plan: Any
) -> None:
    with deploy([digits_plan], keypair_1024) as deployment:
        with deployment.client() as client:
            assert client.predict(np.zeros(64)).shape == (10,)
        deployment.key_server.stop(0)
        with pytest.raises(ServerError) as caught, deployment.client() as client:
            client.predict(np.zeros(64))
        assert caught.value.status == "UNAVAILABLE"
        assert "key server" in caught.value.message and "retry" in caught.value.message
        channel = deployment.channel()  # A itself still answers
        info = model_service_pb2_grpc.ModelServiceStub(channel).GetServerInfo(
            model_service_pb2.ServerInfoRequest(), timeout=10
        )
        channel.close()
        assert info.model.name == "digits-relu"


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


def test_session_precomputation_gives_the_same_answers(small_deployment: Any, digits: Any) -> None:
    """With precompute, A prepares request 1 when the session opens and request k+1
    after answering k: every inference's online half is plaintext arithmetic and B's
    round trips; the answers do not change."""
    inputs = digits.test_x[:5]
    with small_deployment.client() as plain:
        expected = np.array(list(plain.predict_stream(inputs)))
    before = _a_counters(small_deployment)
    with small_deployment.client(precompute=True, max_in_flight=1) as client:
        answers = np.array([client.predict(x) for x in inputs])
    after = _a_counters(small_deployment)
    np.testing.assert_allclose(answers, expected, atol=2e-3)
    used = after.get("precomputed_used", 0) - before.get("precomputed_used", 0)
    prepared = after.get("precomputed", 0) - before.get("precomputed", 0)
    assert used == len(inputs)  # every inference, the first included
    assert prepared == len(inputs) + 1  # one more, for a request that never came
    assert after["precompute_us"] > before.get("precompute_us", 0)


def _a_counters(deployment: Any, model: str = "digits-relu") -> dict[str, int]:
    counters: dict[str, int] = deployment.a_counters(model)
    return counters


@pytest.mark.parametrize("link", LINKS)
def test_session_precomputation_with_a_stage_without_multiplicative_masks(
    keypair_1024: Keypair, link: str
) -> None:
    """Tanh allows no multiplicative mask: the prepared stages are permuted and packed
    only; with two hidden layers, both stages and the output are prepared."""
    split = breast_cancer_split()
    model = train_mlp(split, [12, 8], "tanh")
    plan = compiled(model, split, "breast-cancer-tanh2")
    inputs = split.test_x[:4]
    reference = simulate_batch(Program(plan), inputs)
    with deploy_over(link, [plan], keypair_1024) as deployment:
        with deployment.client(precompute=True, max_in_flight=1) as client:
            answers = np.array([client.predict(x) for x in inputs])
        used = _a_counters(deployment, plan.name).get("precomputed_used", 0)
    np.testing.assert_allclose(answers, reference, atol=2e-3)
    assert used == len(inputs)


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
