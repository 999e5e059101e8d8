"""``ppinfer bench load``: many clients at once against one pair of daemons.

B and A run as daemons with TLS (as in ``bench latency``); N clients, each with its own
session, run M inferences each, all at once, on a W1-sized model (MLP 784-128-128-10,
ReLU). Every answer is checked against the plan's exact fixed-point simulation (a wrong
answer is a top class that differs, or a logit off by more than 2e-3); every error is
counted by status (clients do not retry, so nothing is hidden). In the same run, one
client alone gives the single-session throughput the concurrent figure is divided by: it
runs as many inferences as all clients together (at most :data:`SINGLE_MAX`), and each
phase starts with B's randomizer pool full, so both draw on the same stock.
Memory is the resident size of each daemon's process tree, sampled every 0.2 s (peak
of the sum), and the sum of each process's own peak (VmHWM).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.procfs import tree_cpu, tree_memory
from benchmarks.workloads import BENCH_WEIGHT_BITS

__all__ = ["run_load", "to_markdown"]

SCHEMA_VERSION = 1
LOGIT_TOLERANCE = 2e-3
#: Most inferences the one-client phase runs (as many as all clients together, up to this).
SINGLE_MAX = 40


class _MemoryWatch:
    """Samples the resident size of each daemon's tree until stopped; keeps the peaks."""

    def __init__(self, pids: dict[str, int], interval: float = 0.2) -> None:
        self.pids = pids
        self.peaks = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            for name, pid in self.pids.items():
                self.peaks[name] = max(self.peaks[name], tree_memory(pid)["rss_bytes"])

    def stop(self) -> dict[str, dict[str, int]]:
        self._stop.set()
        self._thread.join()
        return {
            name: {"sampled_peak_rss_bytes": self.peaks[name], **tree_memory(pid)}
            for name, pid in self.pids.items()
        }


def _client_run(
    address: str,
    ca: Path,
    inputs: npt.NDArray[np.float64],
    expected: npt.NDArray[np.float64],
    start: threading.Barrier | None,
    out: dict[str, Any],
) -> None:
    """One client: one session, its inferences in order, each answer checked."""
    from ppinfer.client import Client
    from ppinfer.errors import PPInferError, ServerError
    from ppinfer.rpc.tls import ChannelTls

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    wrong = 0
    try:
        with Client(address, tls=ChannelTls.from_files(ca), retries=0, timeout=600) as client:
            if start is not None:
                start.wait()
            for x, reference in zip(inputs, expected, strict=True):
                began = time.perf_counter()
                try:
                    logits = client.predict(x)
                except ServerError as error:
                    errors[error.status] += 1
                    break  # the session has ended
                latencies.append(time.perf_counter() - began)
                if logits.argmax() != reference.argmax() or (
                    np.max(np.abs(logits - reference)) > LOGIT_TOLERANCE
                ):
                    wrong += 1
    except ServerError as error:
        errors[error.status] += 1
    except PPInferError as error:
        errors[type(error).__name__] += 1
    out.update(latencies=latencies, errors=dict(errors), wrong=wrong)


