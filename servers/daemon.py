"""Running B and A: build them (also used in-process by tests), serve until SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ppinfer.errors import PPInferError, ServerError
from ppinfer.paillier import (
    PRIVATE_KEY_FILE,
    PrivateKey,
    PublicKey,
    RandomizerPool,
    load_private_key,
)
from ppinfer.plan import Plan, load_plan
from ppinfer.servers.evaluator import ModelEvaluator, Observer
from ppinfer.servers.key_core import KeyServerCore
from ppinfer.servers.key_core import Observer as KeyObserver
from ppinfer.servers.key_link import KeyServerClient
from ppinfer.servers.key_server import create_key_server
from ppinfer.servers.model_server import ModelServicer, create_model_server
from ppinfer.x25519file import X25519_PRIVATE_FILE, load_x25519

__all__ = [
    "Running",
    "build_key_server",
    "build_model_server",
    "run_key_server",
    "run_model_server",
]

log = logging.getLogger("ppinfer.servers")


@dataclass
class Running:
    """A built server: its gRPC server, bound port, and what to close after it stops."""

    server: grpc.Server
    port: int
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace).wait()
        for cleanup in self.cleanups:
            cleanup()


def build_key_server(
    private: PrivateKey,
    static: X25519PrivateKey,
    listen: str = "127.0.0.1:0",
    pool_size: int = 4096,
    workers: int = 64,
    observer: KeyObserver | None = None,
) -> tuple[Running, KeyServerCore]:
    core = KeyServerCore(
        private, static, RandomizerPool(private.public, private, pool_size), observer=observer
    )
    server, port = create_key_server(core, listen, workers)
    return Running(server, port, [core.close]), core


def _connect(key_server: str, wait_seconds: float) -> tuple[KeyServerClient, PublicKey, bytes]:
    client = KeyServerClient(key_server)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            public, x25519 = client.public_keys()
            return client, public, x25519
        except ServerError as error:
            if time.monotonic() >= deadline:
                client.close()
                raise PPInferError(
                    f"key server at {key_server} did not answer within {wait_seconds:g} s: "
                    f"{error.message}"
                ) from error
            time.sleep(0.5)


def build_model_server(
    plans: list[Plan],
    key_server: str,
    listen: str = "127.0.0.1:0",
    workers: int = 64,
    wait_seconds: float = 30.0,
    observer: Observer | None = None,
) -> Running:
    names = [plan.name for plan in plans]
    if len(set(names)) != len(names):
        raise PPInferError(f"two models share a name: {names}")
    client, public, x25519 = _connect(key_server, wait_seconds)
    pool = RandomizerPool(public, capacity=256)
    evaluators = {plan.name: ModelEvaluator(plan, public, pool, observer) for plan in plans}
    servicer = ModelServicer(
        evaluators,
        lambda: client.link(public.ciphertext_bytes),
        x25519,
        client.stats,
        client.counters,
    )
    server, port = create_model_server(servicer, listen, workers)
    return Running(server, port, [pool.close, client.close])


def _serve(running: Running, announcement: str, grace_seconds: float = 5.0) -> int:
    """Start, print the announcement (tools wait for it), block until SIGTERM or SIGINT."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    running.server.start()
    print(announcement, flush=True)
    stop.wait()
    log.info("stopping: finishing calls in flight for up to %.0f s", grace_seconds)
    running.stop(grace_seconds)
    return 0


def run_key_server(keys: Path, listen: str, pool_size: int, workers: int) -> int:
    private = load_private_key(keys / PRIVATE_KEY_FILE)
    static = load_x25519(keys / X25519_PRIVATE_FILE)
    running, core = build_key_server(private, static, listen, pool_size, workers)
    host = listen.rsplit(":", 1)[0]
    return _serve(
        running, f"ppinfer key server {core.key_id[:16]} listening on {host}:{running.port}"
    )


def run_model_server(
    models: list[Path], key_server: str, listen: str, workers: int, wait_seconds: float
) -> int:
    plans = [load_plan(path) for path in models]
    running = build_model_server(plans, key_server, listen, workers, wait_seconds)
    host = listen.rsplit(":", 1)[0]
    names = ", ".join(plan.name for plan in plans)
    return _serve(running, f"ppinfer model server ({names}) listening on {host}:{running.port}")
