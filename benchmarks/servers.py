"""The daemons a benchmark measures, and the machine it runs on.

:func:`start_servers` runs B and A as daemons (``ppinfer serve-key``, ``ppinfer
serve-model``) with development TLS on loopback; :func:`stats` reads A's counters
(and B's, which A relays) from its admin listener; :func:`wait_refilled` waits until B's
randomizer pool is full again, so that the refill a run causes lands in its own figures.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

from ppinfer.errors import PPInferError

__all__ = ["machine", "modmul_seconds", "start_servers", "stats", "wait_refilled"]


def stats(address: str, ca: Path) -> dict[str, int]:
    import grpc

    from ppinfer.rpc.tls import ChannelTls
    from ppinfer.v1 import model_service_pb2_grpc, tensors_pb2

    with grpc.secure_channel(address, ChannelTls.from_files(ca).credentials()) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        return dict(stub.GetStats(tensors_pb2.StatsRequest(), timeout=30).counters)


def wait_refilled(address: str, ca: Path, target: int, timeout: float = 900.0) -> None:
    """Wait until B's randomizer pool holds ``target`` again: the refill work a run causes
    is then in B's CPU figure for that run, not in the next one's."""
    deadline = time.monotonic() + timeout
    while stats(address, ca).get("key_server.pool_size", target) < target:
        if time.monotonic() > deadline:
            raise PPInferError("the key server's randomizer pool did not refill in time")
        time.sleep(0.2)


def _settled_pool(address: str, ca: Path) -> int:
    """B's pool size once it stops growing (full, as at any idle moment)."""
    size = -1
    while True:
        now = stats(address, ca).get("key_server.pool_size", 0)
        if now == size:
            return size
        size = now
        time.sleep(1.0)


def modmul_seconds(bits: int, count: int = 20_000) -> float:
    """One multiplication mod n^2 of full-size operands (n of ``bits`` bits), in seconds:
    the unit A's linear algebra is measured in, timed in the benchmark's own run."""
    import secrets

    from gmpy2 import mpz

    from benchmarks.primitives import time_per_op

    modulus = mpz(secrets.randbits(2 * bits) | (1 << (2 * bits - 1)) | 1)
    left = [mpz(secrets.randbelow(int(modulus))) for _ in range(count)]
    right = [mpz(secrets.randbelow(int(modulus))) for _ in range(count)]
    return time_per_op(
        lambda: [a * b % modulus for a, b in zip(left, right, strict=True)], count, repeats=5
    )


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def start_servers(
    plans: list[Path],
    key_bits: int,
    folder: Path,
    key_flags: tuple[str, ...] = (),
    model_flags: tuple[str, ...] = (),
    empty_store: bool = False,
) -> dict[str, Any]:
    """B and A as daemons with development TLS; waits until B's pool has settled. A runs
    with an admin listener (GetStats) and client-aided sessions on (the baseline). With
    ``empty_store``, a second A on the same B (``"empty"``) runs without a store
    (``--store-size 0``): every request there makes its own entry."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from ppinfer.daemons.launch import start_daemon
    from ppinfer.paillier import generate_keypair, save_keypair
    from ppinfer.protocol.x25519_keyfile import save_x25519
    from ppinfer.rpc.dev_certificates import DevTls

    keys = folder / f"keys-{key_bits}"
    public, private = generate_keypair(key_bits)
    save_keypair(keys, public, private)
    save_x25519(keys, X25519PrivateKey.generate())
    tls = DevTls.create(folder / f"tls-{key_bits}")
    small = ["--allow-small-keys"] if key_bits < 2048 else []
    key = start_daemon(
        [
            "serve-key", "--keys", str(keys), "--listen", "127.0.0.1:0",
            *tls.key_server_flags(), *small, *key_flags,
        ],
        folder / "b.log",
    )  # fmt: skip
    arguments = [
        "serve-model", "--key-server", key.address, "--listen", "127.0.0.1:0",
        "--admin-listen", "127.0.0.1:0", "--allow-client-aided",
        *tls.model_server_flags(), *small, *model_flags,
    ]  # fmt: skip
    for plan in plans:
        arguments += ["--model", str(plan)]
    started = {"key": key}
    try:
        started["model"] = start_daemon(arguments, folder / "a.log")
        if empty_store:
            started["empty"] = start_daemon([*arguments, "--store-size", "0"], folder / "a0.log")
    except Exception:
        for daemon in started.values():
            daemon.stop()
        raise
    admin = started["model"].admin
    return {**started, "tls": tls, "pool": _settled_pool(admin, tls.ca)}
