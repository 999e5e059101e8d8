"""The benchmark's client, in a process of its own: ``python -m benchmarks.latency_client``.

It opens one session in the given mode (with ``--warm``, once A's store holds that many
entries), runs the inferences one at a time (no pipelining: every figure is one
inference's own; back to back, or with ``--pool``, each once B's randomizer pool is
full again, as after any idle moment), and prints one JSON document
on stdout. CPU is the whole process's user+sys time from the OS (``getrusage``), gRPC's
threads included; beside it, the CPU of the client's own work (the stub's thread time in
encode, mask, encrypt, decrypt, unseal), which leaves out gRPC's idle wake-ups while it
waits. Bytes are the serialized messages plus an estimate of their framing.
The client-aided key is made before the first inference and reported apart (setup).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread; microseconds
    return usage.ru_utime + usage.ru_stime


@contextmanager
def _stats(admin: str, tls: Any) -> Iterator[Any]:
    """A ModelService stub for A's counters (on its admin listener), on a channel closed
    when the block ends: no channel beside the session's is open while an inference is
    timed (an idle one would add its own wake-ups to the client's CPU)."""
    import grpc

    from ppinfer.v1 import model_service_pb2_grpc

    with grpc.secure_channel(admin, tls.credentials()) as channel:
        yield model_service_pb2_grpc.ModelServiceStub(channel)


def _wait_for_pool(stats: Any, target: int, timeout: float = 900.0) -> None:
    """Wait until B's randomizer pool holds ``target`` (as after any idle moment)."""
    from ppinfer.v1 import tensors_pb2

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counters = stats.GetStats(tensors_pb2.StatsRequest(), timeout=30).counters
        if counters.get("key_server.pool_size", target) >= target:
            return
        time.sleep(0.1)
    raise TimeoutError("the key server's randomizer pool did not refill")


def _wait_for_store(stats: Any, model: str, entries: int, timeout: float = 1800.0) -> None:
    """Wait until A's store for ``model`` holds ``entries`` (a warm store)."""
    deadline = time.monotonic() + timeout
    while _model_counters(stats, model).get("store.store_depth", 0) < entries:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the model server's store did not reach {entries} entries")
        time.sleep(0.1)


def _model_counters(stats: Any, model: str) -> dict[str, int]:
    """A's counters for ``model`` (``stats``: a ModelService stub), without their prefix."""
    from ppinfer.v1 import tensors_pb2

    counters = stats.GetStats(tensors_pb2.StatsRequest(), timeout=30).counters
    prefix = f"model_server.{model}."
    return {k[len(prefix) :]: int(v) for k, v in counters.items() if k.startswith(prefix)}


def run(
    server: str,
    admin: str,
    model: str,
    mode: str,
    inputs: np.ndarray,
    key_bits: int,
    ca: str,
    pool: int = 0,
    warm: int = 0,
) -> dict[str, Any]:
    from ppinfer.rpc.tls import ChannelTls

    tls = ChannelTls.from_files(ca)
    return _run(server, admin, model, mode, inputs, key_bits, tls, pool, warm)


def _run(
    server: str,
    admin: str,
    model: str,
    mode: str,
    inputs: np.ndarray,
    key_bits: int,
    tls: Any,
    pool: int,
    warm: int = 0,
) -> dict[str, Any]:
    from ppinfer.client import Client

    if warm:
        with _stats(admin, tls) as stats:
            _wait_for_store(stats, model, warm)
    setup_started = _cpu()
    client: Any
    if mode == "two-server":
        client = Client(server, model=model, tls=tls)
    else:
        from ppinfer.rpc.aided_client import AidedClient

        client = AidedClient(server, model=model, key_bits=key_bits, tls=tls)
    setup_cpu = _cpu() - setup_started
    rows = []
    with client:
        for x in inputs:
            if pool:
                with _stats(admin, tls) as stats:
                    _wait_for_pool(stats, pool)
            before = dataclasses.replace(client.stats)  # a copy of the counters so far
            cpu, wall = _cpu(), time.perf_counter()
            logits = client.predict(x)
            wall, cpu = time.perf_counter() - wall, _cpu() - cpu
            spent = {
                field.name: getattr(client.stats, field.name) - getattr(before, field.name)
                for field in dataclasses.fields(before)
            }
            rows.append(
                {
                    "latency_s": wall,
                    "client_cpu_s": cpu,
                    "client_own_cpu_s": spent["cpu_seconds"],
                    "bytes_up": spent["bytes_up"],
                    "bytes_down": spent["bytes_down"],
                    "wire_bytes_up": spent["bytes_up"] + spent["framing_up"],
                    "wire_bytes_down": spent["bytes_down"] + spent["framing_down"],
                    "messages_up": spent["messages_up"],
                    "messages_down": spent["messages_down"],
                    "logits": logits.tolist(),
                }
            )
    return {"mode": mode, "setup_client_cpu_s": setup_cpu, "inferences": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--admin", required=True, help="A's admin listener, for its counters")
    parser.add_argument("--model", required=True)
    parser.add_argument("--mode", choices=["two-server", "client-aided"], required=True)
    parser.add_argument("--inputs", required=True, help=".npy file of inputs")
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--ca", required=True, help="CA certificate that signed A's")
    parser.add_argument(
        "--pool", type=int, default=0, help="before each inference, wait for B's pool to hold this"
    )
    parser.add_argument(
        "--warm", type=int, default=0, help="first wait for A's store to hold this many entries"
    )
    args = parser.parse_args(argv)
    inputs = np.load(args.inputs, allow_pickle=False)
    try:
        document = run(
            args.server,
            args.admin,
            args.model,
            args.mode,
            inputs,
            args.key_bits,
            args.ca,
            args.pool,
            args.warm,
        )
    except Exception as error:  # reported to the orchestrator, which stops with it
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return 1
    print(json.dumps(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
