"""Per-step accounting of A's work: its own time, the peer's round trips, bytes, rounds.

Step 0 is the offline half when it was not prepared ahead, 1..L the layers, L+1 the
output. Each step's counts land in :class:`~ppinfer.protocol.counters.Counters` as
``step{k}.a_us``, ``step{k}.peer_us`` and ``step{k}.<count>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ppinfer.protocol.counters import Counters

__all__ = ["StepClock", "timed_step"]


class StepClock:
    """One step's counts, and the time spent waiting on the peer inside it."""

    def __init__(self, name: str, counts: dict[str, int]) -> None:
        self.name = name
        self.counts = {f"{name}.{key}": value for key, value in counts.items()}
        self.peer_us = 0

    def count(self, key: str, value: int) -> None:
        name = f"{self.name}.{key}"
        self.counts[name] = self.counts.get(name, 0) + value

    @contextmanager
    def peer(self) -> Iterator[None]:
        started = time.perf_counter_ns()
        try:
            yield
        finally:
            self.peer_us += (time.perf_counter_ns() - started) // 1000


@contextmanager
def timed_step(
    counters: Counters,
    step: int,
    on_step: Callable[[int, float], None] | None = None,
    **counts: int,
) -> Iterator[StepClock]:
    """Count ``step``: A's own time (wall time minus the peer's round trips) and more;
    ``on_step(step, seconds)`` hears its wall time."""
    clock = StepClock(f"step{step}", counts)
    started = time.perf_counter_ns()
    try:
        yield clock
    finally:
        elapsed = (time.perf_counter_ns() - started) // 1000
        clock.counts[f"{clock.name}.a_us"] = max(0, elapsed - clock.peer_us)
        clock.counts[f"{clock.name}.peer_us"] = clock.peer_us
        counters.add_named(clock.counts)
        if on_step is not None:
            on_step(step, elapsed / 1e6)
