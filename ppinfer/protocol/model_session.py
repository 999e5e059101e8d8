"""Model server A's side of one two-server session, without I/O.

:meth:`ModelSession.open` passes the client through the revision gate, picks the model,
checks the client's pin, opens a link to B and derives the session there;
:meth:`ModelSession.infer` answers one request; :meth:`ModelSession.prepare_next` does the
offline half of the request the client will send next, while it is idle (session
precomputation, if the client asked for it). The gRPC servicer
(:mod:`ppinfer.rpc.model_servicer`) and the in-process deployment
(:mod:`ppinfer.protocol.in_process`) only carry its values; B is reached through the
:class:`~ppinfer.protocol.model_evaluator.KeyLink` that ``open_link`` returns.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from ppinfer.errors import KeyMismatchError, PPInferError, ProtocolOrderError
from ppinfer.paillier import PublicKey
from ppinfer.protocol.evaluation_types import Prepared, Progress
from ppinfer.protocol.key_link import KeyLink
from ppinfer.protocol.model_evaluator import ModelEvaluator
from ppinfer.protocol.revision import require_revision
from ppinfer.protocol.serving_keys import ServingKeys
from ppinfer.protocol.session_messages import InferRequest, InferResult, Opened, OpenRequest

__all__ = ["LinkOpener", "ModelSession"]

log = logging.getLogger("ppinfer.model_server")

#: Opens a link to B for a session under the given key, within the seconds left (None: no
#: deadline).
LinkOpener = Callable[[PublicKey, float | None], KeyLink]
#: Request ids are uint64 on the wire.
_REQUEST_ID_LIMIT = 2**64


class ModelSession:
    """One session: ``open`` once, then ``infer`` (and ``prepare_next``) per request, then
    ``close``. ``serving`` is what A served when the session arrived; a key rotation later
    does not change it."""

    def __init__(self, serving: ServingKeys, open_link: LinkOpener) -> None:
        self.session_id = secrets.token_hex(16)
        self._serving = serving
        self._open_link = open_link
        self._evaluator: ModelEvaluator | None = None
        self._link: KeyLink | None = None
        self._precompute = False
        self._prepared: Prepared | None = None
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
        """Open the session at B for the client's ephemeral key; B's salt goes back."""
        if self._evaluator is not None:
            raise ProtocolOrderError("the session is open already")
        evaluator = self.model(request)
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
        salt = self._link.derive(self.session_id, request.client_x25519)
        self._evaluator = evaluator
        self._precompute = request.precompute
        return Opened(self.session_id, serving.fingerprint, salt)

    def infer(self, request: InferRequest, progress: Progress | None = None) -> InferResult:
        """Answer one request; its offline half is the prepared one if it was prepared."""
        link = self._require_link()
        result = self.evaluator.infer(
            link, self.session_id, request.request_id, request.masked_input, progress,
            self._prepared,
        )  # fmt: skip
        self._prepared = None
        self.inferences += 1
        return result

    def prepare_next(self, request_id: int) -> None:
        """If the client asked for precomputation, the offline half of ``request_id`` now,
        while it is idle. Optional work: a failure here is the online path's to report."""
        if not self._precompute or request_id >= _REQUEST_ID_LIMIT:
            return
        try:
            self._prepared = self.evaluator.prepare(
                self._require_link(), self.session_id, request_id
            )
        except PPInferError as error:
            log.debug("precomputation for session %s failed: %s", self.session_id[:8], error)
            self._prepared = None

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
