"""Thread-safe named counters: what a server handled, as integers (never values)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Counters"]


class Counters:
    """Integer counters that many sessions add to at once; ``snapshot`` reads them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Counter[str] = Counter()

    def add(self, **amounts: int) -> None:
        self.add_named(amounts)

    def add_named(self, amounts: dict[str, int]) -> None:
        with self._lock:
            self._values.update(amounts)

    @contextmanager
    def timed_us(self, name: str) -> Iterator[None]:
        """Add the wall time of the block to ``name``, in microseconds."""
        started = time.perf_counter_ns()
        try:
            yield
        finally:
            self.add_named({name: (time.perf_counter_ns() - started) // 1000})

    def snapshot(self, prefix: str = "") -> dict[str, int]:
        with self._lock:
            return {f"{prefix}{key}": value for key, value in self._values.items()}

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._values[name]
