"""Fuzzing both servers' request handlers over real TLS sockets (hypothesis).

Malformed, random and oversized messages, alone and after a valid opening, must end with
one of the documented status codes, promptly (a deadline would catch a hang), never an
internal error; meanwhile an honest client's inferences on the same servers all come back
right. The default run is derandomized (the same examples each time, so CI is stable);
``-m slow`` runs many more, freshly random.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from deployment import Deployment, deploy, dev_certificates, model_server_tls
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppinfer.compiler.plan import Plan
from ppinfer.paillier import PrivateKey, PublicKey
from ppinfer.protocol.revision import PROTOCOL_REVISION
from ppinfer.rpc.channel_options import MAX_MESSAGE_BYTES
from ppinfer.rpc.dev_certificates import CA_FILE
from ppinfer.v1 import key_service_pb2, model_service_pb2, tensors_pb2

#: What a server may answer to bad input (docs/PROTOCOL.md, section 10).
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
DOCUMENTED_CODES = {code.value[0] for code in DOCUMENTED}
CALL_SECONDS = 60.0  # far beyond any honest answer here: reaching it means a hang

Keypair = tuple[PublicKey, PrivateKey]
FAST = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MANY = settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
names = st.sampled_from(["", "digits-relu", "nope", "relu", "sigmoid", "x" * 300])


def chunks() -> st.SearchStrategy[tensors_pb2.CiphertextChunk]:
    return st.builds(
        tensors_pb2.CiphertextChunk,
        seq=st.one_of(st.just(0), u32),
        last=st.booleans(),
        count=st.one_of(st.integers(0, 4), u32),
        width=st.one_of(st.sampled_from([0, 1, 128, 256, 512]), u32),
        data=st.binary(max_size=1100),
    )


def layouts() -> st.SearchStrategy[tensors_pb2.SlotLayout]:
    small = st.integers(0, 300)
    return st.builds(
        tensors_pb2.SlotLayout,
        value_bits=st.one_of(small, u32),
        slot_bits=st.one_of(small, u32),
        slots=st.one_of(small, u32),
    )


def client_messages() -> st.SearchStrategy[model_service_pb2.ClientMessage]:
    tensors = st.one_of(
        st.builds(
            tensors_pb2.Int64Tensor,
            shape=st.lists(st.one_of(st.integers(0, 70), u32), max_size=4),
            data=st.binary(max_size=700),
        ),
        st.builds(  # the right shape, random values: range checks
            lambda data: tensors_pb2.Int64Tensor(shape=[64], data=data),
            st.binary(min_size=512, max_size=512),
        ),
    )
    paillier = st.builds(
        tensors_pb2.PaillierPublicKey,
        bits=st.one_of(st.integers(0, 9000), u32),
        n=st.binary(max_size=300),
        key_id=st.text(max_size=70),
    )
    opening = st.builds(
        model_service_pb2.OpenSession,
        model=names,
        client_x25519=st.binary(max_size=40),
        expected_key_id=st.one_of(st.just(""), st.text(max_size=70)),
        progress=st.booleans(),
        protocol=st.one_of(st.just(PROTOCOL_REVISION), u32),
    )
    aided_opening = st.builds(
        lambda open_, key: _with(open_, "client_paillier", key), opening, paillier
    )
    infer = st.builds(
        model_service_pb2.InferRequest,
        request_id=st.one_of(st.integers(0, 3), u64),
        masked_input=st.one_of(st.none(), tensors),
        encrypted_input=st.one_of(st.none(), chunks()),
    )
    reply = st.builds(
        model_service_pb2.ActivationReply, request_id=st.one_of(st.integers(0, 3), u64),
        chunk=chunks(),
    )  # fmt: skip
    return st.one_of(
        st.builds(lambda m: model_service_pb2.ClientMessage(open=m), st.one_of(opening,
                                                                               aided_opening)),
        st.builds(lambda m: model_service_pb2.ClientMessage(infer=m), infer),
        st.builds(lambda m: model_service_pb2.ClientMessage(activated=m), reply),
        st.just(model_service_pb2.ClientMessage(close=model_service_pb2.CloseSession())),
        st.just(model_service_pb2.ClientMessage()),
    )  # fmt: skip


def _with(message: Any, field: str, value: Any) -> Any:
    getattr(message, field).CopyFrom(value)
    return message


def _valid_open() -> model_service_pb2.ClientMessage:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from ppinfer.protocol.session_keys import public_bytes

    key = public_bytes(X25519PrivateKey.generate().public_key())
    return model_service_pb2.ClientMessage(
        open=model_service_pb2.OpenSession(
            model="digits-relu", client_x25519=key, protocol=PROTOCOL_REVISION
        )
    )


def session_sequences() -> st.SearchStrategy[list[model_service_pb2.ClientMessage]]:
    tails = st.lists(client_messages(), max_size=5)
    return st.one_of(
        tails,
        st.builds(lambda tail: [_valid_open(), *tail], tails),
    )


class HonestClient:
    """Inferences in a loop beside the fuzzing; every answer is checked at the end."""

    def __init__(self, deployment: Deployment, x: np.ndarray, expected: np.ndarray) -> None:
        self.results: list[np.ndarray] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(deployment, x), daemon=True)
        self.expected = expected
        self._thread.start()

    def _run(self, deployment: Deployment, x: np.ndarray) -> None:
        try:
            with deployment.client() as client:
                while not self._stop.is_set():
                    self.results.append(client.predict(x))
        except BaseException as error:
            self.errors.append(error)

    def check(self) -> None:
        self._stop.set()
        self._thread.join(120)
        assert not self.errors, self.errors
        assert self.results, "the honest client ran no inference"
        for logits in self.results:
            np.testing.assert_allclose(logits, self.expected, atol=2e-3)


@pytest.fixture(scope="module")
def fuzzed(keypair_512: Keypair, digits_plan: Plan) -> Iterator[tuple[Deployment, HonestClient]]:
    x = np.full(64, 0.25)
    with deploy([digits_plan], keypair_512) as deployment:
        with deployment.client() as client:
            expected = client.predict(x)
        honest = HonestClient(deployment, x, expected)
        yield deployment, honest
        honest.check()


def _session_call(deployment: Deployment, messages: list[Any], raw: bool = False) -> Any:
    channel = deployment.channel()
    try:
        method = channel.stream_stream(
            "/ppinfer.v1.ModelService/Session",
            request_serializer=None if raw else model_service_pb2.ClientMessage.SerializeToString,
            response_deserializer=model_service_pb2.ServerMessage.FromString,
        )
        try:
            for _ in method(iter(messages), timeout=CALL_SECONDS):
                pass
        except grpc.RpcError as error:
            return error
        return None
    finally:
        channel.close()


def _check_model_server(deployment: Deployment, messages: list[Any]) -> None:
    error = _session_call(deployment, messages)
    if error is not None:
        assert error.code() in DOCUMENTED, (error.code(), error.details(), messages)
        assert "internal" not in (error.details() or "").lower()


@FAST
@given(messages=session_sequences())
def test_model_server_session_fuzz(
    fuzzed: tuple[Deployment, HonestClient], messages: list[Any]
) -> None:
    _check_model_server(fuzzed[0], messages)


@pytest.mark.slow
@MANY
@given(messages=session_sequences())
def test_model_server_session_fuzz_many(
    fuzzed: tuple[Deployment, HonestClient], messages: list[Any]
) -> None:
    _check_model_server(fuzzed[0], messages)


@FAST
@given(data=st.lists(st.binary(max_size=300), min_size=1, max_size=3))
def test_model_server_survives_bytes_that_are_not_protobuf(
    fuzzed: tuple[Deployment, HonestClient], data: list[bytes]
) -> None:
    error = _session_call(fuzzed[0], data, raw=True)
    if error is not None:
        # Bytes grpc cannot parse as a ClientMessage are refused by grpc itself, before
        # any ppinfer code runs: INTERNAL "Exception deserializing request!".
        assert error.code() in DOCUMENTED or "deserializ" in (error.details() or "")


def test_oversized_messages_are_refused(fuzzed: tuple[Deployment, HonestClient]) -> None:
    deployment = fuzzed[0]
    huge = model_service_pb2.ClientMessage(
        infer=model_service_pb2.InferRequest(
            request_id=1,
            masked_input=tensors_pb2.Int64Tensor(shape=[64], data=b"\0" * (MAX_MESSAGE_BYTES + 1)),
        )
    )
    error = _session_call(deployment, [_valid_open(), huge])
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with deployment.client() as client:  # A still serves
        assert client.predict(np.zeros(64)).shape == (10,)


# --- key server B: only A's certificate gets this far; A's bugs must not crash B ---------


def key_requests(key_id: str) -> st.SearchStrategy[key_service_pb2.KeyRequest]:
    sessions = st.one_of(st.just("s1"), st.text(max_size=140))
    request_ids = st.one_of(st.integers(0, 3), u64)
    functions = st.lists(
        st.builds(
            key_service_pb2.Function,
            name=st.sampled_from(["relu", "sigmoid", "leaky_relu", "hardtanh", "nope", ""]),
            parameters=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3),
        ),
        max_size=3,
    )
    derive = st.builds(
        key_service_pb2.DeriveSession,
        session_id=sessions,
        client_x25519=st.binary(max_size=40),
        key_id=st.sampled_from(["", key_id, "0" * 64]),
    )
    entry_ids = st.one_of(st.just(""), st.text(max_size=80))
    entry = st.builds(
        key_service_pb2.NewEntry,
        count=st.one_of(st.integers(0, 70), u32),
        mask_bits=st.one_of(st.integers(0, 100), u32),
        stages=st.lists(
            st.builds(
                key_service_pb2.MaskSpec,
                count=st.one_of(st.integers(0, 70), u32),
                bits=st.one_of(st.integers(0, 200), u32),
            ),
            max_size=3,
        ),
        key_id=st.sampled_from(["", key_id, "0" * 64]),
    )
    share = st.builds(
        key_service_pb2.ShareRequest,
        entry_id=entry_ids,
        part=st.one_of(st.integers(0, 4), u32),
        layout=layouts(),
        value_count=st.one_of(st.integers(0, 70), u32),
        chunk=chunks(),
    )
    bind = st.builds(
        key_service_pb2.BindEntry,
        session_id=sessions,
        entry_id=entry_ids,
        request_id=request_ids,
    )
    vectors = st.builds(
        tensors_pb2.BigIntVector,
        width=st.one_of(st.integers(0, 80), u32),
        data=st.binary(max_size=600),
    )
    activation = st.builds(
        key_service_pb2.ActivationBatch,
        session_id=sessions,
        request_id=request_ids,
        layout=layouts(),
        value_count=st.one_of(st.integers(0, 70), u32),
        in_frac_bits=st.one_of(st.integers(0, 64), u32),
        out_frac_bits=st.one_of(st.integers(0, 64), u32),
        chunk=chunks(),
        functions=functions,
        window=st.one_of(st.integers(0, 8), u32),
        after=functions,
        stage_index=st.one_of(st.integers(0, 3), u32),
        values=vectors,
    )
    seal = st.builds(
        key_service_pb2.SealRequest,
        session_id=sessions,
        request_id=request_ids,
        layout=layouts(),
        value_count=st.one_of(st.integers(0, 70), u32),
        value_bytes=st.one_of(st.integers(0, 64), u32),
        values=vectors,
        bind_next=bind,
        shift=st.one_of(st.integers(0, 120), u32),
        modulus_bits=st.one_of(st.integers(0, 520), u32),
    )
    end = st.builds(key_service_pb2.EndSession, session_id=sessions)
    call_ids = st.integers(0, 5)
    return st.one_of(
        st.builds(lambda c, m: key_service_pb2.KeyRequest(call_id=c, derive=m), call_ids, derive),
        st.builds(lambda c, m: key_service_pb2.KeyRequest(call_id=c, entry=m), call_ids, entry),
        st.builds(lambda c, m: key_service_pb2.KeyRequest(call_id=c, share=m), call_ids, share),
        st.builds(lambda c, m: key_service_pb2.KeyRequest(call_id=c, bind=m), call_ids, bind),
        st.builds(
            lambda c, m: key_service_pb2.KeyRequest(call_id=c, activation=m), call_ids, activation
        ),
        st.builds(lambda c, m: key_service_pb2.KeyRequest(call_id=c, seal=m), call_ids, seal),
        st.builds(lambda c, m: key_service_pb2.KeyRequest(call_id=c, end=m), call_ids, end),
        st.just(key_service_pb2.KeyRequest()),
    )


def _valid_derive(key_id: str) -> key_service_pb2.KeyRequest:
    opening = _valid_open().open
    return key_service_pb2.KeyRequest(
        derive=key_service_pb2.DeriveSession(
            session_id="s1", client_x25519=opening.client_x25519, key_id=key_id
        )
    )


def _key_channel(deployment: Deployment) -> grpc.Channel:
    certs = dev_certificates()
    _, to_key_server = model_server_tls()
    assert (certs / CA_FILE).exists()
    return grpc.secure_channel(
        deployment.key_address, to_key_server.credentials(), options=to_key_server.options()
    )


def _check_key_server(deployment: Deployment, requests: list[Any]) -> None:
    with _key_channel(deployment) as channel:
        exchange = channel.stream_stream(
            "/ppinfer.v1.KeyService/Exchange",
            request_serializer=key_service_pb2.KeyRequest.SerializeToString,
            response_deserializer=key_service_pb2.KeyResponse.FromString,
        )
        try:
            for response in exchange(iter(requests), timeout=CALL_SECONDS):
                if response.WhichOneof("kind") == "error":
                    assert response.error.code in DOCUMENTED_CODES, (response.error, requests)
                    assert "internal" not in response.error.message.lower()
        except grpc.RpcError as error:
            assert error.code() in DOCUMENTED, (error.code(), error.details(), requests)


def _fuzz_key_server(deployment: Deployment, data: st.DataObject, always_derive: bool) -> None:
    key_id = deployment.key_core.key_id
    tail = data.draw(st.lists(key_requests(key_id), max_size=6))
    start = always_derive or data.draw(st.booleans())
    _check_key_server(deployment, [_valid_derive(key_id), *tail] if start else tail)


@FAST
@given(data=st.data())
def test_key_server_exchange_fuzz(
    fuzzed: tuple[Deployment, HonestClient], data: st.DataObject
) -> None:
    _fuzz_key_server(fuzzed[0], data, always_derive=False)


@pytest.mark.slow
@MANY
@given(data=st.data())
def test_key_server_exchange_fuzz_many(
    fuzzed: tuple[Deployment, HonestClient], data: st.DataObject
) -> None:
    _fuzz_key_server(fuzzed[0], data, always_derive=True)
