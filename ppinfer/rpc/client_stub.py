"""The client stub: a session with model server A, private predictions over one stream.

    with Client("localhost:50051") as client:
        logits = client.predict(x)
        for logits in client.predict_stream(windows):  # continuous monitoring
            ...

Per inference the client computes a ChaCha20 mask and an int64 addition, sends one
message, and opens one sealed result. It needs grpcio, protobuf, numpy and cryptography.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Self

import grpc
import numpy as np
import numpy.typing as npt

from ppinfer.errors import PPInferError, ProtocolOrderError, ServerError
from ppinfer.protocol.client_session import (
    ClientSession,
    ClientStats,
    ModelDescription,
    canonical_pin,
)
from ppinfer.protocol.session_messages import MAX_TICKETS, ServerOffer
from ppinfer.rpc.channel_options import CHANNEL_OPTIONS
from ppinfer.rpc.client_transport import StreamEnded, StreamTransport
from ppinfer.rpc.session_converters import (
    infer_request_to_msg,
    infer_result_from_msg,
    offer_from_msg,
    open_to_msg,
    opened_from_msg,
    progress_from_msg,
)
from ppinfer.rpc.tls import ChannelTls
from ppinfer.v1 import model_service_pb2

__all__ = ["Client", "ProgressCallback", "framing_bytes", "server_error"]

#: Backoff before reopening a failed session: doubles from the first to the most, seconds.
RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 4.0

#: Called with (request id, steps done, steps in all) as A reports each layer.
ProgressCallback = Callable[[int, int, int], None]


#: HTTP/2's default largest DATA frame, and the header each frame carries (RFC 9113).
HTTP2_FRAME_BYTES = 16_384
HTTP2_FRAME_HEADER_BYTES = 9
#: gRPC's prefix on every message: a compression flag and a 4-byte length.
GRPC_PREFIX_BYTES = 5


def framing_bytes(message_bytes: int) -> int:
    """An estimate of what a message costs on the wire beyond its serialized bytes: gRPC's
    prefix and one HTTP/2 frame header per 16 KiB (no padding; stream headers, pings and
    TLS records are left out)."""
    frames = max(1, -(-(message_bytes + GRPC_PREFIX_BYTES) // HTTP2_FRAME_BYTES))
    return GRPC_PREFIX_BYTES + HTTP2_FRAME_HEADER_BYTES * frames


def server_error(error: grpc.RpcError) -> ServerError:
    """A failed call as the ServerError a user reads: its status and A's message."""
    code = error.code() if hasattr(error, "code") else None
    name = code.name if code is not None else "UNKNOWN"
    details = error.details() if hasattr(error, "details") else str(error)
    details = (details or "").removesuffix(": OK")  # gRPC appends the subchannel's status
    if details and "handshake failed" in details.lower():
        details = (
            "the TLS handshake with the model server failed: its certificate is not signed "
            "by a CA this client trusts (pass its CA: --ca FILE, or ChannelTls.from_files"
            "(ca=...)), or does not name the address you dialled (--server-name). "
            f"grpc said: {details}"
        )
    return ServerError(name, details or "no details")