def _phase(
    address: str,
    admin: str,
    ca: Path,
    clients: int,
    inputs: npt.NDArray[np.float64],
    expected: npt.NDArray[np.float64],
    per_client: int,
    pids: dict[str, int],
) -> dict[str, Any]:
    """``clients`` sessions at once, ``per_client`` inferences each; figures of the phase."""
    start = threading.Barrier(clients + 1)
    outs: list[dict[str, Any]] = [{} for _ in range(clients)]
    threads = []
    for index in range(clients):
        picks = [(index * per_client + k) % len(inputs) for k in range(per_client)]
        thread = threading.Thread(
            target=_client_run,
            args=(address, ca, inputs[picks], expected[picks], start, outs[index]),
            daemon=True,
        )
        thread.start()
        threads.append(thread)
    from benchmarks.servers import stats

    watch = _MemoryWatch(pids)
    stats_before = stats(admin, ca)
    cpu_before = {name: tree_cpu(pid) for name, pid in pids.items()}
    start.wait(timeout=600)
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    memory = watch.stop()
    stats_after = stats(admin, ca)
    pool: dict[str, float] = {
        key: stats_after.get(f"key_server.pool_{key}", 0)
        - stats_before.get(f"key_server.pool_{key}", 0)
        for key in ("hits", "misses")
    }
    taken = pool["hits"] + pool["misses"]
    pool["hit_rate"] = pool["hits"] / taken if taken else 1.0
    latencies = [latency for out in outs for latency in out.get("latencies", [])]
    errors: Counter[str] = Counter()
    for out in outs:
        errors.update(out.get("errors", {}))
    done = len(latencies)
    return {
        "clients": clients,
        "inferences_per_client": per_client,
        "inferences_done": done,
        "errors": dict(errors),
        "wrong_answers": sum(out.get("wrong", 0) for out in outs),
        "wall_s": wall,
        "throughput_per_s": done / wall if wall > 0 else 0.0,
        "latency_median_s": float(statistics.median(latencies)) if latencies else None,
        "latency_p95_s": float(np.percentile(latencies, 95)) if latencies else None,
        "latency_max_s": max(latencies) if latencies else None,
        "cpu_s": {name: tree_cpu(pid) - cpu_before[name] for name, pid in pids.items()},
        "key_server_pool": pool,
        "memory": memory,
    }


