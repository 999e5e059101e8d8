"""Key server B over gRPC: a thin adapter around :class:`KeyServerCore`.

One ``Exchange`` stream per model-server session. Calls on it are answered in order and
matched by ``call_id``; a failed call answers with an ``Error`` and the stream goes on.
Sessions belong to the stream that derived them and end with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc

from ppinfer.codec import ChunkAssembler, chunk_ciphertexts
from ppinfer.errors import LimitExceededError, PPInferError, UnknownSessionError
from ppinfer.packing import SealCall
from ppinfer.paillier.stage import MAX_VALUES_PER_CALL
from ppinfer.servers.grpc_server import create_server
from ppinfer.servers.key_core import KeyServerCore
from ppinfer.servers.status import log, status_code
from ppinfer.servers.wire import layout_from_message, stage_call
from ppinfer.v1 import key_service_pb2, key_service_pb2_grpc, tensors_pb2

__all__ = ["KeyServicer", "create_key_server"]

#: Calls whose chunks are still arriving, per stream.
MAX_PENDING_CALLS = 64


def _error(call_id: int, error: BaseException) -> key_service_pb2.KeyResponse:
    if isinstance(error, PPInferError):
        code, message = status_code(error.status), str(error)
    else:
        log.exception("unexpected error on the key server", exc_info=error)
        code, message = grpc.StatusCode.INTERNAL, "key server internal error; see its log"
    return key_service_pb2.KeyResponse(
        call_id=call_id, error=key_service_pb2.Error(code=code.value[0], message=message)
    )


class _Stream:
    """The state of one Exchange stream: its sessions and its partly received calls."""

    def __init__(self, core: KeyServerCore) -> None:
        self.core = core
        self.width = core.public.ciphertext_bytes
        self.sessions: set[str] = set()
        self.pending: dict[int, ChunkAssembler] = {}

    def own(self, session_id: str) -> str:
        if session_id not in self.sessions:
            raise UnknownSessionError(f"no session {session_id!r} on this stream")
        return session_id

    def assemble(self, call_id: int, chunk: tensors_pb2.CiphertextChunk) -> list[int] | None:
        assembler = self.pending.get(call_id)
        if assembler is None:
            if len(self.pending) >= MAX_PENDING_CALLS:
                raise LimitExceededError(f"more than {MAX_PENDING_CALLS} calls half-sent")
            assembler = self.pending[call_id] = ChunkAssembler(self.width, MAX_VALUES_PER_CALL)
        values = assembler.add(chunk)
        if values is not None:
            del self.pending[call_id]
        return values

    def handle(self, request: key_service_pb2.KeyRequest) -> list[key_service_pb2.KeyResponse]:
        call_id, kind = request.call_id, request.WhichOneof("kind")
        core = self.core
        if kind == "derive":
            core.derive(request.derive.session_id, request.derive.client_x25519)
            self.sessions.add(request.derive.session_id)
            derived = key_service_pb2.SessionDerived(session_id=request.derive.session_id)
            return [key_service_pb2.KeyResponse(call_id=call_id, derived=derived)]
        if kind == "mask":
            mask = request.mask
            ciphertexts = core.masks(
                self.own(mask.session_id), mask.request_id, mask.count, mask.mask_bits
            )
            return self._ciphertexts(call_id, ciphertexts)
        if kind == "activation":
            batch = request.activation
            self.own(batch.session_id)
            packed = self.assemble(call_id, batch.chunk)
            if packed is None:
                return []
            results = core.activate(batch.session_id, batch.request_id, stage_call(batch), packed)
            return self._ciphertexts(call_id, results)
        if kind == "seal":
            sealing = request.seal
            self.own(sealing.session_id)
            packed = self.assemble(call_id, sealing.chunk)
            if packed is None:
                return []
            call = SealCall(
                layout_from_message(sealing.layout), sealing.value_count, sealing.value_bytes
            )
            sealed = core.seal(sealing.session_id, sealing.request_id, call, packed)
            return [key_service_pb2.KeyResponse(call_id=call_id, sealed=sealed)]
        if kind == "end":
            core.end(self.own(request.end.session_id))
            self.sessions.discard(request.end.session_id)
            return []
        raise PPInferError("empty key request: set one of derive, mask, activation, seal, end")

    def _ciphertexts(self, call_id: int, values: list[int]) -> list[key_service_pb2.KeyResponse]:
        return [
            key_service_pb2.KeyResponse(call_id=call_id, ciphertexts=chunk)
            for chunk in chunk_ciphertexts(values, self.width)
        ]

    def close(self) -> None:
        for session_id in self.sessions:
            self.core.end(session_id)


class KeyServicer(key_service_pb2_grpc.KeyServiceServicer):
    def __init__(self, core: KeyServerCore) -> None:
        self.core = core

    def GetPublicKeys(
        self, request: key_service_pb2.PublicKeysRequest, context: grpc.ServicerContext
    ) -> key_service_pb2.PublicKeys:
        public = self.core.public
        return key_service_pb2.PublicKeys(
            paillier=tensors_pb2.PaillierPublicKey(
                bits=public.bits,
                n=int(public.n).to_bytes((public.bits + 7) // 8, "big"),
                key_id=public.key_id,
            ),
            x25519=self.core.x25519_public,
        )

    def GetStats(
        self, request: tensors_pb2.StatsRequest, context: grpc.ServicerContext
    ) -> tensors_pb2.Stats:
        return tensors_pb2.Stats(counters=self.core.stats())

    def Exchange(
        self, request_iterator: Iterable[key_service_pb2.KeyRequest], context: grpc.ServicerContext
    ) -> Iterator[key_service_pb2.KeyResponse]:
        stream = _Stream(self.core)
        try:
            for request in request_iterator:
                try:
                    responses = stream.handle(request)
                except Exception as error:  # one failed call never ends the stream
                    stream.pending.pop(request.call_id, None)
                    responses = [_error(request.call_id, error)]
                yield from responses
        finally:
            stream.close()


def create_key_server(
    core: KeyServerCore, listen: str = "127.0.0.1:0", max_workers: int = 64
) -> tuple[grpc.Server, int]:
    """A key server (not yet started) bound to ``listen``; returns it and its port."""
    return create_server(
        lambda server: key_service_pb2_grpc.add_KeyServiceServicer_to_server(
            KeyServicer(core), server
        ),
        "ppinfer.v1.KeyService",
        listen,
        max_workers,
    )
