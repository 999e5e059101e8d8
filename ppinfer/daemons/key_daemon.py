"""Key server B as a daemon: its key folder loaded and checked, its core and key ring
built (also in-process by tests), served until stopped. B reloads its key folder on
SIGHUP (key rotation: sessions in flight keep the old key until they end).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ppinfer.daemons.metrics import Metrics
from ppinfer.daemons.options import RANDOMIZERS
from ppinfer.daemons.serving import (
    Running,
    check_key_size,
    log,
    serve_until_stopped,
    server_tls,
)
from ppinfer.encoding.documents import check_private
from ppinfer.errors import PPInferError
from ppinfer.paillier import (
    PRIVATE_KEY_FILE,
    PrivateKey,
    RandomizerPool,
    load_private_key,
)
from ppinfer.paillier.fixedbase import FixedBaseRandomizers
from ppinfer.protocol.key_core import MAX_ENTRIES, KeyServerCore
from ppinfer.protocol.key_core import Observer as KeyObserver
from ppinfer.protocol.session_keys import key_server_fingerprint, public_bytes
from ppinfer.protocol.x25519_keyfile import X25519_PRIVATE_FILE, load_x25519
from ppinfer.rpc.key_servicer import KeyRing, create_key_server
from ppinfer.rpc.tls import ServerTls

__all__ = [
    "build_key_core",
    "build_key_server",
    "check_key_server",
    "key_server_from_settings",
    "run_key_server",
]


def build_key_core(
    private: PrivateKey,
    static: X25519PrivateKey,
    pool_size: int,
    max_sessions: int,
    observer: KeyObserver | None,
    randomizers: str = "short",
    max_entries: int = MAX_ENTRIES,
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
    return KeyServerCore(
        private, static, pool, max_sessions=max_sessions, observer=observer,
        max_entries=max_entries,
    )  # fmt: skip


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
    max_entries: int = MAX_ENTRIES,
) -> tuple[Running, KeyRing]:
    """B with its key loaded: SERVING from the start."""
    check_key_size(private.public.bits, allow_small_keys)
    core = build_key_core(
        private, static, pool_size, max_sessions, observer, randomizers, max_entries
    )
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
    tls = server_tls(settings, "client_ca", "client_name")
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
        allow_small_keys=settings["allow_small_keys"], max_entries=settings["max_entries"],
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
                    settings["max_entries"],
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
    return serve_until_stopped(
        running,
        f"ppinfer key server {keys.current.fingerprint} listening on {host}:{running.port}",
        settings,
    )
