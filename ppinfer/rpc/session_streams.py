"""The session streams model server A holds, and the watch that ends the ones that hold a
thread for nothing: a stream that never sends ``open``, and an opened session that neither
sends nor waits for anything.

Each stream holds one of A's gRPC threads for its whole life, so a client that opens
streams and stays silent could otherwise take every thread A has (health checks
included). Streams count against A's limits from their arrival (the servicer's job);
here each gets ``open_timeout`` seconds to open and ``idle_timeout`` seconds of silence.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ppinfer.errors import ServerError
from ppinfer.protocol.model_session import ModelSession

__all__ = ["StreamRegistry", "StreamState"]


class StreamState:
    """One session stream: where its answers go, its session (and through it the link to
    B), whether it computes, and when its client was last heard from."""

    def __init__(self) -> None:
        self.out: queue.Queue[object] = queue.Queue()
        self.session: ModelSession | None = None
        self.busy = False
        self.opened = False
        self.expired = False
        self.last_heard = time.monotonic()
        self.inferences = 0
        self.cancelled = threading.Event()

    def heard(self) -> None:
        self.last_heard = time.monotonic()

    def expire(self, error: ServerError) -> None:
        """End the stream with ``error`` (once): its handler aborts with it."""
        if not self.expired:
            self.expired = True
            self.out.put(error)

    @contextmanager
    def computing(self) -> Iterator[None]:
        """One inference: busy (never idle) while it runs, counted when it succeeds."""
        self.busy = True
        try:
            yield
            self.inferences += 1
        finally:
            self.busy = False

    def cancel(self) -> None:
        """The client's stream ended: stop B's work for it (its next call fails fast)."""
        self.cancelled.set()
        if self.session is not None:
            self.session.cancel()


class StreamRegistry:
    """The streams A holds, and a thread that ends the silent and the idle ones."""

    def __init__(self, open_timeout: float, idle_timeout: float) -> None:
        if open_timeout <= 0 or idle_timeout <= 0:
            raise ValueError("open_timeout and idle_timeout must be positive")
        self.open_timeout = open_timeout
        self.idle_timeout = idle_timeout
        self._streams: set[StreamState] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="ppinfer-stream-watch", daemon=True
        )
        self._thread.start()

    def add(self, state: StreamState) -> None:
        with self._lock:
            self._streams.add(state)

    def discard(self, state: StreamState) -> None:
        with self._lock:
            self._streams.discard(state)

    def snapshot(self) -> list[StreamState]:
        with self._lock:
            return list(self._streams)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        interval = max(0.05, min(1.0, self.open_timeout / 4, self.idle_timeout / 4))
        while not self._stopped.wait(interval):
            now = time.monotonic()
            for state in self.snapshot():
                silent = now - state.last_heard
                if not state.opened and silent > self.open_timeout:
                    state.expire(
                        ServerError(
                            "DEADLINE_EXCEEDED",
                            f"no open message within {self.open_timeout:g} s of the stream's "
                            "start: a session starts with open",
                        )
                    )
                elif state.opened and not state.busy and silent > self.idle_timeout:
                    state.expire(
                        ServerError(
                            "UNAVAILABLE",
                            f"session idle for {self.idle_timeout:g} s, closed by the model "
                            "server; open a new session",
                        )
                    )
