"""Randomizers r^n mod n^2, the expensive half of a Paillier encryption, made ahead of time.

With them at hand an encryption costs one modular multiplication. A background thread
keeps a bounded pool full; gmpy2's list functions release the GIL, so the filling runs
on another core. Every randomizer is taken out of the pool exactly once: none is reused.
When the pool is empty, the caller computes what it needs itself (a "miss").

The filling thread runs at the lowest CPU priority (nice 19 on Linux, for that thread
only): it uses idle cores, and gives way to the work a request is waiting for (A's
linear algebra, B's decryptions) instead of taking a core from it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import gmpy2
from gmpy2 import mpz

from ppinfer.errors import RandomizerPoolClosedError
from ppinfer.paillier.keys import PrivateKey, PublicKey

__all__ = ["PoolStats", "RandomizerPool", "RandomizerSource", "fresh_randomizers"]

#: Anything that hands out ``count`` never-used randomizers r^n mod n^2.
RandomizerSource = Callable[[int], list[mpz]]

#: Randomizers computed per gmpy2 call in the background (one GIL release each).
REFILL_BATCH = 32


def _random_units(n: mpz, count: int) -> list[mpz]:
    """``count`` uniform elements of Z*_n from the OS CSPRNG."""
    units: list[mpz] = []
    while len(units) < count:
        r = mpz(secrets.randbelow(int(n) - 1) + 1)
        if gmpy2.gcd(r, n) == 1:  # fails only if r reveals a factor of n
            units.append(r)
    return units


def fresh_randomizers(
    public: PublicKey, count: int, private: PrivateKey | None = None
) -> list[mpz]:
    """``count`` new randomizers r^n mod n^2; with the secret key, by CRT (about 3x faster)."""
    units = _random_units(public.n, count)
    if private is None:
        return list(gmpy2.powmod_base_list(units, public.n, public.nsquare))
    mod_p = gmpy2.powmod_base_list(units, private.n_mod_phi_psquare, private.psquare)
    mod_q = gmpy2.powmod_base_list(units, private.n_mod_phi_qsquare, private.qsquare)
    return [private.crt_combine_square(a, b) for a, b in zip(mod_p, mod_q, strict=True)]


@dataclass(frozen=True)
class PoolStats:
    """What the pool did so far: ``hits`` served from the pool, ``misses`` computed inline."""

    capacity: int
    size: int
    hits: int
    misses: int
    generated: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 1.0


class RandomizerPool:
    """A bounded pool of randomizers, refilled by a background thread while below capacity.

    Use it as a :data:`RandomizerSource`: ``pool(count)`` returns ``count`` randomizers,
    from the pool where it can and computed on the spot for the rest.
    """

    def __init__(
        self,
        public: PublicKey,
        private: PrivateKey | None = None,
        capacity: int = 4096,
        start: bool = True,
        generator: RandomizerSource | None = None,
        refill_batch: int = REFILL_BATCH,
    ) -> None:
        """``generator`` makes new randomizers (default: textbook r^n, by CRT with the
        secret key; B passes :class:`ppinfer.paillier.fixedbase.FixedBaseRandomizers`).
        The background thread asks it for ``refill_batch`` at a time and hands the GIL
        over between batches: a generator that holds the GIL (the fixed-base comb) takes
        1, so a request's thread waits a fraction of a millisecond for the GIL, not a
        5 ms switch interval at every hand-off."""
        if capacity < 0:
            raise ValueError("pool capacity cannot be negative")
        self.public = public
        #: Where new randomizers come from (None: textbook r^n).
        self.generator = generator
        self._private = private
        self._generate: RandomizerSource = generator or (
            lambda count: fresh_randomizers(public, count, private)
        )
        self.capacity = capacity
        self._refill_batch = max(1, refill_batch)
        self._ready: deque[mpz] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._hits = self._misses = self._generated = 0
        self._thread: threading.Thread | None = None
        if start and capacity > 0:
            self._thread = threading.Thread(
                target=self._fill_forever, name="ppinfer-randomizer-pool", daemon=True
            )
            self._thread.start()

    def __call__(self, count: int) -> list[mpz]:
        """``count`` randomizers, never handed out before."""
        if self._closed:
            raise RandomizerPoolClosedError("randomizer pool is closed")
        taken: list[mpz] = []
        with self._lock:
            while self._ready and len(taken) < count:
                taken.append(self._ready.popleft())
            self._hits += len(taken)
            missing = count - len(taken)
            self._misses += missing
        self._wake.set()
        if missing:
            taken.extend(self._generate(missing))
        return taken

    def fill(self, count: int | None = None) -> None:
        """Compute randomizers in this thread until the pool holds ``count`` (default: full)."""
        target = self.capacity if count is None else min(count, self.capacity)
        while not self._closed:
            with self._lock:
                need = target - len(self._ready)
            if need <= 0:
                return
            self._add(self._generate(min(need, REFILL_BATCH)))

    def wait_full(self, timeout: float) -> bool:
        """Block until the background thread has filled the pool; False on timeout."""
        deadline = time.monotonic() + timeout
        while len(self._ready) < self.capacity:
            if self._closed or time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(
                self.capacity, len(self._ready), self._hits, self._misses, self._generated
            )

    def close(self) -> None:
        """Stop the background thread and drop every unused randomizer."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._ready.clear()

    def __enter__(self) -> RandomizerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _add(self, batch: list[mpz]) -> None:
        with self._lock:
            room = self.capacity - len(self._ready)
            kept = batch[:room]
            self._ready.extend(kept)
            self._generated += len(kept)

    def _fill_forever(self) -> None:
        _lowest_priority()
        while not self._closed:
            with self._lock:
                need = self.capacity - len(self._ready)
            if need <= 0:
                self._wake.clear()
                # Re-check after clearing so a take() between the two is not missed.
                if len(self._ready) >= self.capacity:
                    self._wake.wait()
                continue
            self._add(self._generate(min(need, self._refill_batch)))
            time.sleep(0)  # let any other thread take the GIL


def _lowest_priority() -> None:
    """Nice 19 for the calling thread (Linux: a thread id is a process id for
    setpriority); elsewhere, or if refused, the thread keeps its priority."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
