"""The whole protocol in one process: client, model server A and key server B as the
parties' own objects, handing each other plain values.

The protocol's logic (keys, masks, perturbations, the revision gate, the refusals) is the
same as over gRPC; only the transport is missing. Tests run the protocol suites over this
deployment beside the gRPC one, and a profiler sees the parties' work without sockets.
Errors reach the client as they would over gRPC: a :class:`~ppinfer.errors.ServerError`
with the status and message A's servicer would send, and the session ends with them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from types import TracebackType
from typing import Self, TypeVar

import numpy as np
import numpy.typing as npt
from gmpy2 import mpz

from ppinfer.compiler.activations import MaskSpec, StageCall
from ppinfer.encoding.packing import SealCall, SlotLayout
from ppinfer.errors import PPInferError, ProtocolOrderError, ServerError
from ppinfer.paillier import PublicKey
from ppinfer.protocol.client_session import (
    ClientSession,
    ClientStats,
    ModelDescription,
    canonical_pin,
)
from ppinfer.protocol.entry_store import EntryStore
from ppinfer.protocol.key_core import KeyServerCore
from ppinfer.protocol.model_evaluator import ModelEvaluator
from ppinfer.protocol.model_session import ModelSession
from ppinfer.protocol.serving_keys import ServingKeys

__all__ = ["InProcessClient", "InProcessDeployment", "InProcessKeyLink"]

#: Called with (request id, steps done, steps in all), as the gRPC client's on_progress.
ProgressCallback = Callable[[int, int, int], None]


class InProcessKeyLink:
    """A's link to B by direct calls: :class:`ppinfer.protocol.model_evaluator.KeyLink`.

    ``close`` ends the link, not B: calls after it fail fast, as a closed stream's do."""

    def __init__(self, core: KeyServerCore) -> None:
        self._core = core
        self._closed = False

    def _open_core(self) -> KeyServerCore:
        if self._closed:
            raise ServerError("CANCELLED", "the link to the key server was closed")
        return self._core

    def new_entry(
        self, count: int, mask_bits: int, stages: Sequence[MaskSpec] = ()
    ) -> tuple[str, list[mpz]]:
        return self._open_core().new_entry(self, count, mask_bits, stages)

    def store_share(
        self, entry_id: str, part: int, layout: SlotLayout, count: int, packed: Sequence[int]
    ) -> None:
        self._open_core().store_share(entry_id, part, layout, count, packed)

    def derive(self, session_id: str, client_public: bytes) -> tuple[bytes, str]:
        return self._open_core().derive(session_id, client_public)

    def bind(self, session_id: str, entry_id: str, request_id: int) -> bytes:
        return self._open_core().bind(session_id, entry_id, request_id)

    def activate(
        self,
        session_id: str,
        request_id: int,
        stage_index: int,
        call: StageCall,
        values: Sequence[int],
    ) -> list[int]:
        return self._open_core().activate(session_id, request_id, stage_index, call, values)

    def seal(
        self,
        session_id: str,
        request_id: int,
        call: SealCall,
        values: Sequence[int],
        bind_next: tuple[str, int] | None = None,
    ) -> tuple[bytes, bytes]:
        core = self._open_core()
        sealed = core.seal(session_id, request_id, call, values)
        ticket = b"" if bind_next is None else core.bind(session_id, *bind_next)
        return sealed, ticket

    def end(self, session_id: str) -> None:
        self._core.end(session_id)

    def close(self) -> None:
        """As a stream's end: B drops the entries this link made and never bound."""
        if not self._closed:
            self._closed = True
            self._core.discard(self)


