"""Key server B's logic, free of gRPC: request entries, sessions, exact activations, sealing.

B holds the Paillier secret key and a static X25519 key. Every Paillier operation B does
happens before a request exists, while model server A fills its preprocessing store:

- :meth:`KeyServerCore.new_entry`: B draws a request entry: a fresh 32-byte seed for the
  client's input mask r and one answer mask t per stage, and returns Enc(-r) ‖ Enc(-t_k).
- :meth:`KeyServerCore.store_share`: A returns each stage's mask part, permuted, scaled,
  packed and masked by A's fresh rho; B decrypts it into its additive share and keeps it.
- :meth:`KeyServerCore.bind`: A binds a complete entry to one request of one session;
  B seals the seed for the client under the session's k_mask (the ticket) and removes
  the entry from its store: an entry serves one request, ever (a second bind is refused
  with ALREADY_EXISTS).

On the request path B only adds: A's plain value plus B's share is what B used to
decrypt, d·z + e; B evaluates the stage exactly and answers y + t in the clear, and
forgets t (a second answer of the same stage is refused). The output works the same way
and is sealed for the client under k_out. Entries that were never bound belong to the
stream that made them and are discarded when it ends (A restarted: its half is gone).

A refusal is information too, so every refused request call ends its request for good:
its masks and shares are dropped and its id can never be used again. A session is ended
after ``MAX_REFUSALS`` refusals. An honest A is never refused.
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
    UnknownEntryError,
    UnknownSessionError,
)
from ppinfer.paillier import PrivateKey, RandomizerPool, encrypt
from ppinfer.protocol.counters import Counters
from ppinfer.protocol.revision import require_field
from ppinfer.protocol.session_keys import (
    SessionKeys,
    key_server_fingerprint,
    new_salt,
    new_seed,
    public_bytes,
    seal,
    seal_ticket,
    seed_mask,
    server_session_keys,
)
from ppinfer.protocol.stage_answer import check_count, check_stage, decrypt_values

__all__ = [
    "MAX_ANSWER_MASK_BITS",
    "MAX_ENTRIES",
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
#: Unbound request entries B holds by default (A's stores of every model together).
MAX_ENTRIES = 2048
#: Spent entry ids B remembers to answer a second use with ALREADY_EXISTS (older ones
#: are simply unknown: refused all the same).
_SPENT_MEMORY = 200_000
#: Test instrumentation: called with (what, values) for everything B decrypts.
Observer = Callable[[str, Sequence[int]], None]


@dataclass
class _AnswerMask:
    bits: int
    values: list[int]


@dataclass
class _Entry:
    """One request entry: the input mask's seed, each stage's answer mask, and B's share
    of each stage's input and of the output (None until A sends it, again None once used)."""

    owner: object
    seed: bytes
    count: int
    mask_bits: int
    answer_masks: list[_AnswerMask | None]
    shares: list[list[int] | None]

    @property
    def complete(self) -> bool:
        return all(share is not None for share in self.shares)


@dataclass
class _Session:
    keys: SessionKeys
    #: every request id an entry was ever bound to in this session
    bound: set[int] = field(default_factory=set)
    #: sealed or refused: no call of these requests is answered again
    finished: set[int] = field(default_factory=set)
    refusals: int = 0
    #: bound entries of the open requests, oldest first
    requests: OrderedDict[int, _Entry] = field(default_factory=OrderedDict)


