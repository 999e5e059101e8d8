"""Worker processes for model server A's homomorphic linear algebra.

gmpy2 holds the GIL while it multiplies, so threads cannot share this work: a
:class:`WorkerPool` keeps one process per core, started with ``forkserver`` (never a
fork of a process running gRPC threads). Tasks and their ciphertexts go to the workers
by pickle inside this process tree only; nothing from the network is unpickled. If a
worker dies, the job is computed in this process and the pool starts again. Each worker
exits once the process that started it is gone.

Whoever runs A owns its pool: the daemon starts one before it says SERVING and closes it
when it stops; tests and benchmarks make their own. Nothing here is module-global.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from gmpy2 import mpz

__all__ = ["PARENT_CHECK_SECONDS", "Pending", "WorkerPool", "done"]

#: Seconds between a worker's checks that the process that started it is alive.
PARENT_CHECK_SECONDS = 1.0

#: A computation handed to the worker processes: calling it waits for the result.
Pending = Callable[[], list[mpz]]


def done(result: list[mpz]) -> Pending:
    """A result computed already, as a :data:`Pending`."""
    return lambda: result


class WorkerPool:
    """``workers`` processes (default: one per core), started on first use or by :meth:`start`,
    at niceness ``nice`` (A's store fills on them: the requests' own arithmetic, in A's
    main process, and B's answers then come first on a busy machine)."""

    def __init__(self, workers: int | None = None, nice: int = 0) -> None:
        self.workers = max(1, workers if workers is not None else os.cpu_count() or 1)
        self.nice = nice
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._closed = False

    def start(self) -> None:
        """Start every worker now and have each import the task modules, so that the first
        request does not wait for them (A calls this before SERVING)."""
        executor = self._running()
        for future in [executor.submit(_ready) for _ in range(self.workers)]:
            future.result()

    def processes(self) -> list[int]:
        """The workers' process ids (those started so far)."""
        with self._lock:
            executor = self._executor
        if executor is None:
            return []
        return [pid for pid, process in executor._processes.items() if process.is_alive()]

    def submit(
        self,
        task: Callable[..., list[mpz]],
        parts: list[tuple[Any, ...]],
        serial: tuple[Any, ...],
    ) -> Pending:
        """``task(*part)`` for every part, queued on the workers now; the returned call
        gathers the results in order. If the pool breaks, ``task(*serial)`` (the whole
        job) runs in this process instead."""

        def alone() -> list[mpz]:
            self._restart()
            return task(*serial)

        try:
            futures: list[Future[list[mpz]]] = [self._submit_one(task, part) for part in parts]
        except BrokenProcessPool:
            return done(alone())

        def gather() -> list[mpz]:
            try:
                return [product for future in futures for product in future.result()]
            except BrokenProcessPool:
                return alone()

        return gather

    def close(self) -> None:
        """Stop the workers; jobs still queued are cancelled."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _submit_one(self, task: Callable[..., list[mpz]], part: tuple[Any, ...]) -> Future[Any]:
        return self._running().submit(task, *part)

    def _running(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise BrokenProcessPool("the worker pool is closed")
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("forkserver"),
                    initializer=_exit_with,
                    initargs=(os.getpid(), self.nice),
                )
            return self._executor

    def _restart(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def _exit_with(parent: int, nice: int = 0) -> None:
    """In each worker: exit once ``parent`` (model server A) is gone. A killed A would
    otherwise leave its workers behind (a forkserver's children, about 100 MB)."""
    if nice:
        os.nice(nice)

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_SECONDS)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # alive, under another user: still our parent
                continue

    threading.Thread(target=watch, name="ppinfer-parent-watch", daemon=True).start()


def _ready() -> int:
    import ppinfer.paillier.multiexp  # noqa: F401  (what every task needs, loaded now)

    return os.getpid()