class InProcessDeployment:
    """A (its evaluators) and B (its core) wired by direct calls; ``client()`` opens
    sessions against them."""

    def __init__(
        self,
        evaluators: dict[str, ModelEvaluator],
        key_core: KeyServerCore,
        store_capacity: int = 0,
        low_water: int | None = None,
    ) -> None:
        """``store_capacity`` entries per model are made in the background (0: every
        request makes its own, a miss)."""
        self.key_core = key_core
        stores = {
            name: EntryStore(evaluator, self.open_link, store_capacity, low_water)
            for name, evaluator in evaluators.items()
        }
        self.serving = ServingKeys.of(evaluators, key_core.x25519_public, stores)
        for store in stores.values():
            store.start()

    def close(self) -> None:
        """Stop the stores' fillers."""
        self.serving.close_stores()

    def open_link(self, public: PublicKey, time_remaining: float | None) -> InProcessKeyLink:
        if public.n != self.key_core.public.n:
            raise ServerError("UNAVAILABLE", "the key server serves another key")
        return InProcessKeyLink(self.key_core)

    def client(
        self,
        model: str = "",
        expected_key_id: str | None = None,
        on_progress: ProgressCallback | None = None,
        tickets: int = 1,
        **transport_options: object,
    ) -> InProcessClient:
        """A client with the gRPC client's options; those of its transport (timeouts,
        pipelining, retries, TLS, the no-op precompute) mean nothing here and are
        accepted as such."""
        return InProcessClient(self, model, expected_key_id, on_progress, tickets)


class InProcessClient:
    """The gRPC :class:`ppinfer.client.Client`'s interface over an in-process deployment."""

    def __init__(
        self,
        deployment: InProcessDeployment,
        model: str = "",
        expected_key_id: str | None = None,
        on_progress: ProgressCallback | None = None,
        tickets: int = 1,
    ) -> None:
        self._deployment = deployment
        self._model_name = model
        self._pin = canonical_pin(expected_key_id)
        self.on_progress = on_progress
        self.tickets = tickets
        self.stats = ClientStats()
        self.model: ModelDescription | None = None
        self._client: ClientSession | None = None
        self._server: ModelSession | None = None
        self._closed = False

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def session_id(self) -> str:
        return self._client.session_id if self._client is not None else ""

    def open(self) -> None:
        """Check A's offer, open the session at A and B (a new one: new keys)."""
        if self._closed:
            raise ProtocolOrderError("this client is closed; make a new Client")
        serving = self._deployment.serving
        offer = _as_status(lambda: serving.offer(self._model_name, client_aided=False))
        client = ClientSession(offer, self._pin, self.on_progress is not None, self.tickets)
        self.model = client.model
        server = ModelSession(serving, self._deployment.open_link)
        try:
            client.opened(_as_status(lambda: server.open(client.open_request)))
        except BaseException:
            server.close()
            raise
        self._client, self._server = client, server

    def close(self) -> None:
        self._end_session()
        self._closed = True

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        [logits] = list(self.predict_stream([x]))
        return logits

    def predict_stream(self, inputs: Iterable[npt.ArrayLike]) -> Iterator[npt.NDArray[np.float64]]:
        """Logits for each input, in order; a failed session is reopened on the next call."""
        for position, x in enumerate(inputs):
            if self._client is None and self.model is not None:
                self.open()
            client, server = self._require_open()
            try:
                request = client.request(x)
            except PPInferError as error:
                raise type(error)(f"input {position}: {error}") from error
            try:
                progress = self._progress(request.request_id)
                result = _as_status(partial(server.infer, request, progress))
            except ServerError:
                self._end_session()  # as A ends a stream with a status
                raise
            logits = client.result(result, request.request_id)
            self.stats.inferences += 1
            yield logits

    def _progress(self, request_id: int) -> Callable[[int, int], None] | None:
        callback = self.on_progress
        if callback is None:
            return None
        return lambda layer, layers: callback(request_id, layer, layers)

    def _require_open(self) -> tuple[ClientSession, ModelSession]:
        if self._client is None or self._server is None:
            raise ProtocolOrderError("the client is not open: use it as a context manager")
        return self._client, self._server

    def _end_session(self) -> None:
        if self._server is not None:
            self._server.close()
        self._client = self._server = None


T = TypeVar("T")


def _as_status(call: Callable[[], T]) -> T:
    """``call()``, with A's refusal turned into the ServerError its servicer would send."""
    try:
        return call()
    except ServerError:
        raise
    except PPInferError as error:
        raise ServerError(error.status, str(error)) from error