class KeyServerCore:
    """Everything B does, callable in one process; the gRPC servicer is a thin adapter."""

    def __init__(
        self,
        private: PrivateKey,
        x25519: X25519PrivateKey,
        pool: RandomizerPool | None = None,
        max_sessions: int = 10_000,
        observer: Observer | None = None,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.private = private
        self.public = private.public
        self.key_id = self.public.key_id
        self._x25519 = x25519
        self.x25519_public = public_bytes(x25519.public_key())
        #: What clients pin: both of B's public keys.
        self.fingerprint = key_server_fingerprint(self.public.n_bytes, self.x25519_public)
        #: Names this process's entries: A uses an entry only with the B that made it.
        self.instance = secrets.token_hex(8)
        self.pool = pool or RandomizerPool(self.public, private)
        self.max_sessions = max_sessions
        self.max_entries = max_entries
        self._observer = observer
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._entries: dict[str, _Entry] = {}
        self._spent: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.counters = Counters()

    def close(self) -> None:
        self.pool.close()

    # -- request entries (offline) -------------------------------------------------------

    def new_entry(
        self, owner: object, count: int, mask_bits: int, stages: Sequence[MaskSpec] = ()
    ) -> tuple[str, list[mpz]]:
        """A fresh entry: its id, then Enc(-r) for the input mask r its seed gives and
        Enc(-t) for each stage's answer mask t. It belongs to ``owner`` (the stream that
        asked) until it is bound."""
        check_count(count + sum(spec.count for spec in stages))
        if not MIN_MASK_SIGMA + 1 <= mask_bits <= MAX_MASK_BITS:
            raise PPInferError(
                f"mask_bits must be in [{MIN_MASK_SIGMA + 1}, {MAX_MASK_BITS}], got {mask_bits}"
            )
        _check_answer_masks(stages)
        seed = new_seed()
        answers = [
            _AnswerMask(spec.bits, [secrets.randbits(spec.bits) for _ in range(spec.count)])
            for spec in stages
        ]
        entry = _Entry(owner, seed, count, mask_bits, list(answers), [None] * (len(stages) + 1))
        entry_id = f"{self.instance}.{secrets.token_hex(16)}"
        with self._lock:
            if len(self._entries) >= self.max_entries:
                raise LimitExceededError(
                    f"key server holds its limit of {self.max_entries} unbound entries; "
                    "lower the model servers' store sizes or raise --max-entries"
                )
            self._entries[entry_id] = entry
            self.counters.add(entries=1, masks=count + sum(spec.count for spec in stages))
        negated = [-int(r) for r in seed_mask(seed, count, mask_bits)]
        negated += [-t for answer in answers for t in answer.values]
        return entry_id, encrypt(self.public, negated, self.pool)

    def store_share(
        self, entry_id: str, part: int, layout: SlotLayout, count: int, packed: Sequence[int]
    ) -> None:
        """Decrypt A's masked mask part ``part`` of an entry (a stage, or the output after
        the last stage) into B's share of it, once."""
        with self._lock:
            entry = self._unbound(entry_id)
            if not 0 <= part < len(entry.shares):
                raise ProtocolOrderError(
                    f"entry has {len(entry.shares)} parts (stages, then the output), not {part}"
                )
            if entry.shares[part] is not None:
                raise RequestReuseError(f"part {part} of the entry has its share already")
        values = self._decrypt(packed, layout, count)
        if self._observer is not None:
            self._observer("share", values)
        with self._lock:
            if self._entries.get(entry_id) is entry and entry.shares[part] is None:
                entry.shares[part] = values

    def discard(self, owner: object) -> int:
        """Drop the unbound entries ``owner`` made (its stream ended); how many."""
        with self._lock:
            dropped = [key for key, entry in self._entries.items() if entry.owner is owner]
            for key in dropped:
                del self._entries[key]
            self.counters.add(entries_discarded=len(dropped))
        return len(dropped)

    # -- sessions (online) ---------------------------------------------------------------

    def derive(self, session_id: str, client_public: bytes) -> tuple[bytes, str]:
        """Start a session from the client's ephemeral X25519 key (relayed by A). Returns
        the fresh salt the keys were derived with, for A to relay to the client, and this
        B's instance (whose entries A may bind to the session)."""
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
        return salt, self.instance

    def bind(self, session_id: str, entry_id: str, request_id: int) -> bytes:
        """Bind a complete entry to request ``request_id`` of the session, once ever: the
        ticket (the entry's seed sealed under k_mask) for A to relay to the client."""
        with self._lock:
            session = self._session(session_id)
            entry = self._unbound(entry_id)
            if not entry.complete:
                raise ProtocolOrderError("the entry is not complete: send every share first")
            if request_id in session.bound or request_id < 1:
                raise RequestReuseError(
                    f"request id {request_id} was already used in this session (or is not "
                    "positive); a reused mask would reveal the difference of two inputs"
                )
            del self._entries[entry_id]
            self._spent[entry_id] = None
            while len(self._spent) > _SPENT_MEMORY:
                self._spent.popitem(last=False)
            session.bound.add(request_id)
            session.requests[request_id] = entry
            while len(session.requests) > MAX_OPEN_REQUESTS:
                session.requests.popitem(last=False)
            self.counters.add(entries_bound=1)
            keys = session.keys
        return seal_ticket(keys.k_mask, session_id, request_id, entry.seed)

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def activate(
        self,
        session_id: str,
        request_id: int,
        stage_index: int,
        call: StageCall,
        values: Sequence[int],
    ) -> list[int]:
        """Add B's share to A's values (d·z + e), apply the stage exactly, and return y + t
        under the stage's answer mask t, which is then forgotten."""
        with self._ending_on_refusal(session_id, request_id):
            check_stage(call)
            # Taken before anything is used: whatever happens next, they are used up.
            mask, share = self._take_stage(session_id, request_id, stage_index, call.results)
            inputs = _combine(values, share, call.layout, call.count)
            if self._observer is not None:
                self._observer("activation", inputs)
            results = evaluate_stage(call.stage, inputs, call.in_frac, call.out_frac)
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
        self, session_id: str, request_id: int, call: SealCall, values: Sequence[int]
    ) -> bytes:
        """Add B's share of the output to A's values, reduce them (numerics.reduce_sealed)
        and seal them for the client under k_out: once."""
        with self._ending_on_refusal(session_id, request_id):
            return self._seal(session_id, request_id, call, values)

    def _seal(
        self, session_id: str, request_id: int, call: SealCall, values: Sequence[int]
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
        with self._lock:
            session = self._session(session_id)
            entry = self._open_request(session, request_id)
            share = entry.shares[-1]
            if any(mask is not None for mask in entry.answer_masks) or share is None:
                raise ProtocolOrderError(
                    f"request {request_id} has stages still to answer; seal it after them"
                )
            session.finished.add(request_id)
            session.requests.pop(request_id, None)
            keys = session.keys
        outputs = _combine(values, share, call.layout, call.count)
        if self._observer is not None:
            self._observer("seal", outputs)
        self.counters.add(sealed_values=call.count)
        reduced = [reduce_sealed(v, call.shift, call.modulus_bits) for v in outputs]
        return seal(keys.k_out, session_id, request_id, encode_signed(reduced, call.value_bytes))

    def stats(self) -> dict[str, int]:
        counters = self.counters.snapshot()
        with self._lock:
            counters["open_sessions"] = len(self._sessions)
            counters["entries_held"] = len(self._entries)
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

    def _unbound(self, entry_id: str) -> _Entry:
        """An entry in B's store (under the lock)."""
        entry = self._entries.get(entry_id)
        if entry is not None:
            return entry
        if entry_id in self._spent:
            raise RequestReuseError("the entry was used already: an entry serves one request, ever")
        instance = entry_id.partition(".")[0]
        if instance != self.instance:
            raise UnknownEntryError(
                f"the entry was made by key server instance {instance[:16]!r}, not by this "
                f"one ({self.instance}): an entry is used only with the B that made it"
            )
        raise UnknownEntryError(
            "the key server holds no such entry (discarded when the stream that made it "
            "ended); make a new one"
        )

    def _open_request(self, session: _Session, request_id: int) -> _Entry:
        """The entry bound to an open request (under the lock)."""
        if request_id in session.finished:
            raise RequestReuseError(
                f"request {request_id} is finished (sealed, or ended by a refusal); "
                "run it again under a fresh request id"
            )
        entry = session.requests.get(request_id)
        if entry is None:
            raise ProtocolOrderError(
                f"request {request_id} has no entry bound (never bound, or dropped after "
                f"{MAX_OPEN_REQUESTS} newer requests); bind one first"
            )
        return entry

    def _take_stage(
        self, session_id: str, request_id: int, stage_index: int, count: int
    ) -> tuple[_AnswerMask, list[int]]:
        """Stage ``stage_index``'s answer mask and B's share of its input, both removed:
        a stage is answered once."""
        with self._lock:
            entry = self._open_request(self._session(session_id), request_id)
            masks = entry.answer_masks
            if not 0 <= stage_index < len(masks):
                raise ProtocolOrderError(
                    f"request {request_id} has {len(masks)} answer masks, not stage {stage_index}"
                )
            mask, share = masks[stage_index], entry.shares[stage_index]
            if mask is None or share is None:
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
            entry.shares[stage_index] = None
            return mask, share

    @contextmanager
    def _ending_on_refusal(self, session_id: str, request_id: int) -> Iterator[None]:
        """Whatever the block refuses ends the request (its id, masks and shares never
        serve again) and counts against the session; at MAX_REFUSALS the session ends."""
        try:
            yield
        except PPInferError as error:
            with self._lock:
                session = self._sessions.get(session_id)
                if session is None:
                    raise
                session.bound.add(request_id)
                session.finished.add(request_id)
                session.requests.pop(request_id, None)
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


def _combine(values: Sequence[int], share: list[int], layout: SlotLayout, count: int) -> list[int]:
    """A's values plus B's share mod 2^(b+2), read as signed: the value v itself when
    |v| < 2^b (``layout.value_bits``); refused when the sum is past that bound."""
    if len(values) != count or len(share) != count:
        raise PPInferError(
            f"{len(values)} values for a stage of {count}, whose share has {len(share)}"
        )
    bits = layout.value_bits + 2
    modulus, half, bound = 1 << bits, 1 << (bits - 1), 1 << layout.value_bits
    if any(not -half <= a < half for a in values):
        raise PPInferError(f"values must be {bits}-bit residues, signed")
    combined = [(a + s + half) % modulus - half for a, s in zip(values, share, strict=True)]
    if any(not -bound < v < bound for v in combined):
        raise EncodingRangeError(
            f"a value is past its slot's 2^{layout.value_bits} bound: the plan's bounds are "
            "wrong, or the input is outside the model's declared range"
        )
    return combined


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
