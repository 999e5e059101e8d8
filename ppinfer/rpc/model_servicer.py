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
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NoReturn

import grpc

from ppinfer.encoding.wire_bytes import encode_signed
from ppinfer.errors import (
    InferenceFailedError,
    KeyMismatchError,
    LimitExceededError,
    ModeDisabledError,
    PPInferError,
    ProtocolOrderError,
    ProtocolRevisionError,
    ServerError,
    UnknownModelError,
)
from ppinfer.paillier import PublicKey
from ppinfer.protocol.counters import Counters
from ppinfer.protocol.model_evaluator import KeyLink, ModelEvaluator, Prepared, Progress
from ppinfer.protocol.revision import PROTOCOL_REVISION
from ppinfer.protocol.session_keys import key_server_fingerprint
from ppinfer.rpc.aided_servicer import AidedEvaluators, client_public_key, run_aided_inference
from ppinfer.rpc.server_events import ServerEvents
from ppinfer.rpc.server_factory import Listening, create_server
from ppinfer.rpc.session_limits import SessionLimits, peer_address
from ppinfer.rpc.session_streams import StreamRegistry, StreamState
from ppinfer.rpc.status import abort, log
from ppinfer.rpc.tensor_messages import decode_int64_tensor
from ppinfer.rpc.tls import ServerTls
from ppinfer.v1 import model_service_pb2, model_service_pb2_grpc, tensors_pb2

__all__ = ["ModelServicer", "create_model_server"]

_DONE = object()
#: A deadline further away than this (about 30 years) is no deadline.
NO_DEADLINE_SECONDS = 1e9
#: Longest model name a client may ask for.
MAX_NAME_CHARS = 256


