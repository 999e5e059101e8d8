"""Model server A's preprocessing store: request entries made ahead of any session.

An entry (:class:`~ppinfer.protocol.evaluation_types.Prepared`) is everything offline of
one request: B's masks, the perturbations, every layer's weights and mask part, B's
shares. None of it depends on the input or on a session, so one store per model serves
every session, and a background thread keeps it filled on its own link to B, using A's
worker processes when requests leave them idle.

- :meth:`EntryStore.take` hands a session the oldest entry of the B instance its link
  reaches, or, when there is none, makes one on the session's own link (a *miss*, which
  costs the request the offline half, as without a store). Entries of another B
  instance (B restarted, or a replica) are discarded: B would refuse them.
- The filler starts when the store falls to ``low_water`` and fills it to ``capacity``,
  one entry at a time, so that a miss never queues behind more than one entry's work.
  A link that fails is reopened after a pause. B drops the entries a closed link made
  and never bound, and so does the store: a restart of A leaves nothing at B, and a
  restart of B nothing at A, that the other side can no longer match.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ppinfer.errors import PPInferError
from ppinfer.paillier import PublicKey
from ppinfer.protocol.counters import Counters
from ppinfer.protocol.evaluation_types import Prepared
from ppinfer.protocol.key_link import KeyLink
from ppinfer.protocol.model_evaluator import ModelEvaluator

__all__ = ["DEFAULT_CAPACITY", "EntryStore", "StoreEvents"]

log = logging.getLogger("ppinfer.model_server")

#: Entries per model by default: a burst of 64 requests, then the filler's pace.
DEFAULT_CAPACITY = 64
#: Seconds between attempts to reach B after the filler's link failed.
_RETRY_SECONDS = 1.0

#: Opens a link to B under the given key, without a deadline.
LinkOpener = Callable[[PublicKey, float | None], KeyLink]


class StoreEvents(Protocol):
    """What the store reports (Prometheus, in the daemon)."""

    def entry_made(self, seconds: float) -> None: ...

    def entry_missed(self) -> None: ...

    def depth(self, entries: int) -> None: ...


class EntryStore:
    """Bounded store of one model's entries, filled in the background by :meth:`start`."""

    def __init__(
        self,
        evaluator: ModelEvaluator,
        open_link: LinkOpener,
        capacity: int = DEFAULT_CAPACITY,
        low_water: int | None = None,
        events: StoreEvents | None = None,
    ) -> None:
        if capacity < 0:
            raise PPInferError(f"a store holds 0 or more entries, not {capacity}")
        self.evaluator = evaluator
        self.capacity = capacity
        self.low_water = capacity * 3 // 4 if low_water is None else low_water
        if not 0 <= self.low_water <= max(capacity - 1, 0):
            raise PPInferError(
                f"the low-water mark must be in [0, {max(capacity - 1, 0)}], got {low_water}"
            )
        self._open_link = open_link
        self._events = events
        self._entries: deque[Prepared] = deque()
        self._lock = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._link: KeyLink | None = None
        #: made (by the filler), taken (from the store), missed (made for a request),
        #: stale (discarded: another B instance), entry_us (the filler's wall time)
        self.counters = Counters()

    @property
    def depth(self) -> int:
        with self._lock:
            return len(self._entries)

    def start(self) -> None:
        """Start filling in the background (no-op for a store of capacity 0)."""
        if self.capacity == 0 or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._fill_forever, name=f"store-{self.evaluator.plan.name}", daemon=True
        )
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the filler; B drops the entries it made and never bound with its link, so
        the store forgets them too (sessions still open make their own from now on)."""
        with self._lock:
            self._closed = True
            self._entries.clear()
            self._lock.notify_all()
            link, self._link = self._link, None
        if link is not None:
            link.close()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def take(self, link: KeyLink, instance: str) -> Prepared:
        """An entry of B instance ``instance``: the store's oldest, or one made now on
        ``link`` (a miss)."""
        with self._lock:
            while self._entries:
                entry = self._entries.popleft()
                if entry.instance == instance:
                    self.counters.add(taken=1)
                    self._changed()
                    return entry
                self.counters.add(stale=1)
            self._changed()
        self.counters.add(missed=1)
        if self._events is not None:
            self._events.entry_missed()
        return self.evaluator.make_entry(link)

    def wait_filled(self, entries: int | None = None, timeout: float = 600.0) -> bool:
        """Block until ``entries`` (default: capacity) are ready; whether they are."""
        target = self.capacity if entries is None else entries
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._entries) < target and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 1.0))
            return len(self._entries) >= target

    def stats(self) -> dict[str, int]:
        counters = self.counters.snapshot()
        counters["store_depth"] = self.depth
        return counters

    def _changed(self) -> None:
        """Under the lock: wake the filler (and waiters) and report the depth."""
        self._lock.notify_all()
        if self._events is not None:
            self._events.depth(len(self._entries))

    def _wait_for_room(self) -> bool:
        """Block until the store is at its low-water mark; False once closed."""
        with self._lock:
            while not self._closed and len(self._entries) > self.low_water:
                self._lock.wait()
            return not self._closed

    def _fill_forever(self) -> None:
        while self._wait_for_room():
            while not self._closed and self.depth < self.capacity:
                try:
                    self._fill_one()
                except Exception as error:  # the filler must not die: say why, try again
                    if self.closed:  # close() ended the link under the filler
                        return
                    name = self.evaluator.plan.name
                    if isinstance(error, PPInferError):
                        log.warning("filling the store of %s failed (%s); retrying in %.0f s",
                                    name, error, _RETRY_SECONDS)  # fmt: skip
                    else:
                        log.exception("filling the store of %s failed", name)
                    self._drop_link()
                    time.sleep(_RETRY_SECONDS)

    def _fill_one(self) -> None:
        link = self._link
        if link is None:
            link = self._open_link(self.evaluator.public, None)
            with self._lock:
                if self._closed:
                    link.close()
                    return
                self._link = link
        started = time.perf_counter()
        entry = self.evaluator.make_entry(link)
        seconds = time.perf_counter() - started
        with self._lock:
            if self._closed:
                return
            stale = [e for e in self._entries if e.instance != entry.instance]
            if stale:  # B restarted: what its last instance holds is gone
                self._entries = deque(e for e in self._entries if e.instance == entry.instance)
                self.counters.add(stale=len(stale))
            self._entries.append(entry)
            self.counters.add(made=1, entry_us=int(seconds * 1e6))
            self._changed()
        if self._events is not None:
            self._events.entry_made(seconds)

    def _drop_link(self) -> None:
        """The filler's link failed: B drops the entries it made on it, and so does A."""
        with self._lock:
            link, self._link = self._link, None
            self.counters.add(stale=len(self._entries))
            self._entries.clear()
            self._changed()
        if link is not None:
            link.close()
