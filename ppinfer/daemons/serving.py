"""What both daemons share: the running servers and their stop, the serve loop (signals,
announcement, drain), TLS and address settings, and the key-size and thread checks.

A daemon starts NOT_SERVING, says SERVING once it can serve, and on SIGTERM or SIGINT goes
NOT_SERVING, drains the calls in flight for up to ``drain_seconds``, and stops.
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

from ppinfer.daemons.metrics import Metrics, serve_metrics
from ppinfer.encoding.documents import check_private
from ppinfer.errors import ConfigError, PPInferError
from ppinfer.rpc.server_factory import Health, Listening
from ppinfer.rpc.tls import ServerTls

__all__ = [
    "MIN_SERVING_KEY_BITS",
    "RESERVED_THREADS",
    "Running",
    "announce",
    "check_address",
    "check_common",
    "check_key_size",
    "check_threads",
    "log",
    "serve_until_stopped",
    "server_tls",
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


def check_threads(workers: int, max_sessions: int) -> None:
    """Every session holds one of A's gRPC threads for its whole life: keep some over."""
    if workers < max_sessions + RESERVED_THREADS:
        raise ConfigError(
            f"workers ({workers}) must be at least max_sessions ({max_sessions}) + "
            f"{RESERVED_THREADS}: each session holds a thread, and health checks and "
            "GetServerInfo need some left"
        )


def serve_until_stopped(running: Running, announcement: str, settings: dict[str, Any]) -> int:
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
        announce(f"admin (GetStats) on {host}:{running.admin.port}", settings)
    announce(announcement, settings)
    stop.wait()
    grace = float(settings["drain_seconds"])
    log.info("stopping: NOT_SERVING, draining calls in flight for up to %.0f s", grace)
    running.stop(grace)
    log.info("stopped")
    return 0


def announce(line: str, settings: dict[str, Any]) -> None:
    """A line tools wait for on stdout (its last word the address), in the log format."""
    if settings["log_format"] == "json":
        line = json.dumps({"event": "announce", "message": line, "address": line.rsplit(" ", 1)[1]})
    print(line, flush=True)


def server_tls(
    settings: dict[str, Any], peer_ca: str | None = None, peer_name: str | None = None
) -> ServerTls | None:
    """The daemon's TLS settings (with the settings naming the client CA and the client
    certificate's name, for mutual TLS), or None with a warning when --insecure."""
    check_common(settings)
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


def check_common(settings: dict[str, Any]) -> None:
    """What both daemons' settings must satisfy before anything is loaded."""
    check_address(settings["listen"], "listen")
    for name in ("metrics_listen", "admin_listen", "key_server"):
        if settings.get(name):
            check_address(settings[name], name)
    for name, least in (("workers", 1), ("max_sessions", 1), ("pool", 0)):
        if name in settings and settings[name] < least:
            raise ConfigError(f"{name} must be at least {least}, not {settings[name]}")