def run_load(
    clients: int = 32,
    inferences: int = 20,
    key_bits: int = 1024,
    quick: bool = False,
    weight_bits: int = BENCH_WEIGHT_BITS,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Everything measured in one run, as the JSON document the report is made from."""
    from benchmarks.servers import machine, start_servers, wait_refilled
    from benchmarks.workloads import build_workload, compile_workload
    from ppinfer.compiler.plan import save_plan
    from ppinfer.compiler.program import Program
    from ppinfer.compiler.simulator import simulate_batch

    if clients < 1 or inferences < 1:
        raise ValueError("clients and inferences must be at least 1")
    say("training and compiling W1 (784-128-128-10, ReLU) ...")
    workload = build_workload("W1", epochs_scale=0.1 if quick else 1.0)
    plan = compile_workload(workload, weight_bits=weight_bits).plan
    inputs = workload.test_inputs(min(len(workload.split.test_x), clients * inferences))
    expected = simulate_batch(Program(plan), inputs)
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "suite": "load",
        "quick": quick,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "workload": workload.description,
        "weight_bits": weight_bits,
        "key_bits": key_bits,
        "tls": True,
    }
    with tempfile.TemporaryDirectory(prefix="ppinfer-load-") as temporary:
        folder = Path(temporary)
        save_plan(plan, folder / "W1.ppi")
        limit = str(clients + 16)
        say(f"starting B and A ({key_bits}-bit key, TLS) ...")
        servers = start_servers(
            [folder / "W1.ppi"],
            key_bits,
            folder,
            model_flags=(
                *("--max-sessions", limit, "--max-sessions-per-peer", limit),
                *("--open-burst-per-peer", limit, "--workers", str(clients + 16 + 8)),
            ),
        )
        try:
            address, ca = servers["model"].address, servers["tls"].ca
            admin = servers["model"].admin
            pids = {"A": servers["model"].process.pid, "B": servers["key"].process.pid}
            # Both phases start with B's randomizer pool full and run as many inferences
            # (up to SINGLE_MAX alone), so neither lives on randomizers the other paid for.
            alone = min(clients * inferences, SINGLE_MAX)
            say(f"one client alone, {alone} inferences ...")
            document["single"] = _phase(address, admin, ca, 1, inputs, expected, alone, pids)
            wait_refilled(admin, ca, servers["pool"])
            say(f"{clients} clients at once, {inferences} inferences each ...")
            document["concurrent"] = _phase(
                address, admin, ca, clients, inputs, expected, inferences, pids
            )
        finally:
            servers["model"].stop()
            servers["key"].stop()
    single = document["single"]["throughput_per_s"]
    document["throughput_ratio"] = (
        document["concurrent"]["throughput_per_s"] / single if single else None
    )
    document["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return document


def _cores_busy(phase: dict[str, Any]) -> float:
    """A's and B's CPU seconds (process trees) per second of the phase's wall time."""
    return sum(phase["cpu_s"].values()) / phase["wall_s"] if phase["wall_s"] > 0 else 0.0


def _mib(value: int) -> str:
    return f"{value / 2**20:.1f} MiB"


def to_markdown(document: dict[str, Any]) -> str:
    single, concurrent = document["single"], document["concurrent"]
    lines = [
        f"# Load: {concurrent['clients']} clients x {concurrent['inferences_per_client']} "
        f"inferences, {document['key_bits']}-bit keys, TLS",
        "",
        f"Workload {document['workload']}, {document.get('weight_bits', 16)}-bit weights; "
        f"machine {document['machine']['platform']}, "
        f"{document['machine']['cpus']} CPUs; run {document['started']} to "
        f"{document['finished']}{' (quick)' if document['quick'] else ''}.",
        "",
        "| phase | inferences | errors | wrong | wall s | inferences/s | median s | p95 s "
        "| A CPU s | B CPU s | cores busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, phase in (("one client", single), ("concurrent", concurrent)):
        errors = sum(phase["errors"].values())
        lines.append(
            f"| {name} | {phase['inferences_done']} | {errors} | {phase['wrong_answers']} "
            f"| {phase['wall_s']:.1f} | {phase['throughput_per_s']:.2f} "
            f"| {phase['latency_median_s'] or 0:.3f} | {phase['latency_p95_s'] or 0:.3f} "
            f"| {phase['cpu_s']['A']:.1f} | {phase['cpu_s']['B']:.1f} "
            f"| {_cores_busy(phase):.2f} |"
        )
    cpus, alone = document["machine"]["cpus"], _cores_busy(single)
    lines += [
        "",
        f"Cores busy: A's and B's CPU time over the phase's wall time. One client alone "
        f"kept {alone:.2f} of the {cpus} cores busy, so more sessions could add at most "
        f"{cpus / alone if alone else 0:.2f}x by filling the rest; beyond that, only less CPU "
        "per inference raises the throughput.",
        "",
        f"Throughput, concurrent / one client: **{document['throughput_ratio']:.2f}x**. "
        "B's randomizer pool (hits / taken): "
        + ", ".join(
            f"{name} {phase['key_server_pool']['hit_rate']:.1%} of "
            f"{phase['key_server_pool']['hits'] + phase['key_server_pool']['misses']:,}"
            for name, phase in (("one client", single), ("concurrent", concurrent))
        )
        + ". Each phase started with B's pool full; the one client ran as many inferences "
        f"as all clients together, up to {SINGLE_MAX}.",
        "",
        "| daemon | sampled peak RSS (tree) | sum of per-process peaks (VmHWM) |",
        "|---|---|---|",
    ]
    for name in ("A", "B"):
        memory = concurrent["memory"][name]
        lines.append(
            f"| {name} | {_mib(memory['sampled_peak_rss_bytes'])} "
            f"| {_mib(memory['peak_rss_bytes'])} |"
        )
    if concurrent["errors"]:
        lines += ["", "Errors by status: " + json.dumps(concurrent["errors"])]
    return "\n".join(lines) + "\n"


def write_outputs(document: dict[str, Any], json_path: Path) -> list[Path]:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    markdown = json_path.with_suffix(".md")
    markdown.write_text(to_markdown(document))
    return [json_path, markdown]
