"""An emulated slow link between the benchmark's client and model server A.

The usual tool is ``tc netem`` on a veth pair in a network namespace; this machine's
kernel has no netem queueing discipline (``tc`` answers "Specified qdisc kind is
unknown"), so the link is emulated in user space instead, where it works on any machine:
a TCP relay on localhost that, in each direction, holds every chunk for its transmission
time at ``rate`` (a single bottleneck queue, like a token bucket with no burst) and then
for half the round-trip time, and delivers chunks in order.
"""

from __future__ import annotations

import contextlib
import queue
import re
import socket
import threading
import time
from dataclasses import dataclass

from ppinfer.errors import PPInferError

__all__ = ["LinkSpec", "SlowLink", "parse_link"]

_CHUNK = 16 * 1024


@dataclass(frozen=True)
class LinkSpec:
    bits_per_second: float
    rtt_seconds: float

    def schedule(self, now: float, free_at: float, size: int) -> tuple[float, float]:
        """A chunk of ``size`` bytes arriving at ``now`` on a link busy until ``free_at``:
        when the link is free again, and when the chunk is delivered."""
        done = max(now, free_at) + size * 8 / self.bits_per_second
        return done, done + self.rtt_seconds / 2

    def describe(self) -> str:
        rate = self.bits_per_second
        shown = f"{rate / 1e6:g} Mbit/s" if rate >= 1e6 else f"{rate / 1e3:g} kbit/s"
        return f"{shown}, {self.rtt_seconds * 1000:g} ms RTT"


def parse_link(text: str) -> LinkSpec:
    """``1mbit:100ms`` or ``256kbit:100ms``: a rate and a round-trip time."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(k|m)bit:(\d+(?:\.\d+)?)ms", text.strip().lower())
    if match is None:
        raise PPInferError(f"link {text!r}: write RATE:RTT as in 1mbit:100ms or 256kbit:100ms")
    rate = float(match.group(1)) * (1e3 if match.group(2) == "k" else 1e6)
    if rate <= 0:
        raise PPInferError("the link's rate must be positive")
    return LinkSpec(rate, float(match.group(3)) / 1000)


class _Direction:
    """One direction of one connection: a bottleneck queue, then the propagation delay."""

    def __init__(self, source: socket.socket, sink: socket.socket, spec: LinkSpec) -> None:
        self._source, self._sink, self._spec = source, sink, spec
        self._queue: queue.Queue[tuple[float, bytes]] = queue.Queue()
        self._free_at = 0.0
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def _read(self) -> None:
        try:
            while data := self._source.recv(_CHUNK):
                self._free_at, due = self._spec.schedule(time.monotonic(), self._free_at, len(data))
                self._queue.put((due, data))
        except OSError:
            pass
        self._queue.put((0.0, b""))

    def _write(self) -> None:
        try:
            while True:
                due, data = self._queue.get()
                if not data:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                self._sink.sendall(data)
        except OSError:
            pass
        for end in (self._sink, self._source):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


class SlowLink:
    """Listens on localhost; every connection is relayed to ``target`` over the slow link."""

    def __init__(self, target: str, spec: LinkSpec) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self.spec = spec
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            for end in (client, upstream):
                end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _Direction(client, upstream, self.spec)
            _Direction(upstream, client, self.spec)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
