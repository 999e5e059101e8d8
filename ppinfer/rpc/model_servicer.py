"""Model server A over gRPC: client sessions, relayed to key server B, evaluated by A.

A ``Session`` stream starts with ``open`` (A relays the client's ephemeral key to B), then
carries any number of ``infer`` messages; A answers each with one result (after progress
events, if the client asked for them), in request order. An ``open`` with the client's
own Paillier key starts a client-aided session instead (the baseline,
:mod:`ppinfer.rpc.aided_servicer`). A failure ends the stream with its status and message;
other clients' sessions are untouched, and A stays up when B is down.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import NoReturn

import grpc

from ppinfer.errors import (
    InferenceFailedError,
    LimitExceededError,
    ModeDisabledError,
    PPInferError,
    ProtocolOrderError,
    ServerError,
)
from ppinfer.paillier import PublicKey
from ppinfer.protocol.counters import Counters
from ppinfer.protocol.entry_store import EntryStore
from ppinfer.protocol.evaluation_types import Progress
from ppinfer.protocol.key_link import KeyLink
from ppinfer.protocol.model_evaluator import ModelEvaluator
from ppinfer.protocol.model_session import ModelSession
from ppinfer.protocol.serving_keys import ServingKeys
from ppinfer.protocol.session_messages import Opened, ProgressEvent
from ppinfer.rpc.aided_servicer import AidedEvaluators, client_public_key, run_aided_inference
from ppinfer.rpc.error_status import abort, log
from ppinfer.rpc.server_events import ServerEvents
from ppinfer.rpc.server_factory import Listening, create_server
from ppinfer.rpc.session_converters import (
    infer_request_from_msg,
    infer_result_to_msg,
    offer_to_msg,
    open_from_msg,
    opened_to_msg,
    progress_to_msg,
)
from ppinfer.rpc.session_limits import SessionLimits, peer_address
from ppinfer.rpc.session_streams import StreamRegistry, StreamState
from ppinfer.rpc.tls import ServerTls
from ppinfer.v1 import model_service_pb2, model_service_pb2_grpc, tensors_pb2

__all__ = ["ModelServicer", "create_model_server"]

_DONE = object()
#: A deadline further away than this (about 30 years) is no deadline.
NO_DEADLINE_SECONDS = 1e9
#: Makes (and starts) the preprocessing stores of one key's evaluators.
StoreFactory = Callable[[dict[str, ModelEvaluator]], dict[str, EntryStore]]


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(
        self,
        evaluators: dict[str, ModelEvaluator],
        open_link: Callable[[PublicKey, float | None], KeyLink],
        key_server_x25519: bytes,
        key_server_stats: Callable[[float | None], dict[str, int]] | None = None,
        link_counters: Counters | None = None,
        limits: SessionLimits | None = None,
        events: ServerEvents | None = None,
        allow_client_aided: bool = False,
        open_timeout: float = 10.0,
        idle_timeout: float = 600.0,
        make_stores: StoreFactory | None = None,
    ) -> None:
        """``allow_client_aided`` admits the client-aided baseline, which trusts the
        client's Paillier key (benchmarking only). A stream that sends no ``open`` within
        ``open_timeout`` seconds, or an opened session that sends nothing and waits for
        nothing for ``idle_timeout`` seconds, is ended. ``make_stores`` gives each key's
        evaluators their preprocessing stores, started (none: every request a miss)."""
        self._open_link = open_link
        self._make_stores = make_stores
        self._serving = self._serving_keys(evaluators, key_server_x25519)
        self._key_server_stats = key_server_stats
        self._link_counters = link_counters
        self.limits = limits or SessionLimits(48, 32, 64 * 1024 * 1024)
        self.events = events
        self._aided = {
            name: AidedEvaluators(e.program, e.worker_pool) for name, e in evaluators.items()
        }
        self.allow_client_aided = allow_client_aided
        try:
            self._streams = StreamRegistry(open_timeout, idle_timeout)
        except ValueError as error:
            raise PPInferError(str(error)) from error
        self._draining = threading.Event()

    def close(self) -> None:
        """Stop the thread that ends silent and idle sessions, and the stores' fillers."""
        self._streams.close()
        self._serving.close_stores()

    def _serving_keys(
        self, evaluators: dict[str, ModelEvaluator], key_server_x25519: bytes
    ) -> ServingKeys:
        stores = None if self._make_stores is None else self._make_stores(evaluators)
        return ServingKeys.of(evaluators, key_server_x25519, stores)

    def use_key(self, evaluators: dict[str, ModelEvaluator], key_server_x25519: bytes) -> None:
        """B rotated its key: new sessions use ``evaluators`` and their new stores; sessions
        in flight keep theirs (the old stores stop filling: those sessions make their
        own entries from now on)."""
        if set(evaluators) != set(self.evaluators):
            raise PPInferError("a new key must come with evaluators for the same models")
        old, self._serving = self._serving, self._serving_keys(evaluators, key_server_x25519)
        old.close_stores()

    @property
    def evaluators(self) -> dict[str, ModelEvaluator]:
        return self._serving.evaluators

    @property
    def key_id(self) -> str:
        """The fingerprint clients pin (both of B's public keys)."""
        return self._serving.fingerprint

    def _abort(self, context: grpc.ServicerContext, error: BaseException) -> NoReturn:
        name = error.status if isinstance(error, PPInferError) else "INTERNAL"
        if self.events is not None:
            self.events.call_failed(name)
        if isinstance(error, PPInferError):
            peer = peer_address(context.peer())
            # the detail a client is not told (InferenceFailedError) is the operator's
            cause = f" ({error.__cause__})" if isinstance(error, InferenceFailedError) else ""
            log.info(
                "call from %s ended with %s: %s%s", peer, name, error, cause,
                extra={"fields": {"peer": peer, "status": name}},
            )  # fmt: skip
        abort(context, error)

    def GetServerInfo(
        self, request: model_service_pb2.ServerInfoRequest, context: grpc.ServicerContext
    ) -> model_service_pb2.ServerInfo:
        try:
            offer = self._serving.offer(request.model, self.allow_client_aided)
        except PPInferError as error:
            self._abort(context, error)
        return offer_to_msg(offer)

    def GetStats(
        self, request: tensors_pb2.StatsRequest, context: grpc.ServicerContext
    ) -> tensors_pb2.Stats:
        # Counters tell non-zero weights, hidden widths and other tenants' activity: they
        # are for operators, on the admin listener (AdminServicer), never for clients.
        self._abort(
            context,
            ServerError(
                "PERMISSION_DENIED",
                "GetStats is served to operators only, on the model server's admin listener "
                "(--admin-listen), not on the client port",
            ),
        )

    def stats_message(self, context: grpc.ServicerContext) -> tensors_pb2.Stats:
        """A's counters and B's (fetched through A), for the admin listener."""
        counters = self.stats()
        if self._key_server_stats is not None:
            try:
                for key, value in self._key_server_stats(_remaining(context)).items():
                    counters[f"key_server.{key}"] = value
            except PPInferError as error:
                self._abort(context, error)
        return tensors_pb2.Stats(counters=counters)

    def stats(self) -> dict[str, int]:
        """A's own counters (B's are fetched by GetStats)."""
        counters: dict[str, int] = {"model_server.open_sessions": self.limits.open_sessions}
        for name, evaluator in self.evaluators.items():
            counters.update(evaluator.counters.snapshot(f"model_server.{name}."))
            store = self._serving.stores.get(name)
            if store is not None:
                for key, value in store.stats().items():
                    counters[f"model_server.{name}.store.{key}"] = value
            counters.update(self._aided[name].counters.snapshot(f"model_server.{name}.aided."))
        if self._link_counters is not None:
            counters.update(self._link_counters.snapshot("model_server.key_link."))
        return counters

    def drain(self, timeout: float) -> bool:
        """Stop taking inferences: idle sessions end now with UNAVAILABLE, busy ones after
        their inference. Returns whether every session ended within ``timeout`` seconds."""
        self._draining.set()
        deadline = time.monotonic() + timeout
        while True:
            sessions = self._streams.snapshot()
            for state in sessions:
                if not state.busy:
                    state.out.put(_shutting_down())
            if not sessions:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def Session(
        self,
        request_iterator: Iterable[model_service_pb2.ClientMessage],
        context: grpc.ServicerContext,
    ) -> Iterator[model_service_pb2.ServerMessage]:
        peer = peer_address(context.peer())
        # Counted on arrival, before the first message: a stream that never sends one
        # holds a thread too, and must not get past the limits.
        try:
            held = self.limits.session(peer)
            held.__enter__()
        except LimitExceededError as error:
            _await_first_message(request_iterator)
            self._abort(context, error)
        state = StreamState()
        context.add_callback(state.cancel)
        self._streams.add(state)
        if self.events is not None:
            self.events.session_opened()
        try:
            worker = threading.Thread(
                target=self._serve_session,
                args=(iter(request_iterator), state, peer, _remaining(context)),
                daemon=True,
                name="ppinfer-session",
            )
            worker.start()
            while True:
                item = state.out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    self._abort(context, item)
                assert isinstance(item, model_service_pb2.ServerMessage)
                yield item
                state.heard()  # answers count as activity: the client waited for them
        finally:
            held.__exit__(None, None, None)
            if self.events is not None:
                self.events.session_closed()
            self._streams.discard(state)

    def _serve_session(
        self,
        requests: Iterator[model_service_pb2.ClientMessage],
        state: StreamState,
        peer: str,
        time_remaining: float | None,
    ) -> None:
        out = state.out
        session = ModelSession(self._serving, self._open_link)
        status = "OK"
        try:
            first = next(requests, None)
            if self._draining.is_set():
                raise _shutting_down()
            if first is None or first.WhichOneof("kind") != "open":
                raise ProtocolOrderError("a session starts with an open message")
            state.opened = True
            state.heard()
            self.limits.admit_open(peer)
            if first.open.HasField("client_paillier"):
                self._serve_aided(session, first.open, requests, state, peer)
            else:
                state.session = session
                if state.cancelled.is_set():
                    session.cancel()
                self._serve_opened(session, first.open, requests, state, peer, time_remaining)
            out.put(_DONE)
        except grpc.RpcError:
            status = "CANCELLED"
            out.put(_DONE)  # the client went away; nothing to answer
        except Exception as error:
            status = error.status if isinstance(error, PPInferError) else "INTERNAL"
            out.put(error)
        finally:
            session.close()
            log.info(
                "session %s from %s ended after %d inferences: %s",
                session.session_id[:8], peer, state.inferences, status,
                extra={"fields": {"session": session.session_id[:8], "peer": peer,
                                  "inferences": state.inferences, "status": status}},
            )  # fmt: skip

    def _serve_opened(
        self,
        session: ModelSession,
        open_: model_service_pb2.OpenSession,
        requests: Iterator[model_service_pb2.ClientMessage],
        state: StreamState,
        peer: str,
        time_remaining: float | None,
    ) -> None:
        """A two-server session: decode, call the session, encode."""
        out = state.out
        opened = session.open(open_from_msg(open_), time_remaining)
        out.put(model_service_pb2.ServerMessage(opened=opened_to_msg(opened)))
        model = session.evaluator.plan.name
        for message in self._inferences(requests, state):
            request = infer_request_from_msg(message.infer)
            progress = _progress(out, request.request_id, open_.progress)
            with state.computing(), self.limits.holding(peer, message.ByteSize()):
                started = time.perf_counter()
                result = session.infer(request, progress)
                self._count(model, "two-server", time.perf_counter() - started)
            out.put(model_service_pb2.ServerMessage(result=infer_result_to_msg(result)))

    def _inferences(
        self, requests: Iterator[model_service_pb2.ClientMessage], state: StreamState
    ) -> Iterator[model_service_pb2.ClientMessage]:
        """The session's infer messages, until the client closes it or A drains."""
        for message in requests:
            state.heard()
            kind = message.WhichOneof("kind")
            if kind == "close":
                return
            if kind != "infer":
                raise ProtocolOrderError(f"unexpected {kind or 'empty'} message in a session")
            if self._draining.is_set():
                raise _shutting_down()
            yield message

    def _serve_aided(
        self,
        session: ModelSession,
        open_: model_service_pb2.OpenSession,
        requests: Iterator[model_service_pb2.ClientMessage],
        state: StreamState,
        peer: str,
    ) -> None:
        """A client-aided session: the same plan under the client's key, no B involved."""
        evaluator = session.model(open_from_msg(open_))
        if not self.allow_client_aided:
            raise ModeDisabledError(
                "client-aided sessions are off on this model server: the mode trusts the "
                "client's Paillier key (a malformed one reads the weights), so it is for "
                "benchmarking only; an operator enables it with --allow-client-aided"
            )
        session_id = session.session_id
        out = state.out
        public = client_public_key(open_.client_paillier)
        aided = self._aided[evaluator.plan.name].get(public)
        out.put(_opened(session_id, public.key_id))
        for message in self._inferences(requests, state):
            progress = _progress(out, message.infer.request_id, open_.progress)
            with state.computing(), self.limits.holding(peer, message.ByteSize()):
                result = run_aided_inference(
                    aided, session_id, message.infer, requests, out.put, progress
                )
            self._count(evaluator.plan.name, "client-aided", None)
            out.put(model_service_pb2.ServerMessage(result=result))

    def _count(self, model: str, mode: str, seconds: float | None) -> None:
        if self.events is not None:
            self.events.inference_done(model, mode, seconds)


