"""Model server A's side of one two-server session, without I/O.

:meth:`ModelSession.open` passes the client through the revision gate, picks the model,
checks the client's pin, opens a link to B, derives the session there and binds a request
entry from the model's preprocessing store (:mod:`ppinfer.protocol.entry_store`) to each
of the client's first ``tickets`` requests; :meth:`ModelSession.infer` answers one request
on its entry, and binds the entry of the request ``tickets`` ids further on in the same
call to B, so the client always holds that many tickets. The gRPC servicer
(:mod:`ppinfer.rpc.model_servicer`) and the in-process deployment
(:mod:`ppinfer.protocol.in_process`) only carry its values; B is reached through the
:class:`~ppinfer.protocol.model_evaluator.KeyLink` that ``open_link`` returns.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from ppinfer.errors import (
    KeyMismatchError,
    LimitExceededError,
    ProtocolOrderError,
    RequestReuseError,
)
from ppinfer.paillier import PublicKey
from ppinfer.protocol.entry_store import EntryStore
from ppinfer.protocol.evaluation_types import Prepared, Progress
from ppinfer.protocol.key_link import KeyLink
from ppinfer.protocol.model_evaluator import ModelEvaluator
from ppinfer.protocol.revision import require_revision
from ppinfer.protocol.serving_keys import ServingKeys
from ppinfer.protocol.session_messages import (
    MAX_TICKETS,
    InferRequest,
    InferResult,
    Opened,
    OpenRequest,
)

__all__ = ["LinkOpener", "ModelSession"]

log = logging.getLogger("ppinfer.model_server")

#: Opens a link to B for a session under the given key, within the seconds left (None: no
#: deadline).
LinkOpener = Callable[[PublicKey, float | None], KeyLink]
#: Request ids are uint64 on the wire.
_REQUEST_ID_LIMIT = 2**64


class ModelSession:
    """One session: ``open`` once, then ``infer`` per request, then
    ``close``. ``serving`` is what A served when the session arrived; a key rotation later
    does not change it."""

    def __init__(self, serving: ServingKeys, open_link: LinkOpener) -> None:
        self.session_id = secrets.token_hex(16)
        self._serving = serving
        self._open_link = open_link
        self._evaluator: ModelEvaluator | None = None
        self._link: KeyLink | None = None
        self._store: EntryStore | None = None
        self._instance = ""
        self._tickets = 1
        #: the entries bound to the requests the client holds tickets for
        self._entries: dict[int, Prepared] = {}
        self._used: set[int] = set()
        self._cancelled = False
        self.inferences = 0

    @property
    def evaluator(self) -> ModelEvaluator:
        if self._evaluator is None:
            raise ProtocolOrderError("a session starts with an open message")
        return self._evaluator

    def model(self, request: OpenRequest) -> ModelEvaluator:
        """The model the client asks for, after the revision gate (before any link to B)."""
        require_revision("client", request.protocol, "model server")
        return self._serving.evaluator(request.model)

    def open(self, request: OpenRequest, time_remaining: float | None = None) -> Opened:
        """Open the session at B for the client's ephemeral key; B's salt and the tickets
        of requests 1..``request.tickets`` go back."""
        if self._evaluator is not None:
            raise ProtocolOrderError("the session is open already")
        evaluator = self.model(request)
        if not 1 <= request.tickets <= MAX_TICKETS:
            raise LimitExceededError(
                f"a session holds 1 to {MAX_TICKETS} tickets ahead, not {request.tickets}"
            )
        serving = self._serving
        expected = request.expected_key_id.lower()  # a prefix of it, as the client pins it
        if expected and not serving.fingerprint.startswith(expected):
            raise KeyMismatchError(
                f"pinned key id {expected[:16]}... does not match the key server's "
                f"{serving.fingerprint[:16]}...: refusing the session"
            )
        self._link = self._open_link(evaluator.public, time_remaining)
        if self._cancelled:
            self._link.close()
        salt, self._instance = self._link.derive(self.session_id, request.client_x25519)
        self._evaluator = evaluator
        self._store = serving.store(evaluator)
        self._tickets = request.tickets
        tickets = tuple(self._bind(request_id) for request_id in range(1, request.tickets + 1))
        return Opened(self.session_id, serving.fingerprint, salt, tickets)

    def infer(self, request: InferRequest, progress: Progress | None = None) -> InferResult:
        """Answer one request on the entry bound to it; the result carries the ticket of
        the request ``tickets`` ids further on."""
        link = self._require_link()
        entry = self._entries.pop(request.request_id, None)
        if entry is None and request.request_id in self._used:
            raise RequestReuseError(
                f"request id {request.request_id} was already used in this session; a "
                "reused mask would reveal the difference of two inputs: use a fresh id"
            )
        if entry is None:
            raise ProtocolOrderError(
                f"request {request.request_id} has no ticket: a session's requests are "
                "numbered 1, 2, ... and each needs the ticket the server sent for it"
            )
        self._used.add(request.request_id)
        ahead = request.request_id + self._tickets
        upcoming = None
        if ahead < _REQUEST_ID_LIMIT:
            upcoming = self._require_store().take(link, self._instance)
        result = self.evaluator.infer(
            link, self.session_id, request.request_id, request.masked_input, entry, progress,
            None if upcoming is None else (upcoming.entry_id, ahead),
        )  # fmt: skip
        if upcoming is not None:
            self._entries[ahead] = upcoming
        self.inferences += 1
        return result

    def _bind(self, request_id: int) -> bytes:
        link = self._require_link()
        entry = self._require_store().take(link, self._instance)
        ticket = link.bind(self.session_id, entry.entry_id, request_id)
        self._entries[request_id] = entry
        return ticket

    def _require_store(self) -> EntryStore:
        if self._store is None:
            raise ProtocolOrderError("a session starts with an open message")
        return self._store

    def cancel(self) -> None:
        """The client went away: close the link so that B's work for it stops (the next
        call to B fails fast). Safe from another thread, before or after ``open``."""
        self._cancelled = True
        link = self._link
        if link is not None:
            link.close()

    def close(self) -> None:
        """End the session at B and close the link; never raises."""
        link, self._link = self._link, None
        if link is None:
            return
        try:
            link.end(self.session_id)
            link.close()
        except Exception:  # ending a session must never raise into the server
            log.debug("ending session %s on the key server failed", self.session_id[:8],
                      exc_info=True)  # fmt: skip

    def _require_link(self) -> KeyLink:
        if self._link is None:
            raise ProtocolOrderError("a session starts with an open message")
        return self._link
