"""The client-aided baseline end to end over real gRPC: the client's own Paillier key,
the same model server and plans, the same exact predictions as the two-server mode."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from deployment import compiled, deploy, float_logits
from raw_session import RawSession

from ppinfer.errors import ModeDisabledError, ServerError
from ppinfer.example_models import breast_cancer_split, train_mlp
from ppinfer.paillier import PrivateKey, PublicKey, generate_keypair
from ppinfer.protocol.client_session import describe
from ppinfer.protocol.session_messages import ServerOffer
from ppinfer.rpc.aided_client import AidedClient
from ppinfer.v1 import model_service_pb2, model_service_pb2_grpc, tensors_pb2

Keypair = tuple[PublicKey, PrivateKey]


def test_digits_relu_agrees_with_the_float_model_and_the_two_server_mode_at_2048_bits(
    keypair_2048: Keypair, digits: Any, digits_relu_model: Any, digits_plan: Any
) -> None:
    inputs = digits.test_x[:12]
    reference = float_logits(digits_relu_model, inputs)
    client_keys = generate_keypair(2048)
    with deploy([digits_plan], keypair_2048, allow_client_aided=True) as deployment:
        with deployment.aided(keypair=client_keys) as aided:
            baseline = np.array(list(aided.predict_stream(inputs)))
            aided_stats = aided.stats
        with deployment.client() as client:
            two_server = np.array(list(client.predict_stream(inputs)))
            stats, held = client.stats, client.max_in_flight
        with deployment.admin_channel() as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            counters = stub.GetStats(tensors_pb2.StatsRequest()).counters
    assert np.array_equal(baseline.argmax(axis=1), reference.argmax(axis=1))
    assert float(np.max(np.abs(baseline - reference))) < 0.01
    # The same plan in both modes; only the rounding under fresh random masks differs.
    assert np.array_equal(baseline.argmax(axis=1), two_server.argmax(axis=1))
    assert float(np.max(np.abs(baseline - two_server))) < 0.01
    # The baseline's client sends one 512-byte ciphertext per input value at least.
    assert aided_stats.bytes_up >= len(inputs) * 64 * 512
    assert aided_stats.bytes_up > 30 * stats.bytes_up
    assert counters["model_server.digits-relu.aided.inferences"] == len(inputs)
    assert counters["model_server.digits-relu.aided.step1.rounds"] == len(inputs)
    # each two-server request took an entry from the store or, on a miss, made its own;
    # the session also held tickets (one entry each) for max_in_flight requests ahead
    store = {k.rsplit(".", 1)[1]: v for k, v in counters.items() if ".store." in k}
    assert store["taken"] + store["missed"] == len(inputs) + held


def test_breast_cancer_tanh_agrees(keypair_512: Keypair) -> None:
    """The whole test split, under a 1024-bit client key (2048 bits: the digits test)."""
    split = breast_cancer_split()
    model = train_mlp(split, [16], "tanh")
    plan = compiled(model, split, "breast-cancer-tanh")
    reference = float_logits(model, split.test_x)
    with (
        deploy([plan], keypair_512, allow_client_aided=True) as deployment,
        deployment.aided(key_bits=1024) as aided,
    ):
        baseline = np.array(list(aided.predict_stream(split.test_x)))
    assert np.array_equal(baseline.argmax(axis=1), reference.argmax(axis=1))
    assert float(np.max(np.abs(baseline - reference))) < 0.01


@pytest.fixture(scope="module")
def small_deployment(keypair_512: Keypair, digits_plan: Any) -> Any:
    with deploy([digits_plan], keypair_512, allow_client_aided=True) as deployment:
        yield deployment


def test_a_key_too_small_for_the_plan_is_refused_clearly(small_deployment: Any) -> None:
    with (
        pytest.raises(ServerError) as caught,
        small_deployment.aided(key_bits=128) as aided,
    ):
        aided.predict(np.zeros(64))
    assert caught.value.status in {"INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE"}
    assert "bits" in caught.value.message


def test_a_key_with_a_wrong_id_is_refused(small_deployment: Any) -> None:
    class Forged(AidedClient):
        def open_message(self, offer: ServerOffer) -> model_service_pb2.OpenSession:
            message = super().open_message(offer)
            message.client_paillier.key_id = "0" * 64
            return message

    with (
        pytest.raises(ServerError) as caught,
        Forged(small_deployment.address, key_bits=1024, tls=small_deployment.tls) as aided,
    ):
        aided.predict(np.zeros(64))
    assert "stated size or id" in caught.value.message


def test_garbage_ciphertexts_and_pipelining_get_statuses_not_crashes(
    small_deployment: Any,
) -> None:
    aided: AidedClient = small_deployment.aided(key_bits=1024)

    def own_key(offer: ServerOffer, message: Any) -> model_service_pb2.OpenSession:
        aided.model = describe(offer, None)  # what infer_message encodes against
        return aided.open_message(offer)

    with RawSession(small_deployment.address, small_deployment.tls, own_key) as raw:
        width = aided.public.ciphertext_bytes
        zero = tensors_pb2.CiphertextChunk(seq=0, last=True, count=64, width=width)
        zero.data = b"\0" * (64 * width)  # 0 is no ciphertext
        raw.send(
            model_service_pb2.ClientMessage(
                infer=model_service_pb2.InferRequest(request_id=5, encrypted_input=zero)
            )
        )
        with pytest.raises(ServerError) as caught:
            raw.receive()
        assert caught.value.status == "INVALID_ARGUMENT"
        assert "outside [1, n^2)" in caught.value.message
    with RawSession(small_deployment.address, small_deployment.tls, own_key) as raw:
        raw.send(aided.infer_message(1, np.zeros(64)))
        raw.send(aided.infer_message(2, np.zeros(64)))  # before the first one's stage
        with pytest.raises(ServerError) as caught:
            while True:
                raw.receive()
        assert "one inference at a time" in caught.value.message
    with small_deployment.aided(key_bits=1024) as aided:  # still serving
        assert aided.predict(np.zeros(64)).shape == (10,)


def test_replies_outside_the_ciphertext_range_are_refused(small_deployment: Any) -> None:
    """Finding 7: A range-checked B's ciphertexts but not a client-aided client's replies."""

    class Zeros(AidedClient):
        def _send(self, message: model_service_pb2.ClientMessage) -> None:
            if message.WhichOneof("kind") == "activated":
                chunk = message.activated.chunk
                chunk.data = b"\0" * len(chunk.data)
            super()._send(message)

    with (
        pytest.raises(ServerError) as caught,
        Zeros(small_deployment.address, key_bits=1024, tls=small_deployment.tls) as aided,
    ):
        aided.predict(np.zeros(64))
    assert caught.value.status == "INVALID_ARGUMENT"
    assert "outside [1, n^2)" in caught.value.message


def test_client_aided_sessions_are_off_unless_the_operator_enables_them(
    keypair_512: Keypair, digits_plan: Any
) -> None:
    """Finding 1: the mode trusts the client's key (a modulus n = p q with p | q - 1 reads
    weights through a subgroup A's re-randomizer cannot reach), so a default A refuses it,
    says so in ServerInfo, and refuses an open that asks for it anyway."""
    with deploy([digits_plan], keypair_512) as deployment:
        with deployment.channel() as channel:
            info = model_service_pb2_grpc.ModelServiceStub(channel).GetServerInfo(
                model_service_pb2.ServerInfoRequest(), timeout=30
            )
        assert info.client_aided == model_service_pb2.CLIENT_AIDED_DISABLED
        with (
            pytest.raises(ModeDisabledError, match="--allow-client-aided"),
            deployment.aided(key_bits=1024) as aided,
        ):
            aided.predict(np.zeros(64))

        insistent = deployment.aided(key_bits=1024)  # opens anyway, whatever ServerInfo says
        with (
            pytest.raises(ServerError) as caught,
            RawSession(
                deployment.address, deployment.tls,
                lambda offer, message: insistent.open_message(offer),
            ),
        ):  # fmt: skip
            pass
    assert caught.value.status == "FAILED_PRECONDITION"
    assert "--allow-client-aided" in caught.value.message
