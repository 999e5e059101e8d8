"""Key server B's logic, free of gRPC: sessions, input masks, exact activations, sealing.

B holds the Paillier secret key and a static X25519 key. It only ever decrypts values
that A has masked: permuted (and multiplicatively masked) pre-activations, and outputs
with additive masks. Every ciphertext it returns is a fresh encryption. It refuses a
request id it has already issued a mask for, since a reused mask would reveal x - x'.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from gmpy2 import mpz

from ppinfer.codec import encode_signed
from ppinfer.counters import Counters
from ppinfer.errors import (
    LimitExceededError,
    PPInferError,
    ProtocolOrderError,
    RequestReuseError,
    UnknownSessionError,
)
from ppinfer.functions import StageCall
from ppinfer.packing import SealCall, SlotLayout
from ppinfer.paillier import PrivateKey, RandomizerPool, encrypt
from ppinfer.paillier.stage import answer_stage, check_count, check_stage, decrypt_values
from ppinfer.session import (
    MAX_MASK_BITS,
    SessionKeys,
    input_mask,
    public_bytes,
    seal,
    server_handshake,
)

__all__ = ["MIN_MASK_SIGMA", "KeyServerCore", "Observer"]

#: B refuses input masks with fewer statistical bits than this over a 1-bit input.
MIN_MASK_SIGMA = 40
#: Test instrumentation: called with (what, values) for everything B decrypts.
Observer = Callable[[str, Sequence[int]], None]


@dataclass
class _Session:
    keys: SessionKeys
    masked: set[int] = field(default_factory=set)
    sealed: set[int] = field(default_factory=set)


class KeyServerCore:
    """Everything B does, callable in one process; the gRPC servicer is a thin adapter."""

    def __init__(
        self,
        private: PrivateKey,
        x25519: X25519PrivateKey,
        pool: RandomizerPool | None = None,
        max_sessions: int = 10_000,
        observer: Observer | None = None,
    ) -> None:
        self.private = private
        self.public = private.public
        self.key_id = self.public.key_id
        self._x25519 = x25519
        self.x25519_public = public_bytes(x25519.public_key())
        self.pool = pool or RandomizerPool(self.public, private)
        self.max_sessions = max_sessions
        self._observer = observer
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()
        self.counters = Counters()

    def close(self) -> None:
        self.pool.close()

    def derive(self, session_id: str, client_public: bytes) -> None:
        """Start a session from the client's ephemeral X25519 key (relayed by A)."""
        if not session_id or len(session_id) > 128:
            raise PPInferError("session id must be 1 to 128 characters")
        keys = server_handshake(self._x25519, client_public, self.key_id)
        with self._lock:
            if session_id in self._sessions:
                raise RequestReuseError(f"session {session_id!r} exists already")
            if len(self._sessions) >= self.max_sessions:
                raise LimitExceededError(
                    f"key server holds its limit of {self.max_sessions} sessions; retry later"
                )
            self._sessions[session_id] = _Session(keys)
            self.counters.add(sessions=1)

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def masks(self, session_id: str, request_id: int, count: int, mask_bits: int) -> list[mpz]:
        """Enc(-r) for the client's mask r of this request: once per request id."""
        check_count(count)
        if not MIN_MASK_SIGMA + 1 <= mask_bits <= MAX_MASK_BITS:
            raise PPInferError(
                f"mask_bits must be in [{MIN_MASK_SIGMA + 1}, {MAX_MASK_BITS}], got {mask_bits}"
            )
        with self._lock:
            session = self._session(session_id)
            if request_id in session.masked:
                raise RequestReuseError(
                    f"request id {request_id} was already used in this session; "
                    "a reused mask would reveal the difference of two inputs: use a fresh id"
                )
            session.masked.add(request_id)
            self.counters.add(masks=count)
        mask = input_mask(session.keys.k_mask, request_id, count, mask_bits)
        return encrypt(self.public, [-int(r) for r in mask], self.pool)

    def activate(
        self, session_id: str, request_id: int, call: StageCall, packed: Sequence[int]
    ) -> list[mpz]:
        """Decrypt masked pre-activations, apply the stage exactly, return fresh ciphertexts."""
        check_stage(call)
        self._open_request(session_id, request_id)
        values = self._decrypt(packed, call.layout, call.count)
        if self._observer is not None:
            self._observer("activation", values)
        self.counters.add(activations=call.count // call.stage.group)
        return answer_stage(self.private, call, values, self.pool)

    def seal(
        self, session_id: str, request_id: int, call: SealCall, packed: Sequence[int]
    ) -> bytes:
        """Decrypt the masked outputs and seal them for the client under k_out: once."""
        if not 1 <= call.value_bytes <= 1024:
            raise PPInferError(f"value_bytes must be in [1, 1024], got {call.value_bytes}")
        keys = self._open_request(session_id, request_id)
        with self._lock:
            session = self._session(session_id)
            if request_id in session.sealed:
                raise RequestReuseError(f"request {request_id} was already sealed")
            session.sealed.add(request_id)
        values = self._decrypt(packed, call.layout, call.count)
        if self._observer is not None:
            self._observer("seal", values)
        self.counters.add(sealed_values=call.count)
        return seal(keys.k_out, session_id, request_id, encode_signed(values, call.value_bytes))

    def stats(self) -> dict[str, int]:
        counters = self.counters.snapshot()
        with self._lock:
            counters["open_sessions"] = len(self._sessions)
        pool = self.pool.stats()
        counters.update(pool_size=pool.size, pool_hits=pool.hits, pool_misses=pool.misses)
        return counters

    def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise UnknownSessionError(
                f"no session {session_id!r} on the key server; open one first"
            )
        return session

    def _open_request(self, session_id: str, request_id: int) -> SessionKeys:
        with self._lock:
            session = self._session(session_id)
            if request_id not in session.masked:
                raise ProtocolOrderError(
                    f"request {request_id} has no input mask yet; ask for its mask first"
                )
            if request_id in session.sealed:
                raise ProtocolOrderError(f"request {request_id} is finished")
            return session.keys

    def _decrypt(self, packed: Sequence[int], layout: SlotLayout, count: int) -> list[int]:
        self.counters.add(decryptions=len(packed))
        return decrypt_values(self.private, packed, layout, count)
