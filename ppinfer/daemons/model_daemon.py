"""Model server A as a daemon: its plans loaded, connected to B (waiting for it, and
watching its health after), its sessions served until stopped. A reloads nothing on
SIGHUP: new plans or a new key of B's need a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppinfer.compiler.plan import Plan, load_plan
from ppinfer.compiler.program import Program
from ppinfer.daemons.metrics import Metrics
from ppinfer.daemons.serving import (
    Running,
    check_key_size,
    check_threads,
    log,
    serve_until_stopped,
    server_tls,
)
from ppinfer.errors import ConfigError, PPInferError, ServerError
from ppinfer.paillier import (
    PublicKey,
    RandomizerPool,
)
from ppinfer.paillier.worker_pool import WorkerPool
from ppinfer.protocol.entry_store import DEFAULT_CAPACITY, EntryStore
from ppinfer.protocol.evaluation_types import Observer
from ppinfer.protocol.model_evaluator import ModelEvaluator
from ppinfer.rpc.admin_servicer import create_admin_server
from ppinfer.rpc.key_link import STAYS_UP, GrpcKeyLink, KeyServerClient
from ppinfer.rpc.model_servicer import (
    ModelServicer,
    create_model_server,
)
from ppinfer.rpc.server_factory import Listening
from ppinfer.rpc.session_limits import SessionLimits
from ppinfer.rpc.tls import ChannelTls, ServerTls

__all__ = ["KeyServerWatch", "build_model_server", "check_model_server", "run_model_server"]


class KeyServerWatch:
    """A's view of B: checks B's health every ``interval`` seconds (backing off to 4x that
    while B is down) and calls ``on_change(up)`` when it changes; when B answers under a
    key other than A's, calls ``on_key(public, x25519)`` first (B rotated its key)."""

    def __init__(
        self,
        client: KeyServerClient,
        key_id: str,
        x25519: bytes,
        interval: float,
        on_change: Callable[[bool], None],
        on_key: Callable[[PublicKey, bytes], None],
    ) -> None:
        self._client = client
        self.key_id = key_id
        self.x25519 = x25519
        self._interval = max(0.05, interval)
        self._on_change = on_change
        self._on_key = on_key
        self.up = True
        self.reason = ""  # why B counts as down, for the log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ppinfer-key-watch", daemon=True)
        self._thread.start()

    def _check(self) -> bool:
        if not self._client.serving(timeout=max(1.0, self._interval)):
            self.reason = "no SERVING answer to its health check"
            return False
        try:
            public, x25519 = self._client.public_keys()
        except PPInferError as error:  # unreachable, or a release that speaks another revision
            self.reason = str(error)
            return False
        if (public.key_id, x25519) != (self.key_id, self.x25519):
            log.warning(
                "key server now uses key %s... (was %s...); new sessions use it",
                public.key_id[:16], self.key_id[:16],
            )  # fmt: skip
            try:
                self._on_key(public, x25519)
            except PPInferError as error:
                log.error("cannot use the key server's new key: %s", error)
                return False
            self.key_id, self.x25519 = public.key_id, x25519
        return True

    def _run(self) -> None:
        wait = self._interval
        while not self._stop.wait(wait):
            up = self._check()
            if up != self.up:
                self.up = up
                log.warning(
                    "key server %s", "answers again" if up else f"is unusable: {self.reason}"
                )
                self._on_change(up)
            wait = self._interval if up else min(wait * 2, 4 * self._interval)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _connect(
    key_server: str, tls: ChannelTls | None, wait_seconds: float
) -> tuple[KeyServerClient, PublicKey, bytes]:
    client = KeyServerClient(key_server, tls)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            public, x25519 = client.public_keys()
            return client, public, x25519
        except ServerError as error:
            if time.monotonic() >= deadline:
                client.close()
                # A is not up: it gives up starting, so not the clients' "retry later"
                raise PPInferError(
                    f"key server at {key_server} did not answer within {wait_seconds:g} s: "
                    f"{error.message.removesuffix(STAYS_UP)}"
                ) from error
            time.sleep(0.5)


