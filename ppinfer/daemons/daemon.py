"""Running B and A: build them (also used in-process by tests), serve until SIGTERM.

A daemon starts NOT_SERVING, says SERVING once it can serve (B: its key loaded; A: B
answers, under the key A evaluates with), and on SIGTERM or SIGINT goes NOT_SERVING,
drains the calls in flight for up to ``drain_seconds``, and stops. B reloads its key
folder on SIGHUP (key rotation: sessions in flight keep the old key until they end).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ppinfer.compiler.plan import Plan, load_plan
from ppinfer.compiler.program import Program
from ppinfer.daemons.metrics import Metrics, serve_metrics
from ppinfer.daemons.options import RANDOMIZERS
from ppinfer.encoding.documents import check_private
from ppinfer.errors import ConfigError, PPInferError, ServerError
from ppinfer.paillier import (
    PRIVATE_KEY_FILE,
    PrivateKey,
    PublicKey,
    RandomizerPool,
    load_private_key,
)
from ppinfer.paillier.fixedbase import FixedBaseRandomizers
from ppinfer.paillier.linear import start_workers
from ppinfer.protocol.key_core import KeyServerCore
from ppinfer.protocol.key_core import Observer as KeyObserver
from ppinfer.protocol.model_evaluator import ModelEvaluator, Observer
from ppinfer.protocol.session_keys import key_server_fingerprint, public_bytes
from ppinfer.protocol.x25519_keyfile import X25519_PRIVATE_FILE, load_x25519
from ppinfer.rpc.key_link import STAYS_UP, KeyServerClient
from ppinfer.rpc.key_servicer import KeyRing, create_key_server
from ppinfer.rpc.model_servicer import (
    ModelServicer,
    create_admin_server,
    create_model_server,
)
from ppinfer.rpc.server_factory import Health, Listening
from ppinfer.rpc.session_limits import SessionLimits
from ppinfer.rpc.tls import ChannelTls, ServerTls

__all__ = [
    "KeyServerWatch",
    "Running",
    "build_key_server",
    "build_model_server",
    "check_key_server",
    "check_key_size",
    "check_model_server",
    "key_server_from_settings",
    "run_key_server",
    "run_model_server",
]

log = logging.getLogger("ppinfer.servers")

#: Smallest Paillier key the daemons serve without allow_small_keys (tests, load runs).
MIN_SERVING_KEY_BITS = 2048
#: gRPC threads A keeps beyond its session limit, for health checks and GetServerInfo.
RESERVED_THREADS = 4


def check_key_size(bits: int, allow_small_keys: bool) -> None:
    """Refuse to serve a key below MIN_SERVING_KEY_BITS unless explicitly allowed."""
    if bits < MIN_SERVING_KEY_BITS and not allow_small_keys:
        raise PPInferError(
            f"the Paillier key has {bits} bits; the servers need at least "
            f"{MIN_SERVING_KEY_BITS} (ppinfer keygen --bits 2048), or allow_small_keys "
            "(--allow-small-keys) for tests and load runs"
        )


@dataclass
class Running:
    """A built server: its gRPC server, port, health, and how to drain and close it."""

    server: grpc.Server
    port: int
    health: Health
    metrics: Metrics
    drain: Callable[[float], bool] = lambda _timeout: True
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    reload: Callable[[], None] | None = None
    admin: Listening | None = None  # A's operators' listener (GetStats), if configured

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, let calls in flight finish (up to ``grace`` s), stop, clean up."""
        self.health.shut_down()
        if grace:
            started = time.monotonic()
            drained = self.drain(grace)
            if not drained:
                log.warning("sessions still busy after %.0f s; cancelling them", grace)
            grace = max(0.0, grace - (time.monotonic() - started))
        self.server.stop(grace).wait()
        for cleanup in self.cleanups:
            cleanup()


def build_key_core(
    private: PrivateKey,
    static: X25519PrivateKey,
    pool_size: int,
    max_sessions: int,
    observer: KeyObserver | None,
    randomizers: str = "short",
) -> KeyServerCore:
    if randomizers not in RANDOMIZERS:
        raise PPInferError(f"randomizers must be one of {RANDOMIZERS}, not {randomizers!r}")
    if randomizers == "short":  # the comb holds the GIL: one randomizer per hand-off
        pool = RandomizerPool(
            private.public,
            private,
            pool_size,
            generator=FixedBaseRandomizers(private),
            refill_batch=1,
        )
    else:
        pool = RandomizerPool(private.public, private, pool_size)
    return KeyServerCore(private, static, pool, max_sessions=max_sessions, observer=observer)


