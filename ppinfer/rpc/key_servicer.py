"""Key server B over gRPC: a thin adapter around :class:`KeyServerCore`.

One ``Exchange`` stream per model-server session, and one per model that A's store fills.
Calls on it are answered in order and matched by ``call_id``; a failed call answers with
an ``Error`` and the stream goes on. Sessions belong to the stream that derived them and
end with it; so do the request entries a stream made and did not bind.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator

import grpc

from ppinfer.compiler.activations import MaskSpec
from ppinfer.encoding.packing import SealCall
from ppinfer.errors import (
    KeyMismatchError,
    LimitExceededError,
    PPInferError,
    ProtocolOrderError,
    UnknownSessionError,
)
from ppinfer.protocol.key_core import KeyServerCore
from ppinfer.protocol.revision import PROTOCOL_REVISION
from ppinfer.protocol.stage_answer import MAX_VALUES_PER_CALL
from ppinfer.rpc.error_status import log, status_code
from ppinfer.rpc.key_messages import paillier_key_to_msg
from ppinfer.rpc.server_factory import Listening, create_server
from ppinfer.rpc.stage_messages import (
    layout_from_msg,
    signed_from_msg,
    signed_to_msg,
    stage_call_from_msg,
)
from ppinfer.rpc.tensor_messages import ChunkAssembler, chunk_ciphertexts
from ppinfer.rpc.tls import ServerTls
from ppinfer.v1 import key_service_pb2, key_service_pb2_grpc, tensors_pb2

__all__ = ["KeyRing", "KeyServicer", "create_key_server"]

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
    """The state of one Exchange stream: the key its first derive chose, its sessions, and
    its partly received calls."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys
        self._core: KeyServerCore | None = None
        self.sessions: set[str] = set()
        self.pending: dict[int, ChunkAssembler] = {}

    @property
    def core(self) -> KeyServerCore:
        if self._core is None:
            raise ProtocolOrderError("a key server stream starts with derive or entry")
        return self._core

    def _attach(self, key_id: str) -> KeyServerCore:
        """The stream's key: chosen by its first call, the same for all of them."""
        if self._core is None:
            self._core = self.keys.attach(key_id)
        elif key_id and key_id != self._core.key_id:
            raise KeyMismatchError("one key server stream uses one key")
        return self._core

    @property
    def width(self) -> int:
        return self.core.public.ciphertext_bytes

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
        if kind == "derive":
            core = self._attach(request.derive.key_id)
            salt, instance = core.derive(request.derive.session_id, request.derive.client_x25519)
            self.sessions.add(request.derive.session_id)
            derived = key_service_pb2.SessionDerived(
                session_id=request.derive.session_id, salt=salt, instance=instance
            )
            return [key_service_pb2.KeyResponse(call_id=call_id, derived=derived)]
        if kind == "entry":
            entry = request.entry
            core = self._attach(entry.key_id)
            stages = [MaskSpec(spec.count, spec.bits) for spec in entry.stages]
            entry_id, ciphertexts = core.new_entry(self, entry.count, entry.mask_bits, stages)
            responses = self._ciphertexts(call_id, ciphertexts)
            for response in responses:
                response.entry_id = entry_id
            return responses
        core = self.core
        if kind == "share":
            share = request.share
            packed = self.assemble(call_id, share.chunk)
            if packed is None:
                return []
            layout = layout_from_msg(share.layout)
            core.store_share(share.entry_id, share.part, layout, share.value_count, packed)
            return [key_service_pb2.KeyResponse(call_id=call_id, stored=True)]
        if kind == "bind":
            bind = request.bind
            ticket = core.bind(self.own(bind.session_id), bind.entry_id, bind.request_id)
            return [key_service_pb2.KeyResponse(call_id=call_id, ticket=ticket)]
        if kind == "activation":
            batch = request.activation
            call = stage_call_from_msg(batch)
            values = signed_from_msg(batch.values, call.count)
            results = core.activate(
                self.own(batch.session_id), batch.request_id, batch.stage_index, call, values
            )
            return [key_service_pb2.KeyResponse(call_id=call_id, values=signed_to_msg(results))]
        if kind == "seal":
            sealing = request.seal
            seal_call = SealCall(
                layout_from_msg(sealing.layout),
                sealing.value_count,
                sealing.value_bytes,
                sealing.shift,
                sealing.modulus_bits,
            )
            values = signed_from_msg(sealing.values, seal_call.count)
            sealed = core.seal(self.own(sealing.session_id), sealing.request_id, seal_call, values)
            ticket = b""
            if sealing.HasField("bind_next"):
                bind = sealing.bind_next
                ticket = core.bind(self.own(bind.session_id), bind.entry_id, bind.request_id)
            return [key_service_pb2.KeyResponse(call_id=call_id, sealed=sealed, ticket=ticket)]
        if kind == "end":
            core.end(self.own(request.end.session_id))
            self.sessions.discard(request.end.session_id)
            return []
        raise PPInferError(
            "empty key request: set one of derive, entry, share, bind, activation, seal, end"
        )

    def _ciphertexts(self, call_id: int, values: list[int]) -> list[key_service_pb2.KeyResponse]:
        return [
            key_service_pb2.KeyResponse(call_id=call_id, ciphertexts=chunk)
            for chunk in chunk_ciphertexts(values, self.width)
        ]

    def close(self) -> None:
        if self._core is None:
            return
        for session_id in self.sessions:
            self._core.end(session_id)
        self._core.discard(self)
        self.keys.detach(self._core)