class Client:
    """A private-inference session with a model server (context manager)."""

    def __init__(
        self,
        address: str,
        model: str = "",
        expected_key_id: str | None = None,
        timeout: float = 120.0,
        max_in_flight: int = 2,
        on_progress: ProgressCallback | None = None,
        tls: ChannelTls | None = None,
        insecure: bool = False,
        retries: int = 2,
        precompute: bool = False,
    ) -> None:
        """``on_progress(request_id, step, steps)`` asks A for an event per layer (each
        one a message the client receives: leave it out to spend the least).

        The channel is TLS, checked against ``tls.ca`` (default: the system's CAs);
        ``insecure=True`` is plaintext, for development only. A session that fails with
        UNAVAILABLE (A restarting or draining, B restarting) is reopened and its
        unanswered inputs sent again up to ``retries`` times, with backoff: a new session
        has new keys and new request ids, so no mask is ever used twice.

        ``max_in_flight`` requests are pipelined (at most 8): the session holds a ticket
        (its mask seed, from B) for each of them ahead, and every ticket costs the servers
        a precomputed request entry, spent when the session ends even if never used.

        ``precompute`` does nothing (kept so that older callers run): since protocol
        revision 3 every request is precomputed, by the model server's store."""
        self.address = address
        self.timeout = timeout
        self.on_progress = on_progress
        self.max_in_flight = min(MAX_TICKETS, max(1, max_in_flight))
        self.stats = ClientStats()
        self._model_name = model
        self._expected_key_id = canonical_pin(expected_key_id)
        if insecure and tls is not None:
            raise PPInferError("insecure=True and tls contradict each other: choose one")
        self.retries = max(0, retries)
        del precompute  # a no-op since protocol revision 3 (see above)
        self._transport = StreamTransport(
            address, CHANNEL_OPTIONS, None if insecure else (tls or ChannelTls())
        )
        self._streaming = False
        self._session: ClientSession | None = None
        self._in_flight = 0  # requests sent on this session whose results are not read
        self._closed = False
        self.model: ModelDescription | None = None

    def __enter__(self) -> Self:
        try:
            self.open()
        except BaseException:
            self.close()  # a refused session must not leave its channel and thread behind
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Fetch the model's description and B's keys, check the pin, open the session.

        Called again after a failed session, it opens a new one (new keys)."""
        if self._closed:
            raise ProtocolOrderError("this client is closed; make a new Client")
        try:
            info = self._transport.server_info(
                model_service_pb2.ServerInfoRequest(model=self._model_name), self.timeout
            )
        except grpc.RpcError as error:
            raise server_error(error) from error
        self._begin(offer_from_msg(info))

    def _begin(self, offer: ServerOffer) -> None:
        """Check A's offer, open the stream and the session on it."""
        session = ClientSession(
            offer,
            self._expected_key_id,
            progress=self.on_progress is not None,
            tickets=self.max_in_flight,
        )
        self.model = session.model
        self._open_stream()
        self._send(model_service_pb2.ClientMessage(open=open_to_msg(session.open_request)))
        session.opened(opened_from_msg(self._opened()))
        self._session = session

    def _open_stream(self) -> None:
        self._transport.open_stream()
        self._streaming = True

    def _opened(self) -> model_service_pb2.SessionOpened:
        """A's answer to open."""
        message = self._receive()
        if message.WhichOneof("kind") != "opened":
            raise ProtocolOrderError("the model server did not open the session")
        return message.opened

    @property
    def session_id(self) -> str:
        """The id A gave the current session (empty before the first one opens)."""
        return self._session.session_id if self._session is not None else ""

    def close(self) -> None:
        """End the session and the channel; the client cannot be used after this."""
        if self._streaming:
            self._send(model_service_pb2.ClientMessage(close=model_service_pb2.CloseSession()))
            self._streaming = False
        self._closed = True
        self._transport.close()

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The model's logits for one input (before any client-side softmax)."""
        [logits] = list(self.predict_stream([x]))
        return logits

    def predict_stream(self, inputs: Iterable[npt.ArrayLike]) -> Iterator[npt.NDArray[np.float64]]:
        """Logits for each input, in order, with up to ``max_in_flight`` requests pipelined.

        If the session fails with UNAVAILABLE, a new one is opened (after a backoff) and
        the inputs not yet answered are sent again, up to ``retries`` times in a row.
        Stopping early (leaving the loop, or an input refused on the way, which names its
        position) leaves the client usable: the session whose results are still due is
        dropped, and the next call opens a new one (new keys: no mask is ever reused)."""
        if self._in_flight:  # an earlier stream was left with results due
            self._abandon_session()
        pending: deque[tuple[int | None, npt.ArrayLike]] = deque()  # (request id, input)
        source = enumerate(inputs)
        exhausted = False
        failures = 0
        first_failure: ServerError | None = None  # the reason, before any retry's own
        try:
            while pending or not exhausted:
                try:
                    if not self._streaming and self.model is not None:
                        self.open()  # the session failed: a new one, with new keys
                    for index, (request_id, x) in enumerate(pending):
                        if request_id is None:
                            pending[index] = (self._submit(x), x)
                    while not exhausted and len(pending) < self.max_in_flight:
                        drawn = next(source, None)
                        if drawn is None:
                            exhausted = True
                            break
                        position, item = drawn
                        pending.append((self._submit_numbered(position, item), item))
                    if not pending:
                        break
                    request_id, _ = pending[0]
                    assert request_id is not None
                    logits = self._result(request_id)
                except ServerError as error:
                    if error.status != "UNAVAILABLE" or failures >= self.retries:
                        if first_failure is None or first_failure.message == error.message:
                            raise
                        raise ServerError(
                            first_failure.status,
                            f"{first_failure.message} (retrying: {error.message})",
                        ) from error
                    first_failure = first_failure or error
                    failures += 1
                    self._abandon_session()
                    time.sleep(min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (failures - 1)))
                    pending = deque((None, x) for _, x in pending)
                    continue
                pending.popleft()
                failures, first_failure = 0, None
                yield logits
        finally:
            if self._in_flight and self._streaming:
                self._abandon_session()  # stopped early: its results are not read

    def _submit_numbered(self, position: int, x: npt.ArrayLike) -> int:
        """:meth:`_submit`, naming the input's position in the stream if it is refused."""
        try:
            return self._submit(x)
        except ServerError:
            raise
        except PPInferError as error:
            raise type(error)(f"input {position}: {error}") from error

    def _abandon_session(self) -> None:
        """Forget a session; its request ids and keys are never used again."""
        self._streaming = False
        self._session = None
        self._in_flight = 0
        self._transport.end_stream()

    def _submit(self, x: npt.ArrayLike) -> int:
        session = self._require_session()
        started = time.thread_time()
        request = session.request(x)
        message = model_service_pb2.ClientMessage(infer=infer_request_to_msg(request))
        self.stats.cpu_seconds += time.thread_time() - started
        self._send(message)
        self._in_flight += 1
        return request.request_id

    def _result(self, request_id: int) -> npt.NDArray[np.float64]:
        session = self._require_session()
        while True:
            message = self._receive()
            kind = message.WhichOneof("kind")
            if kind == "result":
                break
            self._handle_progress(message)
        self._in_flight -= 1
        started = time.thread_time()
        logits = session.result(infer_result_from_msg(message.result), request_id)
        self.stats.cpu_seconds += time.thread_time() - started
        self.stats.inferences += 1
        return logits

    def _handle_progress(self, message: model_service_pb2.ServerMessage) -> None:
        if message.WhichOneof("kind") == "progress" and self.on_progress is not None:
            event = progress_from_msg(message.progress)
            self.on_progress(event.request_id, event.layer, event.layers)

    def _require_session(self) -> ClientSession:
        if self._session is None or not self._streaming:
            raise ProtocolOrderError("the client is not open: use it as a context manager")
        return self._session

    def _send(self, message: model_service_pb2.ClientMessage) -> None:
        size = message.ByteSize()
        self.stats.bytes_up += size
        self.stats.messages_up += 1
        self.stats.framing_up += framing_bytes(size)
        try:
            self._transport.send(message)
        except StreamEnded as error:
            raise ProtocolOrderError("the session is closed") from error

    def _receive(self) -> model_service_pb2.ServerMessage:
        if not self._streaming:
            raise ProtocolOrderError("the session is closed")
        try:
            message = self._transport.receive(self.timeout)
        except grpc.RpcError as error:
            self._streaming = False
            raise server_error(error) from error
        except StreamEnded as error:
            self._streaming = False
            raise PPInferError("the model server ended the session") from error
        except TimeoutError as error:
            raise PPInferError(
                f"no answer from the model server in {self.timeout:.0f} s; it may be overloaded"
            ) from error
        size = message.ByteSize()
        self.stats.bytes_down += size
        self.stats.messages_down += 1
        self.stats.framing_down += framing_bytes(size)
        return message
