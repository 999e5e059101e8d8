"""The client's gRPC transport: one channel driven by asyncio on a background thread.

grpcio's synchronous API waits for a stream message by waking every 100 ms (and its
channel thread every 200 ms); on a phone that waiting is most of the client's CPU while A
and B compute (about 1.6 ms per second of waiting, measured on this project's machine,
against about 0.4 ms with grpc.aio). Here the event loop owns the channel and the
stream; the caller's thread blocks on a plain queue, which costs nothing while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc

from ppinfer.rpc.tls import ChannelTls
from ppinfer.v1 import model_service_pb2, model_service_pb2_grpc

__all__ = ["StreamEnded", "StreamTransport"]

T = TypeVar("T")
_CLOSE = object()


class StreamEnded(Exception):
    """The server ended the session stream without an error status."""


class StreamTransport:
    """A channel to model server A: unary calls, and one session stream at a time."""

    def __init__(
        self, address: str, options: list[tuple[str, Any]], tls: ChannelTls | None
    ) -> None:
        """``tls`` None is plaintext: only for callers that asked for it explicitly."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ppinfer-client-io", daemon=True
        )
        self._thread.start()
        self._channel: grpc.aio.Channel = self._run(self._connect(address, options, tls))
        self._stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._inbox: queue.Queue[object] = queue.Queue()
        self._outbox: asyncio.Queue[object] | None = None
        self._call: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @staticmethod
    async def _connect(
        address: str, options: list[tuple[str, Any]], tls: ChannelTls | None
    ) -> grpc.aio.Channel:
        if tls is None:
            return grpc.aio.insecure_channel(address, options=options)
        return grpc.aio.secure_channel(
            address, tls.credentials(), options=[*options, *tls.options()]
        )

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def server_info(
        self, request: model_service_pb2.ServerInfoRequest, timeout: float
    ) -> model_service_pb2.ServerInfo:
        async def call() -> model_service_pb2.ServerInfo:
            info: model_service_pb2.ServerInfo = await self._stub.GetServerInfo(
                request, timeout=timeout
            )
            return info

        return self._run(call())

    def open_stream(self) -> None:
        """Start the Session stream: a writer and a reader task on the loop."""
        self.end_stream()

        async def start() -> None:
            self._outbox = asyncio.Queue()
            self._call = self._stub.Session()
            self._tasks = [
                self._loop.create_task(self._read(self._call)),
                self._loop.create_task(self._write(self._call, self._outbox)),
            ]

        self._run(start())

    def end_stream(self) -> None:
        """Drop the current stream, if any (cancelled), and whatever it left unread."""
        if self._call is None or self._closed:
            return
        self._run(_cancel(self._call, self._tasks), timeout=10)
        self._call, self._tasks, self._outbox = None, [], None
        self._inbox = queue.Queue()

    async def _write(self, call: Any, outbox: asyncio.Queue[object]) -> None:
        try:
            while (message := await outbox.get()) is not _CLOSE:
                await call.write(message)
            await call.done_writing()
        except (grpc.RpcError, asyncio.InvalidStateError):
            pass  # the stream ended; the reader reports its status

    async def _read(self, call: Any) -> None:
        try:
            async for message in call:
                self._inbox.put(message)
            self._inbox.put(StreamEnded())
        except grpc.RpcError as error:  # grpc.aio.AioRpcError: code() and details()
            self._inbox.put(error)
        except asyncio.CancelledError:
            self._inbox.put(StreamEnded())

    def send(self, message: model_service_pb2.ClientMessage) -> None:
        outbox = self._outbox
        if outbox is None or self._closed:
            raise StreamEnded()
        self._loop.call_soon_threadsafe(outbox.put_nowait, message)

    def receive(self, timeout: float | None = None) -> model_service_pb2.ServerMessage:
        """The next message; raises the stream's grpc.RpcError, or StreamEnded."""
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no message from the model server in {timeout:.0f} s") from None
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, model_service_pb2.ServerMessage)
        return item

    def close_stream(self) -> None:
        """Half-close: the server finishes what it has and ends the stream."""
        outbox = self._outbox
        if outbox is not None and not self._closed:
            self._loop.call_soon_threadsafe(outbox.put_nowait, _CLOSE)

    def close(self) -> None:
        if self._closed:
            return
        self.close_stream()
        self._closed = True

        async def shutdown() -> None:
            if self._tasks:  # let the server end the stream after our close
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(self._tasks[0]), timeout=2.0)
            await _cancel(self._call, self._tasks)
            await self._channel.close()

        try:
            self._run(shutdown(), timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()


async def _cancel(call: Any, tasks: list[asyncio.Task[None]]) -> None:
    """Cancel a stream (if any) and its reader and writer tasks, and wait for them."""
    if call is not None:
        call.cancel()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
