"""Per-server and per-peer limits: sessions at once, opens per second, and request bytes
held for a peer.

A peer is a client's network address (without its port), so one host cannot take every
session a server has, make it hold an unbounded amount of input, nor make it start
sessions faster than ``open_rate`` a second (each open costs A and B key agreement and,
with precomputation, a whole offline half). Going over a limit is RESOURCE_EXHAUSTED for
that call only; nothing else is affected.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from ppinfer.errors import ConfigError, LimitExceededError

__all__ = ["SessionLimits", "peer_address"]


def peer_address(peer: str) -> str:
    """The host part of grpc's peer string: 'ipv4:10.0.0.2:5123' -> '10.0.0.2'."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rpartition(":")[0]
        return host.strip("[]") or rest
    return peer


#: Peers whose open budget is tracked at once; past it, full buckets are forgotten.
_TRACKED_PEERS = 4096


class SessionLimits:
    def __init__(
        self,
        max_sessions: int,
        max_per_peer: int,
        max_bytes_per_peer: int,
        open_rate: float = 4.0,
        open_burst: int = 32,
    ) -> None:
        """``open_rate`` sessions a second per peer may open, after a burst of
        ``open_burst`` (a token bucket)."""
        for name, value in (
            ("max_sessions", max_sessions),
            ("max_sessions_per_peer", max_per_peer),
            ("max_inflight_bytes_per_peer", max_bytes_per_peer),
            ("open_burst_per_peer", open_burst),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}")
        if not open_rate > 0:
            raise ConfigError(f"open_rate_per_peer must be positive, not {open_rate}")
        self.max_sessions = max_sessions
        self.max_per_peer = max_per_peer
        self.max_bytes_per_peer = max_bytes_per_peer
        self.open_rate = open_rate
        self.open_burst = open_burst
        self._lock = threading.Lock()
        self._sessions: Counter[str] = Counter()
        self._bytes: Counter[str] = Counter()
        self._opens: dict[str, tuple[float, float]] = {}  # peer -> (tokens, when)

    def admit_open(self, peer: str) -> None:
        """Take one open from ``peer``'s budget, or refuse it."""
        now = time.monotonic()
        with self._lock:
            tokens, since = self._opens.get(peer, (float(self.open_burst), now))
            tokens = min(float(self.open_burst), tokens + (now - since) * self.open_rate)
            if tokens < 1.0:
                wait = (1.0 - tokens) / self.open_rate
                raise LimitExceededError(
                    f"{peer} opens sessions faster than {self.open_rate:g} a second (after a "
                    f"burst of {self.open_burst}); retry in {wait:.1f} s, or keep a session "
                    "open: one session carries many inferences"
                )
            self._opens[peer] = (tokens - 1.0, now)
            if len(self._opens) > _TRACKED_PEERS:
                self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        """Drop peers whose bucket has refilled: forgetting them changes nothing."""
        for peer, (tokens, since) in list(self._opens.items()):
            if tokens + (now - since) * self.open_rate >= self.open_burst:
                del self._opens[peer]

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
