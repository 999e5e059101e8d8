"""Running B and A as daemons: load files, bind, announce the port, stop cleanly on SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

import grpc

from ppinfer.errors import PPInferError, ServerError
from ppinfer.paillier import PRIVATE_KEY_FILE, PublicKey, RandomizerPool, load_private_key
from ppinfer.plan import load_plan
from ppinfer.servers.evaluator import ModelEvaluator
from ppinfer.servers.key_core import KeyServerCore
from ppinfer.servers.key_link import KeyServerClient
from ppinfer.servers.key_server import create_key_server
from ppinfer.servers.model_server import ModelServicer, create_model_server
from ppinfer.x25519file import X25519_PRIVATE_FILE, load_x25519

__all__ = ["run_key_server", "run_model_server"]

log = logging.getLogger("ppinfer.servers")


def _serve(server: grpc.Server, announcement: str, grace_seconds: float = 5.0) -> None:
    """Start, print the announcement (tools wait for it), block until SIGTERM or SIGINT."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    print(announcement, flush=True)
    stop.wait()
    log.info("stopping: finishing calls in flight for up to %.0f s", grace_seconds)
    server.stop(grace_seconds).wait()


def run_key_server(keys: Path, listen: str, pool_size: int, workers: int) -> int:
    private = load_private_key(keys / PRIVATE_KEY_FILE)
    static = load_x25519(keys / X25519_PRIVATE_FILE)
    core = KeyServerCore(private, static, RandomizerPool(private.public, private, pool_size))
    server, port = create_key_server(core, listen, workers)
    host = listen.rsplit(":", 1)[0]
    try:
        _serve(server, f"ppinfer key server {core.key_id[:16]} listening on {host}:{port}")
    finally:
        core.close()
    return 0


def _connect(key_server: str, wait_seconds: float) -> tuple[KeyServerClient, PublicKey, bytes]:
    client = KeyServerClient(key_server)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            public, x25519 = client.public_keys()
            return client, public, x25519
        except ServerError as error:
            if time.monotonic() >= deadline:
                raise PPInferError(
                    f"key server at {key_server} did not answer within {wait_seconds:g} s: "
                    f"{error.message}"
                ) from error
            time.sleep(0.5)


def run_model_server(
    models: list[Path], key_server: str, listen: str, workers: int, wait_seconds: float
) -> int:
    plans = [load_plan(path) for path in models]
    names = [plan.name for plan in plans]
    if len(set(names)) != len(names):
        raise PPInferError(f"two models share a name: {names}")
    client, public, x25519 = _connect(key_server, wait_seconds)
    pool = RandomizerPool(public, capacity=256)
    evaluators = {plan.name: ModelEvaluator(plan, public, pool) for plan in plans}
    servicer = ModelServicer(
        evaluators, lambda: client.link(public.ciphertext_bytes), x25519, client.stats
    )
    server, port = create_model_server(servicer, listen, workers)
    host = listen.rsplit(":", 1)[0]
    try:
        _serve(server, f"ppinfer model server ({', '.join(names)}) listening on {host}:{port}")
    finally:
        pool.close()
        client.close()
    return 0
