"""What only the wire shows: a lying or outdated server, raw and malformed messages,
statuses, the admin-only stats, B down. Over gRPC with TLS on localhost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from deployment import deploy
from raw_session import RawSession

from ppinfer.errors import (
    KeyMismatchError,
    PPInferError,
    ProtocolRevisionError,
    ServerError,
)
from ppinfer.paillier import PrivateKey, PublicKey
from ppinfer.protocol.revision import PROTOCOL_REVISION
from ppinfer.protocol.session_keys import key_server_fingerprint, public_bytes, seed_mask
from ppinfer.rpc.client_transport import StreamTransport
from ppinfer.v1 import model_service_pb2, model_service_pb2_grpc, tensors_pb2

Keypair = tuple[PublicKey, PrivateKey]


@pytest.fixture(scope="module")
def grpc_deployment(keypair_1024: Keypair, digits_plan: Any) -> Any:
    """For what only the wire shows: raw messages, statuses, the admin listener, B down."""
    with deploy([digits_plan], keypair_1024) as deployment:
        yield deployment


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
    for variant in (1, 2):  # each failure ends its session: one session each
        with RawSession(grpc_deployment.address, grpc_deployment.tls) as raw:
            model = raw.opened.model
            r = seed_mask(raw.seed(1), 64, model.mask_bits)
            # u within what A can check, x^ = u - r past the declared 2^value_bits: just
            # past it on every other value, or by up to 2^mask_bits on all of them
            pushed = np.full(64, 2**model.mask_bits - 1, dtype=np.int64)
            if variant == 1:
                pushed[::2] = r[::2] + 2**model.input_format.value_bits
            raw.send_masked(1, pushed)
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
        raw.predict(1, np.zeros(64))  # a buggy client reusing its ticket and mask
        with pytest.raises(ServerError) as caught:
            raw.predict(1, np.ones(64) / 2)
    assert caught.value.status == "ALREADY_EXISTS"
    assert "reveal the difference" in caught.value.message


def test_a_request_without_a_ticket_is_refused(grpc_deployment: Any) -> None:
    with RawSession(grpc_deployment.address, grpc_deployment.tls) as raw:
        raw.send_masked(7, raw.mask(1, np.zeros(64)))  # a request id it holds no ticket for
        with pytest.raises(ServerError) as caught:
            raw.receive()
    assert caught.value.status == "FAILED_PRECONDITION"
    assert "no ticket" in caught.value.message


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