def build_model_server(
    plans: list[Plan],
    key_server: str,
    listen: str = "127.0.0.1:0",
    workers: int = 64,
    wait_seconds: float = 30.0,
    observer: Observer | None = None,
    tls: ServerTls | None = None,
    key_server_tls: ChannelTls | None = None,
    limits: SessionLimits | None = None,
    health_interval: float = 1.0,
    allow_client_aided: bool = False,
    open_timeout: float = 10.0,
    idle_timeout: float = 600.0,
    admin_listen: str = "",
    allow_small_keys: bool = False,
    worker_pool: WorkerPool | None = None,
    store_size: int = DEFAULT_CAPACITY,
    store_low_water: int | None = None,
    fill_workers: int | None = None,
) -> Running:
    """A, connected to B (waiting up to ``wait_seconds`` for it) and SERVING. Each model
    has a preprocessing store of ``store_size`` entries, refilled from ``store_low_water``
    (None: three quarters) on ``worker_pool`` (default: a pool of its own, ``fill_workers``
    processes at niceness 10, started before SERVING and closed when A stops)."""
    names = [plan.name for plan in plans]
    if len(set(names)) != len(names):
        raise PPInferError(f"two models share a name: {names}")
    limits = limits or SessionLimits(48, 32, 64 * 1024 * 1024)
    check_threads(workers, limits.max_sessions)
    client, public, x25519 = _connect(key_server, key_server_tls, wait_seconds)
    try:
        check_key_size(public.bits, allow_small_keys)
    except PPInferError:
        client.close()
        raise
    metrics = Metrics()
    pools: list[RandomizerPool] = []
    programs = [Program(plan) for plan in plans]  # every key's evaluators share them
    owned = worker_pool is None
    linear_pool = WorkerPool(fill_workers, nice=10) if worker_pool is None else worker_pool

    def link(key: PublicKey, remaining: float | None) -> GrpcKeyLink:
        return client.link(key.ciphertext_bytes, key.key_id, remaining)

    def stores(evaluators: dict[str, ModelEvaluator]) -> dict[str, EntryStore]:
        made = {}
        for name, evaluator in evaluators.items():
            made[name] = EntryStore(
                evaluator, link, store_size, store_low_water, metrics.store_events(name)
            )
            made[name].start()
        return made

    def evaluators(public: PublicKey) -> dict[str, ModelEvaluator]:
        check_key_size(public.bits, allow_small_keys)
        pool = RandomizerPool(public, capacity=256)
        pools.append(pool)
        return {
            program.name: ModelEvaluator(
                program,
                public,
                pool,
                observer,
                on_step=metrics.step_observer(program.name),
                worker_pool=linear_pool,
            )
            for program in programs
        }

    servicer = ModelServicer(
        evaluators(public),
        link,
        x25519,
        client.stats,
        client.counters,
        limits,
        metrics,
        allow_client_aided=allow_client_aided,
        open_timeout=open_timeout,
        idle_timeout=idle_timeout,
        make_stores=stores,
    )
    bound: list[Listening] = []
    try:  # a busy port: leave nothing bound or running behind the error
        bound.append(create_model_server(servicer, listen, workers, tls))
        if admin_listen:
            bound.append(create_admin_server(servicer, admin_listen, tls))
    except PPInferError:
        for server in bound:
            server.server.stop(0)
        servicer.close()
        for pool in pools:
            pool.close()
        if owned:
            linear_pool.close()
        client.close()
        raise
    listening, admin = bound[0], (bound[1] if admin_listen else None)
    if allow_client_aided:
        log.warning(
            "client-aided sessions are on: that mode trusts each client's Paillier key, and "
            "a malformed key lets a client read the weights; use it for benchmarks only"
        )
    health = listening.health
    linear_pool.start()  # before SERVING: the first request should not wait for them

    def on_key(public: PublicKey, x25519: bytes) -> None:
        servicer.use_key(evaluators(public), x25519)

    def on_change(up: bool) -> None:
        health.set(up)
        assert metrics.peer_up is not None
        metrics.peer_up.set(int(up))

    watch = KeyServerWatch(client, public.key_id, x25519, health_interval, on_change, on_key)
    health.set(True)
    assert metrics.peer_up is not None
    metrics.peer_up.set(1)
    metrics.serving.set_function(lambda: int(health.serving))
    metrics.export_stats(servicer.stats)
    metrics.pool_fill.set_function(lambda: pools[-1].stats().size)

    def close() -> None:
        watch.close()
        servicer.close()
        if admin is not None:
            admin.server.stop(0)
        for pool in pools:
            pool.close()
        if owned:
            linear_pool.close()
        client.close()

    running = Running(listening.server, listening.port, health, metrics, servicer.drain, [close])
    if admin is not None:
        admin.health.set(True)
        running.admin = admin
    return running


