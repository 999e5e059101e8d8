"""Key server B's logic, free of gRPC: sessions, masks, exact activations, sealing.

B holds the Paillier secret key and a static X25519 key. It only ever decrypts values
that A has masked: permuted (and multiplicatively masked) pre-activations, and outputs
with additive masks. It refuses a request id it has already issued a mask for, since a
reused mask would reveal x - x'.

A stage's results go back to A in the clear under an additive answer mask t that B drew
from its CSPRNG when A asked for the request's masks (A got Enc(-t) then, before any
input existed, and has already applied the next layer to it). Each t is used once: B
forgets it when it answers, so a second answer of the same stage is refused (two
answers under one t would give A their difference).

A refusal is information too (a slot that overflowed says something about what was
packed in it), so every refused call ends its request for good: its masks are dropped
and its id can never be used again. A session is ended after ``MAX_REFUSALS`` refusals.
An honest A is never refused.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from gmpy2 import mpz

from ppinfer.compiler.activations import MaskSpec, StageCall, evaluate_stage
from ppinfer.encoding.numerics import MAX_MASK_BITS, MIN_MASK_SIGMA, reduce_sealed
from ppinfer.encoding.packing import SealCall, SlotLayout
from ppinfer.encoding.wire_bytes import encode_signed
from ppinfer.errors import (
    EncodingRangeError,
    LimitExceededError,
    PPInferError,
    ProtocolOrderError,
    RequestReuseError,
    UnknownSessionError,
)
from ppinfer.paillier import PrivateKey, RandomizerPool, encrypt
from ppinfer.protocol.counters import Counters
from ppinfer.protocol.revision import require_field
from ppinfer.protocol.session_keys import (
    SessionKeys,
    input_mask,
    key_server_fingerprint,
    new_salt,
    public_bytes,
    seal,
    server_session_keys,
)
from ppinfer.protocol.stage_answer import check_count, check_stage, decrypt_values

__all__ = [
    "MAX_ANSWER_MASK_BITS",
    "MAX_OPEN_REQUESTS",
    "MAX_REFUSALS",
    "MIN_MASK_SIGMA",
    "KeyServerCore",
    "Observer",
]

# B refuses input masks with fewer than MIN_MASK_SIGMA statistical bits over a 1-bit
# input, and answers a stage only if its results stay that many bits below the answer mask.
#: Answer masks wider than this are nonsense (a 2048-bit key holds ~2046-bit plaintexts).
MAX_ANSWER_MASK_BITS = 4096
#: Requests per session whose answer masks B keeps (masked, not yet sealed); beyond it
#: the oldest is dropped: an abandoned request cannot pin B's memory.
MAX_OPEN_REQUESTS = 16
#: Stages per request.
MAX_STAGES = 64
#: Refused calls after which B ends a session (an honest model server gets none).
MAX_REFUSALS = 4
#: Test instrumentation: called with (what, values) for everything B decrypts.
Observer = Callable[[str, Sequence[int]], None]


@dataclass
class _AnswerMask:
    bits: int
    values: list[int]


@dataclass
class _Session:
    keys: SessionKeys
    masked: set[int] = field(default_factory=set)
    #: sealed or refused: no call of these requests is answered again
    finished: set[int] = field(default_factory=set)
    refusals: int = 0
    #: per open request, each stage's answer mask t (None once the stage is answered)
    answer_masks: OrderedDict[int, list[_AnswerMask | None]] = field(default_factory=OrderedDict)


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
        #: What clients pin: both of B's public keys.
        self.fingerprint = key_server_fingerprint(self.public.n_bytes, self.x25519_public)
        self.pool = pool or RandomizerPool(self.public, private)
        self.max_sessions = max_sessions
        self._observer = observer
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()
        self.counters = Counters()

    def close(self) -> None:
        self.pool.close()

    def derive(self, session_id: str, client_public: bytes) -> bytes:
        """Start a session from the client's ephemeral X25519 key (relayed by A). Returns
        the fresh salt the keys were derived with, for A to relay to the client."""
        if not session_id or len(session_id) > 128:
            raise PPInferError("session id must be 1 to 128 characters")
        salt = new_salt()
        keys = server_session_keys(self._x25519, client_public, self.fingerprint, session_id, salt)
        with self._lock:
            if session_id in self._sessions:
                raise RequestReuseError(f"session {session_id!r} exists already")
            if len(self._sessions) >= self.max_sessions:
                raise LimitExceededError(
                    f"key server holds its limit of {self.max_sessions} sessions; retry later"
                )
            self._sessions[session_id] = _Session(keys)
            self.counters.add(sessions=1)
        return salt

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def masks(
        self,
        session_id: str,
        request_id: int,
        count: int,
        mask_bits: int,
        stages: Sequence[MaskSpec] = (),
    ) -> list[mpz]:
        """Enc(-r) for the client's mask r of this request, then Enc(-t) for each stage's
        fresh answer mask t: once per request id."""
        with self._ending_on_refusal(session_id, request_id):
            check_count(count + sum(spec.count for spec in stages))
            if not MIN_MASK_SIGMA + 1 <= mask_bits <= MAX_MASK_BITS:
                raise PPInferError(
                    f"mask_bits must be in [{MIN_MASK_SIGMA + 1}, {MAX_MASK_BITS}], got {mask_bits}"
                )
            _check_answer_masks(stages)
            answers = [
                _AnswerMask(spec.bits, [secrets.randbits(spec.bits) for _ in range(spec.count)])
                for spec in stages
            ]
            with self._lock:
                session = self._session(session_id)
                if request_id in session.masked:
                    raise RequestReuseError(
                        f"request id {request_id} was already used in this session; a "
                        "reused mask would reveal the difference of two inputs: use a fresh id"
                    )
                session.masked.add(request_id)
                session.answer_masks[request_id] = list(answers)
                while len(session.answer_masks) > MAX_OPEN_REQUESTS:
                    session.answer_masks.popitem(last=False)
                self.counters.add(masks=count + sum(spec.count for spec in stages))
        mask = input_mask(session.keys.k_mask, request_id, count, mask_bits)
        negated = [-int(r) for r in mask] + [-t for answer in answers for t in answer.values]
        return encrypt(self.public, negated, self.pool)

    def activate(
        self,
        session_id: str,
        request_id: int,
        stage_index: int,
        call: StageCall,
        packed: Sequence[int],
    ) -> list[int]:
        """Decrypt masked pre-activations, apply the stage exactly, and return y + t under
        the stage's answer mask t, which is then forgotten."""
        with self._ending_on_refusal(session_id, request_id):
            check_stage(call)
            self._open_request(session_id, request_id)
            # Taken before anything is decrypted: whatever happens next, it is used up.
            mask = self._take_answer_mask(session_id, request_id, stage_index, call.results)
            values = self._decrypt(packed, call.layout, call.count)
            if self._observer is not None:
                self._observer("activation", values)
            results = evaluate_stage(call.stage, values, call.in_frac, call.out_frac)
            bound = 1 << (mask.bits - MIN_MASK_SIGMA)
            if any(not -bound < y < bound for y in results):
                raise EncodingRangeError(
                    f"stage {stage_index} results exceed 2^{mask.bits - MIN_MASK_SIGMA}: its "
                    f"{mask.bits}-bit answer mask would not hide them; the plan's bounds "
                    "are wrong"
                )
        self.counters.add(activations=len(results))
        return [y + t for y, t in zip(results, mask.values, strict=True)]

    def seal(
        self, session_id: str, request_id: int, call: SealCall, packed: Sequence[int]
    ) -> bytes:
        """Decrypt the masked outputs, reduce them (numerics.reduce_sealed) and seal them
        for the client under k_out: once."""
        with self._ending_on_refusal(session_id, request_id):
            return self._seal(session_id, request_id, call, packed)

    def _seal(
        self, session_id: str, request_id: int, call: SealCall, packed: Sequence[int]
    ) -> bytes:
        if not 1 <= call.value_bytes <= 1024:
            raise PPInferError(f"value_bytes must be in [1, 1024], got {call.value_bytes}")
        require_field(
            call.modulus_bits != 0, "model server", "modulus_bits to seal with",
            "upgrade the model server",
        )  # fmt: skip
        if not 1 <= call.modulus_bits < 8 * call.value_bytes:
            raise PPInferError(
                f"modulus_bits must be in [1, {8 * call.value_bytes - 1}] for "
                f"{call.value_bytes}-byte values, got {call.modulus_bits}"
            )
        if call.shift > call.layout.value_bits:
            raise PPInferError(
                f"shift {call.shift} exceeds the layout's {call.layout.value_bits}-bit values"
            )
        keys = self._open_request(session_id, request_id)
        with self._lock:
            session = self._session(session_id)
            session.finished.add(request_id)
            session.answer_masks.pop(request_id, None)
        values = self._decrypt(packed, call.layout, call.count)
        if self._observer is not None:
            self._observer("seal", values)
        self.counters.add(sealed_values=call.count)
        reduced = [reduce_sealed(v, call.shift, call.modulus_bits) for v in values]
        return seal(keys.k_out, session_id, request_id, encode_signed(reduced, call.value_bytes))

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
            if request_id in session.finished:
                raise RequestReuseError(
                    f"request {request_id} is finished (sealed, or ended by a refusal); "
                    "run it again under a fresh request id"
                )
            return session.keys

    def _take_answer_mask(
        self, session_id: str, request_id: int, stage_index: int, count: int
    ) -> _AnswerMask:
        """Stage ``stage_index``'s answer mask, removed: a stage is answered once."""
        with self._lock:
            masks = self._session(session_id).answer_masks.get(request_id)
            if masks is None:
                raise ProtocolOrderError(
                    f"request {request_id} has no answer masks (finished, or dropped after "
                    f"{MAX_OPEN_REQUESTS} newer requests); run it again under a fresh request id"
                )
            if not 0 <= stage_index < len(masks):
                raise ProtocolOrderError(
                    f"request {request_id} has {len(masks)} answer masks, not stage {stage_index}"
                )
            mask = masks[stage_index]
            if mask is None:
                raise RequestReuseError(
                    f"stage {stage_index} of request {request_id} was already answered; "
                    "a second answer under its mask would reveal the difference"
                )
            if len(mask.values) != count:
                raise PPInferError(
                    f"stage {stage_index} gives {count} results; its answer mask has "
                    f"{len(mask.values)} values"
                )
            masks[stage_index] = None
            return mask

    @contextmanager
    def _ending_on_refusal(self, session_id: str, request_id: int) -> Iterator[None]:
        """Whatever the block refuses ends the request (its id and masks never serve
        again) and counts against the session; at MAX_REFUSALS the session ends."""
        try:
            yield
        except PPInferError as error:
            with self._lock:
                session = self._sessions.get(session_id)
                if session is None:
                    raise
                session.masked.add(request_id)
                session.finished.add(request_id)
                session.answer_masks.pop(request_id, None)
                session.refusals += 1
                self.counters.add(refusals=1)
                if session.refusals < MAX_REFUSALS:
                    raise
                del self._sessions[session_id]
            raise LimitExceededError(
                f"{error} (refusal {MAX_REFUSALS} of this session: the key server ended it)"
            ) from error

    def _decrypt(self, packed: Sequence[int], layout: SlotLayout, count: int) -> list[int]:
        self.counters.add(decryptions=len(packed))
        return decrypt_values(self.private, packed, layout, count)


def _check_answer_masks(stages: Sequence[MaskSpec]) -> None:
    if len(stages) > MAX_STAGES:
        raise LimitExceededError(f"a request has at most {MAX_STAGES} stages, got {len(stages)}")
    for spec in stages:
        check_count(spec.count)
        if not MIN_MASK_SIGMA + 1 <= spec.bits <= MAX_ANSWER_MASK_BITS:
            raise PPInferError(
                f"answer mask bits must be in [{MIN_MASK_SIGMA + 1}, {MAX_ANSWER_MASK_BITS}], "
                f"got {spec.bits}"
            )