@dataclass(frozen=True)
class _ServingKeys:
    """What new sessions use: an evaluator per model under B's current Paillier key, B's
    X25519 key, and the fingerprint over both that clients pin."""

    evaluators: dict[str, ModelEvaluator]
    x25519: bytes
    fingerprint: str

    def evaluator(self, name: str) -> ModelEvaluator:
        if len(name) > MAX_NAME_CHARS:
            raise PPInferError(f"a model name has at most {MAX_NAME_CHARS} characters")
        if not name and len(self.evaluators) == 1:
            return next(iter(self.evaluators.values()))
        evaluator = self.evaluators.get(name)
        if evaluator is None:
            raise UnknownModelError(
                f"no model {name!r} on this server; it serves: {', '.join(sorted(self.evaluators))}"
            )
        return evaluator


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
    ) -> None:
        """``allow_client_aided`` admits the client-aided baseline, which trusts the
        client's Paillier key (benchmarking only). A stream that sends no ``open`` within
        ``open_timeout`` seconds, or an opened session that sends nothing and waits for
        nothing for ``idle_timeout`` seconds, is ended."""
        if not evaluators:
            raise PPInferError("a model server needs at least one model")
        self._open_link = open_link
        self._use(evaluators, key_server_x25519)
        self._key_server_stats = key_server_stats
        self._link_counters = link_counters
        self.limits = limits or SessionLimits(48, 32, 64 * 1024 * 1024)
        self.events = events
        self._aided = {name: AidedEvaluators(e.plan) for name, e in evaluators.items()}
        self.allow_client_aided = allow_client_aided
        try:
            self._streams = StreamRegistry(open_timeout, idle_timeout)
        except ValueError as error:
            raise PPInferError(str(error)) from error
        self._draining = threading.Event()

    @property
    def _client_aided_mode(self) -> model_service_pb2.ClientAided:
        if self.allow_client_aided:
            return model_service_pb2.CLIENT_AIDED_BENCHMARK_ONLY_TRUSTS_CLIENT_KEY
        return model_service_pb2.CLIENT_AIDED_DISABLED

    def close(self) -> None:
        """Stop the thread that ends silent and idle sessions."""
        self._streams.close()

    def _use(self, evaluators: dict[str, ModelEvaluator], key_server_x25519: bytes) -> None:
        public = next(iter(evaluators.values())).public
        # one assignment: a session never pairs one key's evaluator with another's X25519 key
        self._serving = _ServingKeys(
            evaluators,
            key_server_x25519,
            key_server_fingerprint(public.n_bytes, key_server_x25519),
        )

    def use_key(self, evaluators: dict[str, ModelEvaluator], key_server_x25519: bytes) -> None:
        """B rotated its key: new sessions use ``evaluators``; sessions in flight keep theirs."""
        if set(evaluators) != set(self.evaluators):
            raise PPInferError("a new key must come with evaluators for the same models")
        self._use(evaluators, key_server_x25519)

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
        serving = self._serving
        try:
            evaluator = serving.evaluator(request.model)
        except PPInferError as error:
            self._abort(context, error)
        plan, public = evaluator.plan, evaluator.public
        return model_service_pb2.ServerInfo(
            model=model_service_pb2.ModelInfo(
                name=plan.name,
                input_shape=list(plan.input_shape),
                output_shape=[plan.outputs],
                input_frac_bits=plan.input_format.frac_bits,
                input_value_bits=plan.input_format.value_bits,
                output_frac_bits=evaluator.numerics.sealed_scale,
                output_modulus_bits=evaluator.numerics.sealed_modulus_bits,
                aided_output_frac_bits=evaluator.numerics.output_scale,
                mask_sigma=plan.masks.sigma,
                client_activation=plan.client_activation,
                layers=evaluator.steps,
            ),
            paillier=tensors_pb2.PaillierPublicKey(
                bits=public.bits, n=public.n_bytes, key_id=public.key_id
            ),
            key_server_x25519=serving.x25519,
            key_id=serving.fingerprint,
            client_aided=self._client_aided_mode,
        )

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
        session_id = secrets.token_hex(16)
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
            self._serve_opened(first.open, requests, state, peer, session_id, time_remaining)
            out.put(_DONE)
        except grpc.RpcError:
            status = "CANCELLED"
            out.put(_DONE)  # the client went away; nothing to answer
        except Exception as error:
            status = error.status if isinstance(error, PPInferError) else "INTERNAL"
            out.put(error)
        finally:
            if state.link is not None:
                _close_quietly(state.link, session_id)
            log.info(
                "session %s from %s ended after %d inferences: %s",
                session_id[:8], peer, state.inferences, status,
                extra={"fields": {"session": session_id[:8], "peer": peer,
                                  "inferences": state.inferences, "status": status}},
            )  # fmt: skip

    def _serve_opened(
        self,
        open_: model_service_pb2.OpenSession,
        requests: Iterator[model_service_pb2.ClientMessage],
        state: StreamState,
        peer: str,
        session_id: str,
        time_remaining: float | None,
    ) -> None:
        out = state.out
        if open_.protocol != PROTOCOL_REVISION:
            older = open_.protocol < PROTOCOL_REVISION
            raise ProtocolRevisionError(
                f"the client speaks protocol revision {open_.protocol}, "
                f"{'older' if older else 'newer'} than this model server's "
                f"{PROTOCOL_REVISION}: upgrade the ppinfer "
                f"{'client' if older else 'model server'}"
            )
        serving = self._serving
        evaluator = serving.evaluator(open_.model)
        if open_.HasField("client_paillier"):
            if not self.allow_client_aided:
                raise ModeDisabledError(
                    "client-aided sessions are off on this model server: the mode trusts the "
                    "client's Paillier key (a malformed one reads the weights), so it is for "
                    "benchmarking only; an operator enables it with --allow-client-aided"
                )
            self._serve_aided(evaluator, session_id, open_, requests, state, peer)
            return
        expected = open_.expected_key_id.lower()  # a prefix of it, as the client pins it
        if expected and not serving.fingerprint.startswith(expected):
            raise KeyMismatchError(
                f"pinned key id {expected[:16]}... does not match the key server's "
                f"{serving.fingerprint[:16]}...: refusing the session"
            )
        state.link = self._open_link(evaluator.public, time_remaining)
        if state.cancelled.is_set():
            state.cancel()
        salt = state.link.derive(session_id, bytes(open_.client_x25519))
        out.put(_opened(session_id, serving.fingerprint, salt))
        # idle until the first request (ids count from 1): prepare it
        prepared = self._prepare_next(open_, evaluator, state.link, session_id, 1)
        for message in self._inferences(requests, state):
            request_id = message.infer.request_id
            progress = _progress(out, request_id, open_.progress)
            with state.computing(), self.limits.holding(peer, message.ByteSize()):
                result = self._infer(
                    evaluator, state.link, session_id, message.infer, progress, prepared
                )
            out.put(result)
            # idle time until the client's next request: prepare the id it will use
            prepared = self._prepare_next(open_, evaluator, state.link, session_id, request_id + 1)

    def _prepare_next(
        self,
        open_: model_service_pb2.OpenSession,
        evaluator: ModelEvaluator,
        link: KeyLink,
        session_id: str,
        request_id: int,
    ) -> Prepared | None:
        """Session precomputation, if the session asked for it: the offline half of
        ``request_id`` while the client is idle (None: not asked, draining, or failed)."""
        if not open_.precompute or self._draining.is_set() or request_id >= 2**64:
            return None
        try:
            return evaluator.prepare(link, session_id, request_id)
        except PPInferError as error:  # optional work: the online path will say
            log.debug("precomputation for session %s failed: %s", session_id[:8], error)
            return None

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
        evaluator: ModelEvaluator,
        session_id: str,
        open_: model_service_pb2.OpenSession,
        requests: Iterator[model_service_pb2.ClientMessage],
        state: StreamState,
        peer: str,
    ) -> None:
        """A client-aided session: the same plan under the client's key, no B involved."""
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

    def _infer(
        self,
        evaluator: ModelEvaluator,
        link: KeyLink,
        session_id: str,
        request: model_service_pb2.InferRequest,
        progress: Progress | None,
        prepared: Prepared | None = None,
    ) -> model_service_pb2.ServerMessage:
        request_id = request.request_id
        started = time.perf_counter()
        masked = decode_int64_tensor(request.masked_input)
        outcome = evaluator.infer(link, session_id, request_id, masked, progress, prepared)
        self._count(evaluator.plan.name, "two-server", time.perf_counter() - started)
        return model_service_pb2.ServerMessage(
            result=model_service_pb2.InferResult(
                request_id=request_id,
                sealed_output=outcome.sealed,
                output_mask=tensors_pb2.BigIntVector(
                    width=outcome.value_bytes,
                    data=encode_signed(outcome.output_mask, outcome.value_bytes),
                ),
                output_permutation=outcome.permutation,
            )
        )


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