def _key_server_tls(settings: dict[str, Any]) -> ChannelTls | None:
    if settings["insecure"]:
        if settings["key_server_ca"]:
            raise ConfigError(
                "--insecure contradicts key_server_ca: drop it for plaintext to the key "
                "server, or drop --insecure to use TLS"
            )
        return None
    if not settings["key_server_ca"]:
        raise PPInferError("give key_server_ca: the CA that signed the key server's certificate")
    return ChannelTls.from_files(
        settings["key_server_ca"],
        settings["key_server_name"],
        settings["tls_cert"],
        settings["tls_key"],
    )


@dataclass
class _ModelServerSettings:
    plans: list[Plan]
    tls: ServerTls | None
    key_server_tls: ChannelTls | None
    limits: SessionLimits


def _load_model_server(settings: dict[str, Any]) -> _ModelServerSettings:
    """Everything A's settings name (not B itself), loaded and checked."""
    if not settings["model"]:
        raise PPInferError("give at least one model: a plan from ppinfer compile")
    if not settings["key_server"]:
        raise PPInferError("give key_server: HOST:PORT of the key server")
    plans = [load_plan(Path(path)) for path in settings["model"]]
    limits = SessionLimits(
        settings["max_sessions"],
        settings["max_sessions_per_peer"],
        settings["max_inflight_bytes_per_peer"],
        settings["open_rate_per_peer"],
        settings["open_burst_per_peer"],
    )
    check_threads(settings["workers"], limits.max_sessions)
    return _ModelServerSettings(plans, server_tls(settings), _key_server_tls(settings), limits)


def check_model_server(settings: dict[str, Any]) -> str:
    """What A would serve, if its settings can be used (else the error)."""
    loaded = _load_model_server(settings)
    return "models " + ", ".join(plan.name for plan in loaded.plans)


def run_model_server(settings: dict[str, Any]) -> int:
    loaded = _load_model_server(settings)
    running = build_model_server(
        loaded.plans,
        settings["key_server"],
        settings["listen"],
        settings["workers"],
        settings["key_server_wait"],
        tls=loaded.tls,
        key_server_tls=loaded.key_server_tls,
        limits=loaded.limits,
        health_interval=settings["health_interval"],
        allow_client_aided=settings["allow_client_aided"],
        open_timeout=settings["open_timeout"],
        idle_timeout=settings["idle_timeout"],
        admin_listen=settings["admin_listen"],
        allow_small_keys=settings["allow_small_keys"],
        store_size=settings["store_size"],
        store_low_water=None if settings["store_low_water"] < 0 else settings["store_low_water"],
        fill_workers=settings["fill_workers"] or None,
    )
    host = settings["listen"].rsplit(":", 1)[0]
    names = ", ".join(plan.name for plan in loaded.plans)
    return serve_until_stopped(
        running, f"ppinfer model server ({names}) listening on {host}:{running.port}", settings
    )