class KeyRing:
    """B's current key and the keys it replaced, kept while sessions still use them.

    After :meth:`rotate`, new sessions may still ask for the old key for a while (A checks
    B's key every few seconds): the old key is honoured for ``retire_seconds`` and as long
    as any stream uses it, then closed.
    """

    def __init__(self, core: KeyServerCore, retire_seconds: float = 60.0) -> None:
        self.current = core
        self.retire_seconds = retire_seconds
        self._cores = {core.key_id: core}
        self._streams: Counter[str] = Counter()
        self._retired_at: dict[str, float] = {}
        self._lock = threading.Lock()
        #: SIGHUP reloads that failed (B kept its key): an operator's alert, in GetStats
        self.reload_failures = 0

    def attach(self, key_id: str) -> KeyServerCore:
        """The core for a new stream's sessions under ``key_id`` (empty: the current)."""
        with self._lock:
            self._collect()
            core = self._cores.get(key_id) if key_id else self.current
            if core is None:
                raise KeyMismatchError(
                    f"the key server does not hold key {key_id[:16]}...; its key is "
                    f"{self.current.key_id[:16]}...: fetch its public keys again"
                )
            self._streams[core.key_id] += 1
            return core

    def detach(self, core: KeyServerCore) -> None:
        with self._lock:
            self._streams[core.key_id] -= 1
            self._collect()

    def rotate(self, core: KeyServerCore) -> None:
        """Serve new sessions under ``core``; keep the old key for its sessions in flight."""
        with self._lock:
            old = self.current
            if old.key_id == core.key_id:
                core.close()
                return
            self.current = core
            self._cores[core.key_id] = core
            self._retired_at[old.key_id] = time.monotonic()
            self._collect()
        log.info("key rotated from %s... to %s...", old.key_id[:16], core.key_id[:16])

    def stats(self) -> dict[str, int]:
        """The current key's counters, the keys kept for sessions in flight, and the
        SIGHUP reloads that failed."""
        counters = self.current.stats()
        counters.update(retired_keys=self.retired(), key_reload_failures=self.reload_failures)
        return counters

    def retired(self) -> int:
        with self._lock:
            return len(self._retired_at)

    def _collect(self) -> None:
        now = time.monotonic()
        for key_id, since in list(self._retired_at.items()):
            if self._streams[key_id] <= 0 and now - since >= self.retire_seconds:
                del self._retired_at[key_id]
                self._cores.pop(key_id).close()
                log.info("retired key %s... closed", key_id[:16])

    def close(self) -> None:
        with self._lock:
            for core in self._cores.values():
                core.close()
            self._cores.clear()


class KeyServicer(key_service_pb2_grpc.KeyServiceServicer):
    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    @property
    def core(self) -> KeyServerCore:
        return self.keys.current

    def GetPublicKeys(
        self, request: key_service_pb2.PublicKeysRequest, context: grpc.ServicerContext
    ) -> key_service_pb2.PublicKeys:
        public = self.core.public
        return key_service_pb2.PublicKeys(
            paillier=paillier_key_to_msg(public),
            x25519=self.core.x25519_public,
            protocol=PROTOCOL_REVISION,
        )

    def GetStats(
        self, request: tensors_pb2.StatsRequest, context: grpc.ServicerContext
    ) -> tensors_pb2.Stats:
        return tensors_pb2.Stats(counters=self.keys.stats())

    def Exchange(
        self, request_iterator: Iterable[key_service_pb2.KeyRequest], context: grpc.ServicerContext
    ) -> Iterator[key_service_pb2.KeyResponse]:
        stream = _Stream(self.keys)
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
    keys: KeyRing,
    listen: str = "127.0.0.1:0",
    max_workers: int = 64,
    tls: ServerTls | None = None,
) -> Listening:
    """A key server (not yet started) bound to ``listen``."""
    return create_server(
        lambda server: key_service_pb2_grpc.add_KeyServiceServicer_to_server(
            KeyServicer(keys), server
        ),
        "ppinfer.v1.KeyService",
        listen,
        max_workers,
        tls,
    )
