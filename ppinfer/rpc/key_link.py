"""Model server A's connection to key server B: a :class:`KeyLink` over gRPC.

Each client session gets its own ``Exchange`` stream, and so does each model's store
filler; calls on it run in lockstep (send, then read until the call's last response).
B's errors come back as
:class:`ppinfer.errors.ServerError` with B's status; an unreachable B as UNAVAILABLE.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator, Sequence

import grpc
from gmpy2 import mpz
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ppinfer.compiler.activations import MaskSpec, StageCall
from ppinfer.encoding.packing import SealCall, SlotLayout
from ppinfer.errors import PPInferError, ServerError
from ppinfer.paillier import PublicKey
from ppinfer.protocol.counters import Counters
from ppinfer.protocol.revision import require_field, require_revision
from ppinfer.rpc.channel_options import CHANNEL_OPTIONS
from ppinfer.rpc.error_status import status_name
from ppinfer.rpc.key_messages import paillier_key_from_msg
from ppinfer.rpc.stage_messages import (
    layout_to_msg,
    signed_from_msg,
    signed_to_msg,
    stage_call_to_msg,
)
from ppinfer.rpc.tensor_messages import ChunkAssembler, chunk_ciphertexts
from ppinfer.rpc.tls import ChannelTls
from ppinfer.v1 import key_service_pb2, key_service_pb2_grpc, tensors_pb2

__all__ = ["KeyServerClient", "unavailable"]

_CLOSE = object()
KEY_SERVICE = "ppinfer.v1.KeyService"
#: Reconnect to B soon after it comes back (ms): grpc's default backoff grows to 120 s.
RECONNECT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 4_000),
]


#: What a client is told beside an unreachable B: A itself stays up.
STAYS_UP = "; the model server is up, retry later"


def unavailable(target: str, error: grpc.RpcError) -> ServerError:
    """The error a client sees when B cannot be reached: A itself stays up."""
    detail = error.details() if hasattr(error, "details") else str(error)
    return ServerError("UNAVAILABLE", f"key server at {target} is unreachable ({detail}){STAYS_UP}")


class KeyServerClient:
    """A's handle on B: the public keys, stats, and one :class:`GrpcKeyLink` per session."""

    def __init__(self, target: str, tls: ChannelTls | None, timeout: float = 30.0) -> None:
        """``tls`` None is plaintext (only with --insecure); otherwise mutual TLS."""
        self.target = target
        self.timeout = timeout
        options = [*CHANNEL_OPTIONS, *RECONNECT_OPTIONS]
        if tls is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(
                target, tls.credentials(), options=[*options, *tls.options()]
            )
        self._stub = key_service_pb2_grpc.KeyServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        #: Serialized bytes and messages each way on every session's Exchange stream.
        self.counters = Counters()

    def _timeout(self, remaining: float | None) -> float:
        """Our own timeout, or less if the caller's deadline is nearer."""
        return self.timeout if remaining is None else max(0.0, min(self.timeout, remaining))

    def serving(self, timeout: float) -> bool:
        """Whether B answers its health check with SERVING within ``timeout`` seconds."""
        try:
            reply = self._health.Check(
                health_pb2.HealthCheckRequest(service=KEY_SERVICE), timeout=timeout
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def public_keys(self) -> tuple[PublicKey, bytes]:
        """B's Paillier public key (checked against its key id) and static X25519 key."""
        try:
            keys = self._stub.GetPublicKeys(
                key_service_pb2.PublicKeysRequest(), timeout=self.timeout
            )
        except grpc.RpcError as error:
            raise unavailable(self.target, error) from error
        require_revision(f"key server at {self.target}", keys.protocol, "model server")
        return paillier_key_from_msg(keys.paillier, "key server's"), bytes(keys.x25519)

    def stats(self, remaining: float | None = None) -> dict[str, int]:
        try:
            reply = self._stub.GetStats(
                tensors_pb2.StatsRequest(), timeout=self._timeout(remaining)
            )
        except grpc.RpcError as error:
            raise unavailable(self.target, error) from error
        return dict(reply.counters)

    def link(self, width: int, key_id: str, remaining: float | None = None) -> GrpcKeyLink:
        """A session's stream, ending at the client's deadline if it set one."""
        return GrpcKeyLink(self._stub, self.target, width, key_id, self.counters, remaining)

    def close(self) -> None:
        self._channel.close()


class GrpcKeyLink:
    """One Exchange stream; implements :class:`ppinfer.protocol.model_evaluator.KeyLink`."""

    def __init__(
        self,
        stub: key_service_pb2_grpc.KeyServiceStub,
        target: str,
        width: int,
        key_id: str,
        counters: Counters | None = None,
        timeout: float | None = None,
    ) -> None:
        self.target = target
        self.width = width
        self.key_id = key_id
        self._counters = counters if counters is not None else Counters()
        self._requests: queue.Queue[object] = queue.Queue()
        self._responses: Iterator[key_service_pb2.KeyResponse] = stub.Exchange(
            iter(self._requests.get, _CLOSE), timeout=timeout
        )
        self._next_call = 0

    def _call(
        self, requests: list[key_service_pb2.KeyRequest]
    ) -> list[key_service_pb2.KeyResponse]:
        call_id = self._next_call
        self._next_call += 1
        for request in requests:
            request.call_id = call_id
            self._requests.put(request)
        self._counters.add(
            messages_sent=len(requests), bytes_sent=sum(r.ByteSize() for r in requests)
        )
        answers = []
        try:
            while True:
                response = next(self._responses)
                self._counters.add(messages_received=1, bytes_received=response.ByteSize())
                if response.call_id != call_id:
                    raise PPInferError(
                        f"key server answered call {response.call_id}, not {call_id}"
                    )
                kind = response.WhichOneof("kind")
                if kind == "error":
                    raise ServerError(status_name(response.error.code), response.error.message)
                answers.append(response)
                if kind != "ciphertexts" or response.ciphertexts.last:
                    return answers
        except grpc.RpcError as error:
            raise unavailable(self.target, error) from error
        except StopIteration as error:
            raise ServerError(
                "UNAVAILABLE", f"key server at {self.target} closed the stream"
            ) from error

    def _ciphertexts(self, responses: list[key_service_pb2.KeyResponse], count: int) -> list[mpz]:
        assembler = ChunkAssembler(self.width, count)
        values = None
        for response in responses:
            values = assembler.add(response.ciphertexts)
        if values is None or len(values) != count:
            raise PPInferError(
                f"key server returned a wrong number of ciphertexts for {count} (an older "
                "key server returns no answer masks: upgrade it)"
            )
        return [mpz(v) for v in values]

    def new_entry(
        self, count: int, mask_bits: int, stages: Sequence[MaskSpec] = ()
    ) -> tuple[str, list[mpz]]:
        request = key_service_pb2.KeyRequest(
            entry=key_service_pb2.NewEntry(
                count=count,
                mask_bits=mask_bits,
                stages=[key_service_pb2.MaskSpec(count=s.count, bits=s.bits) for s in stages],
                key_id=self.key_id,
            )
        )
        responses = self._call([request])
        entry_id = responses[0].entry_id
        require_field(
            bool(entry_id), f"key server at {self.target}", "entry id", "upgrade the key server"
        )
        return entry_id, self._ciphertexts(responses, count + sum(s.count for s in stages))

    def store_share(
        self, entry_id: str, part: int, layout: SlotLayout, count: int, packed: Sequence[int]
    ) -> None:
        requests = [
            key_service_pb2.KeyRequest(
                share=key_service_pb2.ShareRequest(
                    entry_id=entry_id,
                    part=part,
                    layout=layout_to_msg(layout),
                    value_count=count,
                    chunk=chunk,
                )
            )
            for chunk in chunk_ciphertexts(packed, self.width)
        ]
        [response] = self._call(requests)
        if response.WhichOneof("kind") != "stored":
            raise PPInferError("key server did not confirm a share it was sent")

    def derive(self, session_id: str, client_public: bytes) -> tuple[bytes, str]:
        [response] = self._call(
            [
                key_service_pb2.KeyRequest(
                    derive=key_service_pb2.DeriveSession(
                        session_id=session_id, client_x25519=client_public, key_id=self.key_id
                    )
                )
            ]
        )
        derived = response.WhichOneof("kind") == "derived"
        require_field(
            derived and bool(response.derived.salt) and bool(response.derived.instance),
            f"key server at {self.target}", "salt and instance with the session it derived",
            "upgrade the key server",
        )  # fmt: skip
        return bytes(response.derived.salt), response.derived.instance

    def bind(self, session_id: str, entry_id: str, request_id: int) -> bytes:
        message = key_service_pb2.BindEntry(
            session_id=session_id, entry_id=entry_id, request_id=request_id
        )
        [response] = self._call([key_service_pb2.KeyRequest(bind=message)])
        return bytes(response.ticket)

    def activate(
        self,
        session_id: str,
        request_id: int,
        stage_index: int,
        call: StageCall,
        values: Sequence[int],
    ) -> list[int]:
        batch = stage_call_to_msg(session_id, request_id, call, None, stage_index)
        batch.values.CopyFrom(signed_to_msg(list(values)))
        responses = self._call([key_service_pb2.KeyRequest(activation=batch)])
        if len(responses) != 1 or responses[0].WhichOneof("kind") != "values":
            raise PPInferError(
                "key server answered a stage with ciphertexts, not masked values: it runs an "
                "older protocol than this model server; upgrade it"
            )
        return signed_from_msg(responses[0].values, call.results)

    def seal(
        self,
        session_id: str,
        request_id: int,
        call: SealCall,
        values: Sequence[int],
        bind_next: tuple[str, int] | None = None,
    ) -> tuple[bytes, bytes]:
        sealing = key_service_pb2.SealRequest(
            session_id=session_id,
            request_id=request_id,
            layout=layout_to_msg(call.layout),
            value_count=call.count,
            value_bytes=call.value_bytes,
            values=signed_to_msg(list(values)),
            shift=call.shift,
            modulus_bits=call.modulus_bits,
        )
        if bind_next is not None:
            entry_id, next_id = bind_next
            sealing.bind_next.CopyFrom(
                key_service_pb2.BindEntry(
                    session_id=session_id, entry_id=entry_id, request_id=next_id
                )
            )
        [response] = self._call([key_service_pb2.KeyRequest(seal=sealing)])
        return bytes(response.sealed), bytes(response.ticket)

    def end(self, session_id: str) -> None:
        self._requests.put(
            key_service_pb2.KeyRequest(
                call_id=self._next_call, end=key_service_pb2.EndSession(session_id=session_id)
            )
        )
        self._next_call += 1

    def close(self) -> None:
        self._requests.put(_CLOSE)
        cancel = getattr(self._responses, "cancel", None)
        if cancel is not None:
            cancel()