def build_key_server(
    private: PrivateKey,
    static: X25519PrivateKey,
    listen: str = "127.0.0.1:0",
    pool_size: int = 4096,
    workers: int = 64,
    observer: KeyObserver | None = None,
    tls: ServerTls | None = None,
    max_sessions: int = 1024,
    retire_seconds: float = 60.0,
    randomizers: str = "short",
    allow_small_keys: bool = False,
) -> tuple[Running, KeyRing]:
    """B with its key loaded: SERVING from the start."""
    check_key_size(private.public.bits, allow_small_keys)
    core = build_key_core(private, static, pool_size, max_sessions, observer, randomizers)
    keys = KeyRing(core, retire_seconds)
    try:
        listening = create_key_server(keys, listen, workers, tls)
    except PPInferError:  # a busy port: stop the randomizer pool before saying so
        keys.close()
        raise
    metrics = Metrics(peer=False)  # B watches no peer: A follows B, not the other way
    metrics.export_stats(keys.stats)
    metrics.pool_fill.set_function(lambda: keys.current.pool.stats().size)
    metrics.sessions.set_function(lambda: keys.current.stats().get("open_sessions", 0))
    listening.health.set(True)
    metrics.serving.set_function(lambda: int(listening.health.serving))
    running = Running(
        listening.server, listening.port, listening.health, metrics, cleanups=[keys.close]
    )
    return running, keys


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
) -> Running:
    """A, connected to B (waiting up to ``wait_seconds`` for it) and SERVING."""
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

    def evaluators(public: PublicKey) -> dict[str, ModelEvaluator]:
        check_key_size(public.bits, allow_small_keys)
        pool = RandomizerPool(public, capacity=256)
        pools.append(pool)
        return {
            program.name: ModelEvaluator(
                program, public, pool, observer, on_step=metrics.step_observer(program.name)
            )
            for program in programs
        }

    servicer = ModelServicer(
        evaluators(public),
        lambda key, remaining: client.link(key.ciphertext_bytes, key.key_id, remaining),
        x25519,
        client.stats,
        client.counters,
        limits,
        metrics,
        allow_client_aided=allow_client_aided,
        open_timeout=open_timeout,
        idle_timeout=idle_timeout,
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
        client.close()
        raise
    listening, admin = bound[0], (bound[1] if admin_listen else None)
    if allow_client_aided:
        log.warning(
            "client-aided sessions are on: that mode trusts each client's Paillier key, and "
            "a malformed key lets a client read the weights; use it for benchmarks only"
        )
    health = listening.health
    start_workers()  # before SERVING: the first request should not wait for them

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
        client.close()

    running = Running(listening.server, listening.port, health, metrics, servicer.drain, [close])
    if admin is not None:
        admin.health.set(True)
        running.admin = admin
    return running


def check_threads(workers: int, max_sessions: int) -> None:
    """Every session holds one of A's gRPC threads for its whole life: keep some over."""
    if workers < max_sessions + RESERVED_THREADS:
        raise ConfigError(
            f"workers ({workers}) must be at least max_sessions ({max_sessions}) + "
            f"{RESERVED_THREADS}: each session holds a thread, and health checks and "
            "GetServerInfo need some left"
        )


def _serve(running: Running, announcement: str, settings: dict[str, Any]) -> int:
    """Start, print the announcement (tools wait for it), block until SIGTERM or SIGINT."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if running.reload is not None:
        reload = running.reload
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=reload).start())
    else:  # the default action would end the process without a word
        signal.signal(
            signal.SIGHUP,
            lambda *_: log.info("SIGHUP ignored: this daemon reloads nothing; restart it"),
        )
    if settings["metrics_listen"]:
        _, stop_metrics = serve_metrics(running.metrics, settings["metrics_listen"])
        running.cleanups.append(stop_metrics)
    running.server.start()
    if running.admin is not None:
        running.admin.server.start()
        host = settings["admin_listen"].rsplit(":", 1)[0]
        _announce(f"admin (GetStats) on {host}:{running.admin.port}", settings)
    _announce(announcement, settings)
    stop.wait()
    grace = float(settings["drain_seconds"])
    log.info("stopping: NOT_SERVING, draining calls in flight for up to %.0f s", grace)
    running.stop(grace)
    log.info("stopped")
    return 0


def _announce(line: str, settings: dict[str, Any]) -> None:
    """A line tools wait for on stdout (its last word the address), in the log format."""
    if settings["log_format"] == "json":
        line = json.dumps({"event": "announce", "message": line, "address": line.rsplit(" ", 1)[1]})
    print(line, flush=True)


def _server_tls(
    settings: dict[str, Any], peer_ca: str | None = None, peer_name: str | None = None
) -> ServerTls | None:
    """The daemon's TLS settings (with the settings naming the client CA and the client
    certificate's name, for mutual TLS), or None with a warning when --insecure."""
    _check_common(settings)
    if settings["insecure"]:
        given = [name for name in ("tls_cert", "tls_key", peer_ca) if name and settings[name]]
        if given:
            raise ConfigError(
                f"--insecure contradicts {', '.join(given)}: drop the TLS files for plaintext, "
                "or drop --insecure to use them"
            )
        log.warning("--insecure: no TLS; anyone on the network can read and alter traffic")
        return None
    if not settings["tls_cert"] or not settings["tls_key"]:
        raise PPInferError(
            "give tls_cert and tls_key (ppinfer certs makes development ones), "
            "or --insecure for plaintext on a trusted development host"
        )
    if not settings["allow_loose_permissions"]:
        check_private(Path(settings["tls_key"]), "TLS private key")
    ca = settings[peer_ca] if peer_ca else None
    name = settings[peer_name] if ca and peer_name else None
    return ServerTls.from_files(settings["tls_cert"], settings["tls_key"], ca, name)


def check_address(value: str, name: str) -> None:
    """HOST:PORT with a port: without one gRPC would quietly take 443."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name} must be HOST:PORT with a port number, not {value!r}")


def _check_common(settings: dict[str, Any]) -> None:
    """What both daemons' settings must satisfy before anything is loaded."""
    check_address(settings["listen"], "listen")
    for name in ("metrics_listen", "admin_listen", "key_server"):
        if settings.get(name):
            check_address(settings[name], name)
    for name, least in (("workers", 1), ("max_sessions", 1), ("pool", 0)):
        if name in settings and settings[name] < least:
            raise ConfigError(f"{name} must be at least {least}, not {settings[name]}")


def _load_key_folder(
    keys: Path, allow_loose_permissions: bool = False
) -> tuple[PrivateKey, X25519PrivateKey]:
    if not allow_loose_permissions:
        check_private(keys / PRIVATE_KEY_FILE, "Paillier secret key")
        check_private(keys / X25519_PRIVATE_FILE, "X25519 secret key")
    return load_private_key(keys / PRIVATE_KEY_FILE), load_x25519(keys / X25519_PRIVATE_FILE)


def _load_key_server(
    settings: dict[str, Any],
) -> tuple[PrivateKey, X25519PrivateKey, ServerTls | None]:
    """Everything B's settings name, loaded and checked."""
    if not settings["keys"]:
        raise PPInferError("give keys: the folder from ppinfer keygen")
    private, static = _load_key_folder(Path(settings["keys"]), settings["allow_loose_permissions"])
    check_key_size(private.public.bits, settings["allow_small_keys"])
    tls = _server_tls(settings, "client_ca", "client_name")
    if tls is not None and tls.client_ca is None:
        raise PPInferError(
            "give client_ca: the key server accepts only the model server's certificate"
        )
    return private, static, tls


def check_key_server(settings: dict[str, Any]) -> str:
    """What B would serve, if its settings can be used (else the error)."""
    private, static, _ = _load_key_server(settings)
    fingerprint = key_server_fingerprint(private.public.n_bytes, public_bytes(static.public_key()))
    return f"key id {fingerprint} ({private.public.bits}-bit Paillier key; clients pin the id)"


def key_server_from_settings(settings: dict[str, Any]) -> tuple[Running, KeyRing]:
    """B as its settings describe it (not started), reloading its key folder on
    ``running.reload`` (SIGHUP) with the same settings."""
    private, static, tls = _load_key_server(settings)
    running, keys = build_key_server(
        private, static, settings["listen"], settings["pool"], settings["workers"],
        tls=tls, max_sessions=settings["max_sessions"], randomizers=settings["randomizers"],
        allow_small_keys=settings["allow_small_keys"],
    )  # fmt: skip

    def reload() -> None:
        try:
            private, static = _load_key_folder(
                Path(settings["keys"]), settings["allow_loose_permissions"]
            )
            check_key_size(private.public.bits, settings["allow_small_keys"])
            keys.rotate(
                build_key_core(
                    private,
                    static,
                    settings["pool"],
                    settings["max_sessions"],
                    None,
                    settings["randomizers"],
                )
            )
        except PPInferError as error:  # B serves on under the key it has
            keys.reload_failures += 1
            log.error("SIGHUP: key folder not reloaded, still serving the old key: %s", error)

    running.reload = reload
    return running, keys


def run_key_server(settings: dict[str, Any]) -> int:
    running, keys = key_server_from_settings(settings)
    host = settings["listen"].rsplit(":", 1)[0]
    return _serve(
        running,
        f"ppinfer key server {keys.current.fingerprint} listening on {host}:{running.port}",
        settings,
    )


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
    return _ModelServerSettings(plans, _server_tls(settings), _key_server_tls(settings), limits)


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
    )
    host = settings["listen"].rsplit(":", 1)[0]
    names = ", ".join(plan.name for plan in loaded.plans)
    return _serve(
        running, f"ppinfer model server ({names}) listening on {host}:{running.port}", settings
    )
