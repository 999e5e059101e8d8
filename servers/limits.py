"""Per-server and per-peer limits: sessions at once, and request bytes held for a peer.

A peer is a client's network address (without its port), so one host cannot take every
session a server has, nor make it hold an unbounded amount of input. Going over a limit
is RESOURCE_EXHAUSTED for that call only; nothing else is affected.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from ppinfer.daemon_options import ConfigError
from ppinfer.errors import LimitExceededError

__all__ = ["SessionLimits", "peer_address"]


def peer_address(peer: str) -> str:
    """The host part of grpc's peer string: 'ipv4:10.0.0.2:5123' -> '10.0.0.2'."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rpartition(":")[0]
        return host.strip("[]") or rest
    return peer


class SessionLimits:
    def __init__(self, max_sessions: int, max_per_peer: int, max_bytes_per_peer: int) -> None:
        for name, value in (
            ("max_sessions", max_sessions),
            ("max_sessions_per_peer", max_per_peer),
            ("max_inflight_bytes_per_peer", max_bytes_per_peer),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}")
        self.max_sessions = max_sessions
        self.max_per_peer = max_per_peer
        self.max_bytes_per_peer = max_bytes_per_peer
        self._lock = threading.Lock()
        self._sessions: Counter[str] = Counter()
        self._bytes: Counter[str] = Counter()

    @property
    def open_sessions(self) -> int:
        with self._lock:
            return sum(self._sessions.values())

    @contextmanager
    def session(self, peer: str) -> Iterator[None]:
        with self._lock:
            if sum(self._sessions.values()) >= self.max_sessions:
                raise LimitExceededError(
                    f"the server has its limit of {self.max_sessions} sessions open; retry later"
                )
            if self._sessions[peer] >= self.max_per_peer:
                raise LimitExceededError(
                    f"{peer} has its limit of {self.max_per_peer} sessions open on this "
                    "server; close one (one session carries many inferences)"
                )
            self._sessions[peer] += 1
        try:
            yield
        finally:
            with self._lock:
                self._sessions[peer] -= 1
                if self._sessions[peer] <= 0:
                    del self._sessions[peer]

    @contextmanager
    def holding(self, peer: str, size: int) -> Iterator[None]:
        """Count ``size`` request bytes against ``peer`` while the block runs."""
        with self._lock:
            if self._bytes[peer] + size > self.max_bytes_per_peer:
                raise LimitExceededError(
                    f"{peer} has {self._bytes[peer]} request bytes in progress; with "
                    f"{size} more it would pass its limit of {self.max_bytes_per_peer}"
                )
            self._bytes[peer] += size
        try:
            yield
        finally:
            with self._lock:
                self._bytes[peer] -= size
                if self._bytes[peer] <= 0:
                    del self._bytes[peer]
