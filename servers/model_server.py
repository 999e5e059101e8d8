"""Model server A over gRPC: client sessions, relayed to key server B, evaluated by A.

A ``Session`` stream starts with ``open`` (A relays the client's ephemeral key to B), then
carries any number of ``infer`` messages; A answers each with one result (after progress
events, if the client asked for them), in request order. An ``open`` with the client's
own Paillier key starts a client-aided session instead (the baseline,
:mod:`ppinfer.servers.aided`). A failure ends the stream with its status and message;
other clients' sessions are untouched, and A stays up when B is down.
"""

from __future__ import annotations

import queue
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator

import grpc

from ppinfer.codec import decode_int64_tensor, encode_signed
from ppinfer.counters import Counters
from ppinfer.errors import KeyMismatchError, PPInferError, ProtocolOrderError, UnknownModelError
from ppinfer.servers.aided import AidedEvaluators, client_public_key, run_aided_inference
from ppinfer.servers.evaluator import KeyLink, ModelEvaluator, Progress
from ppinfer.servers.grpc_server import create_server
from ppinfer.servers.status import abort, log
from ppinfer.v1 import model_service_pb2, model_service_pb2_grpc, tensors_pb2

__all__ = ["ModelServicer", "create_model_server"]

_DONE = object()


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(
        self,
        evaluators: dict[str, ModelEvaluator],
        open_link: Callable[[], KeyLink],
        key_server_x25519: bytes,
        key_server_stats: Callable[[], dict[str, int]] | None = None,
        link_counters: Counters | None = None,
    ) -> None:
        if not evaluators:
            raise PPInferError("a model server needs at least one model")
        self.evaluators = evaluators
        self._open_link = open_link
        self._x25519 = key_server_x25519
        self._key_server_stats = key_server_stats
        self._link_counters = link_counters
        self.key_id = next(iter(evaluators.values())).public.key_id
        self._aided = {name: AidedEvaluators(e.plan) for name, e in evaluators.items()}

    def _evaluator(self, name: str) -> ModelEvaluator:
        if not name and len(self.evaluators) == 1:
            return next(iter(self.evaluators.values()))
        evaluator = self.evaluators.get(name)
        if evaluator is None:
            raise UnknownModelError(
                f"no model {name!r} on this server; it serves: {', '.join(sorted(self.evaluators))}"
            )
        return evaluator

    def GetServerInfo(
        self, request: model_service_pb2.ServerInfoRequest, context: grpc.ServicerContext
    ) -> model_service_pb2.ServerInfo:
        try:
            evaluator = self._evaluator(request.model)
        except PPInferError as error:
            abort(context, error)
        plan, public = evaluator.plan, evaluator.public
        return model_service_pb2.ServerInfo(
            model=model_service_pb2.ModelInfo(
                name=plan.name,
                input_shape=list(plan.input_shape),
                output_shape=[plan.outputs],
                input_frac_bits=plan.input_format.frac_bits,
                input_value_bits=plan.input_format.value_bits,
                output_frac_bits=evaluator.numerics.output_scale,
                mask_sigma=plan.masks.sigma,
                client_activation=plan.client_activation,
                layers=evaluator.steps,
            ),
            paillier=tensors_pb2.PaillierPublicKey(
                bits=public.bits,
                n=int(public.n).to_bytes((public.bits + 7) // 8, "big"),
                key_id=public.key_id,
            ),
            key_server_x25519=self._x25519,
            key_id=public.key_id,
        )

    def GetStats(
        self, request: tensors_pb2.StatsRequest, context: grpc.ServicerContext
    ) -> tensors_pb2.Stats:
        counters: dict[str, int] = {}
        for name, evaluator in self.evaluators.items():
            counters.update(evaluator.counters.snapshot(f"model_server.{name}."))
            counters.update(self._aided[name].counters.snapshot(f"model_server.{name}.aided."))
        if self._link_counters is not None:
            counters.update(self._link_counters.snapshot("model_server.key_link."))
        if self._key_server_stats is not None:
            try:
                for key, value in self._key_server_stats().items():
                    counters[f"key_server.{key}"] = value
            except PPInferError as error:
                abort(context, error)
        return tensors_pb2.Stats(counters=counters)

    def Session(
        self,
        request_iterator: Iterable[model_service_pb2.ClientMessage],
        context: grpc.ServicerContext,
    ) -> Iterator[model_service_pb2.ServerMessage]:
        out: queue.Queue[object] = queue.Queue()
        worker = threading.Thread(
            target=self._serve_session,
            args=(iter(request_iterator), out),
            daemon=True,
            name="ppinfer-session",
        )
        worker.start()
        while True:
            item = out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                abort(context, item)
            assert isinstance(item, model_service_pb2.ServerMessage)
            yield item

    def _serve_session(
        self, requests: Iterator[model_service_pb2.ClientMessage], out: queue.Queue[object]
    ) -> None:
        link: KeyLink | None = None
        session_id = secrets.token_hex(16)
        try:
            first = next(requests, None)
            if first is None or first.WhichOneof("kind") != "open":
                raise ProtocolOrderError("a session starts with an open message")
            evaluator = self._evaluator(first.open.model)
            if first.open.HasField("client_paillier"):
                self._serve_aided(evaluator, session_id, first.open, requests, out)
                out.put(_DONE)
                return
            expected = first.open.expected_key_id
            if expected and expected != evaluator.public.key_id:
                raise KeyMismatchError(
                    f"pinned key id {expected[:16]}... does not match the key server's "
                    f"{evaluator.public.key_id[:16]}...: refusing the session"
                )
            link = self._open_link()
            link.derive(session_id, bytes(first.open.client_x25519))
            out.put(_opened(session_id, evaluator.public.key_id))
            for message in _inferences(requests):
                progress = _progress(out, message.infer.request_id, first.open.progress)
                out.put(self._infer(evaluator, link, session_id, message.infer, progress))
            out.put(_DONE)
        except grpc.RpcError:
            out.put(_DONE)  # the client went away; nothing to answer
        except Exception as error:
            out.put(error)
        finally:
            if link is not None:
                _close_quietly(link, session_id)

    def _serve_aided(
        self,
        evaluator: ModelEvaluator,
        session_id: str,
        open_: model_service_pb2.OpenSession,
        requests: Iterator[model_service_pb2.ClientMessage],
        out: queue.Queue[object],
    ) -> None:
        """A client-aided session: the same plan under the client's key, no B involved."""
        public = client_public_key(open_.client_paillier)
        aided = self._aided[evaluator.plan.name].get(public)
        out.put(_opened(session_id, public.key_id))
        for message in _inferences(requests):
            progress = _progress(out, message.infer.request_id, open_.progress)
            result = run_aided_inference(
                aided, session_id, message.infer, requests, out.put, progress
            )
            out.put(model_service_pb2.ServerMessage(result=result))

    def _infer(
        self,
        evaluator: ModelEvaluator,
        link: KeyLink,
        session_id: str,
        request: model_service_pb2.InferRequest,
        progress: Progress | None,
    ) -> model_service_pb2.ServerMessage:
        request_id = request.request_id
        masked = decode_int64_tensor(request.masked_input)
        outcome = evaluator.infer(link, session_id, request_id, masked, progress)
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


def _opened(session_id: str, key_id: str) -> model_service_pb2.ServerMessage:
    return model_service_pb2.ServerMessage(
        opened=model_service_pb2.SessionOpened(session_id=session_id, key_id=key_id)
    )


def _inferences(
    requests: Iterator[model_service_pb2.ClientMessage],
) -> Iterator[model_service_pb2.ClientMessage]:
    """The session's infer messages, until the client closes it."""
    for message in requests:
        kind = message.WhichOneof("kind")
        if kind == "close":
            return
        if kind != "infer":
            raise ProtocolOrderError(f"unexpected {kind or 'empty'} message in a session")
        yield message


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


def create_model_server(
    servicer: ModelServicer, listen: str = "127.0.0.1:0", max_workers: int = 64
) -> tuple[grpc.Server, int]:
    """A model server bound to ``listen`` (not yet started); returns it and its port."""
    return create_server(
        lambda server: model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server),
        "ppinfer.v1.ModelService",
        listen,
        max_workers,
    )