def _opened(session_id: str, key_id: str, salt: bytes = b"") -> model_service_pb2.ServerMessage:
    return model_service_pb2.ServerMessage(
        opened=model_service_pb2.SessionOpened(session_id=session_id, key_id=key_id, key_salt=salt)
    )


def _progress(out: queue.Queue[object], request_id: int, wanted: bool) -> Progress | None:
    """Progress events for the client, if it asked for them at open."""
    if not wanted:
        return None

    def progress(layer: int, layers: int) -> None:
        out.put(
            model_service_pb2.ServerMessage(
                progress=model_service_pb2.Progress(
                    request_id=request_id, layer=layer, layers=layers
                )
            )
        )

    return progress


def _close_quietly(link: KeyLink, session_id: str) -> None:
    try:
        link.end(session_id)
        close = getattr(link, "close", None)
        if close is not None:
            close()
    except Exception:  # ending a session must never raise into the server
        log.debug("ending session %s on the key server failed", session_id[:8], exc_info=True)


class AdminServicer(model_service_pb2_grpc.ModelServiceServicer):
    """The operators' listener: GetStats, and nothing else (the generated base class
    answers UNIMPLEMENTED for sessions)."""

    def __init__(self, servicer: ModelServicer) -> None:
        self._servicer = servicer

    def GetStats(
        self, request: tensors_pb2.StatsRequest, context: grpc.ServicerContext
    ) -> tensors_pb2.Stats:
        return self._servicer.stats_message(context)


def create_admin_server(
    servicer: ModelServicer, listen: str, tls: ServerTls | None = None
) -> Listening:
    """A's admin listener (GetStats for operators), bound to ``listen``, not yet started."""
    return create_server(
        lambda server: model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            AdminServicer(servicer), server
        ),
        "ppinfer.v1.ModelService",
        listen,
        4,
        tls,
    )


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