#: How long a stream refused at arrival may take to send its first message: a client
#: writes open right after starting the stream, and grpc.aio reports a write to a stream
#: the server already closed as INTERNAL instead of the server's status (grpc#36066).
REFUSAL_GRACE_SECONDS = 1.0


def _await_first_message(requests: Iterable[model_service_pb2.ClientMessage]) -> None:
    """Wait up to REFUSAL_GRACE_SECONDS for a refused stream's first message (on a thread
    of its own: a silent client must not hold this one longer), so that the client reads
    the refusal's status rather than a failed write."""
    reader = threading.Thread(target=next, args=(iter(requests), None), daemon=True)
    reader.start()
    reader.join(REFUSAL_GRACE_SECONDS)


def _remaining(context: grpc.ServicerContext) -> float | None:
    """Seconds to the client's deadline; None if it set none (grpc then says ~2^63)."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > NO_DEADLINE_SECONDS else float(remaining)


def _shutting_down() -> ServerError:
    return ServerError(
        "UNAVAILABLE",
        "the model server is shutting down; open a new session (requests not answered "
        "were not processed)",
    )


def _opened(session_id: str, key_id: str) -> model_service_pb2.ServerMessage:
    return model_service_pb2.ServerMessage(opened=opened_to_msg(Opened(session_id, key_id, b"")))


def _progress(out: queue.Queue[object], request_id: int, wanted: bool) -> Progress | None:
    """Progress events for the client, if it asked for them at open."""
    if not wanted:
        return None

    def progress(layer: int, layers: int) -> None:
        event = ProgressEvent(request_id, layer, layers)
        out.put(model_service_pb2.ServerMessage(progress=progress_to_msg(event)))

    return progress


def create_model_server(
    servicer: ModelServicer,
    listen: str = "127.0.0.1:0",
    max_workers: int = 64,
    tls: ServerTls | None = None,
) -> Listening:
    """A model server bound to ``listen`` (not yet started)."""
    return create_server(
        lambda server: model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server),
        "ppinfer.v1.ModelService",
        listen,
        max_workers,
        tls,
    )
