"""``ppinfer bench load``: sustained use of one pair of daemons, W1 (MLP 784-128-128-10).

B and A run as daemons with TLS (as in ``bench latency``), A with a store of
``store_size`` entries. The run has three phases, in order:

- single: once the store is full, one client sends ``single`` inferences back to back
  (the store warm for all of them: ``store_size`` covers them and the session's tickets);
- refill: no client; A's filler makes the entries the single phase took. A's and B's
  process CPU (user+sys of each tree, /proc) and the A<->B bytes over it, divided by the
  entries made, are the offline cost per entry;
- concurrent: ``clients`` sessions at once, each sending back to back for ``seconds``.
  Past the store's depth every request waits for an entry, so this is the sustained
  throughput, bounded by the offline cost.

Every answer is checked against the plan's exact fixed-point simulation (a wrong answer
is a top class that differs, or a logit off by more than 2e-3); every error is counted by
status (clients do not retry, so nothing is hidden). Memory is the resident size of each
daemon's process tree, sampled every 0.2 s (peak of the sum), and the sum of each
process's own peak (VmHWM).
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

SCHEMA_VERSION = 2
LOGIT_TOLERANCE = 2e-3
#: Tickets a session binds ahead (the client's default max_in_flight).
SESSION_TICKETS = 2


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
    deadline: float | None = None,
) -> None:
    """One client: one session, its inferences in order, each answer checked; with a
    ``deadline`` (time.perf_counter), round the inputs again until it passes."""
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
                if deadline is not None:  # the deadline counts from the common start
                    deadline += time.perf_counter()
            count = len(inputs)
            index = 0
            while index < count or (deadline is not None and time.perf_counter() < deadline):
                x, reference = inputs[index % count], expected[index % count]
                index += 1
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
    seconds: float | None = None,
) -> dict[str, Any]:
    """``clients`` sessions at once, ``per_client`` inferences each (with ``seconds``:
    at least, and on until that long has passed); figures of the phase."""
    start = threading.Barrier(clients + 1)
    outs: list[dict[str, Any]] = [{} for _ in range(clients)]
    threads = []
    for index in range(clients):
        picks = [(index * per_client + k) % len(inputs) for k in range(per_client)]
        thread = threading.Thread(
            target=_client_run,
            args=(address, ca, inputs[picks], expected[picks], start, outs[index], seconds),
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
    store = {
        key: stats_after.get(f"{_STORE}{key}", 0) - stats_before.get(f"{_STORE}{key}", 0)
        for key in ("taken", "missed", "made")
    }
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
        "store": store,
        "memory": memory,
    }


_STORE = "model_server.W1.store."
_LINK = ("model_server.key_link.bytes_sent", "model_server.key_link.bytes_received")


def _refill(admin: str, ca: Path, capacity: int, pids: dict[str, int]) -> dict[str, Any]:
    """Wait, with no client, until A's store is full again; the offline cost per entry."""
    from benchmarks.servers import stats

    before = stats(admin, ca)
    cpu_before = {name: tree_cpu(pid) for name, pid in pids.items()}
    began = time.perf_counter()
    while (now := stats(admin, ca)).get(f"{_STORE}store_depth", 0) < capacity:
        time.sleep(0.2)
    wall = time.perf_counter() - began
    cpu = {name: tree_cpu(pid) - cpu_before[name] for name, pid in pids.items()}
    made = now.get(f"{_STORE}made", 0) - before.get(f"{_STORE}made", 0)
    link = sum(now.get(key, 0) - before.get(key, 0) for key in _LINK)
    return {
        "entries_made": made,
        "wall_s": wall,
        "entries_per_s": made / wall if wall > 0 else 0.0,
        "cpu_s": cpu,
        "cpu_s_per_entry": {name: value / made if made else 0.0 for name, value in cpu.items()},
        "a_b_bytes_per_entry": link / made if made else 0.0,
    }


def run_load(
    clients: int = 8,
    seconds: float = 60.0,
    single: int = 200,
    key_bits: int = 2048,
    store_size: int | None = None,
    quick: bool = False,
    weight_bits: int | None = BENCH_WEIGHT_BITS,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Everything measured in one run, as the JSON document the report is made from.
    ``store_size`` None: enough for the single phase and its session's tickets."""
    from benchmarks.servers import machine, start_servers
    from benchmarks.workloads import build_workload, compile_workload
    from ppinfer.compiler.plan import save_plan
    from ppinfer.compiler.program import Program
    from ppinfer.compiler.simulator import simulate_batch

    if clients < 1 or single < 1 or seconds <= 0:
        raise ValueError("clients and single must be at least 1, seconds above 0")
    capacity = single + SESSION_TICKETS if store_size is None else store_size
    say("training and compiling W1 (784-128-128-10, ReLU) ...")
    workload = build_workload("W1", epochs_scale=0.1 if quick else 1.0)
    compiled = compile_workload(workload, weight_bits=weight_bits)
    plan = compiled.plan
    inputs = workload.test_inputs(min(len(workload.split.test_x), max(single, 8 * clients)))
    expected = simulate_batch(Program(plan), inputs)
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "suite": "load",
        "quick": quick,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "workload": workload.description,
        "weight_bits": compiled.weight_bits,
        "key_bits": key_bits,
        "store_size": capacity,
        "tls": True,
    }
    with tempfile.TemporaryDirectory(prefix="ppinfer-load-") as temporary:
        folder = Path(temporary)
        save_plan(plan, folder / "W1.ppi")
        limit = str(clients + 16)
        say(f"starting B and A ({key_bits}-bit key, TLS, a store of {capacity}) ...")
        servers = start_servers(
            [folder / "W1.ppi"],
            key_bits,
            folder,
            model_flags=(
                *("--max-sessions", limit, "--max-sessions-per-peer", limit),
                *("--open-burst-per-peer", limit, "--store-size", str(capacity)),
            ),
        )
        try:
            address, ca = servers["model"].address, servers["tls"].ca
            admin = servers["model"].admin
            pids = {"A": servers["model"].process.pid, "B": servers["key"].process.pid}
            watch = _MemoryWatch(pids)
            say(f"filling the store ({capacity} entries) ...")
            _refill(admin, ca, capacity, pids)  # usually full already: B's pool settled
            say(f"one client, {single} inferences back to back, the store warm ...")
            document["single"] = _phase(address, admin, ca, 1, inputs, expected, single, pids)
            say("refilling the store, no client: the offline cost per entry ...")
            document["refill"] = _refill(admin, ca, capacity, pids)
            say(f"{clients} clients at once for {seconds:g} s ...")
            document["concurrent"] = _phase(
                address, admin, ca, clients, inputs, expected, 1, pids, seconds
            )
            document["memory"] = watch.stop()
        finally:
            servers["model"].stop()
            servers["key"].stop()
    document["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return document


def _cores_busy(phase: dict[str, Any]) -> float:
    """A's and B's CPU seconds (process trees) per second of the phase's wall time."""
    return sum(phase["cpu_s"].values()) / phase["wall_s"] if phase["wall_s"] > 0 else 0.0


def _mib(value: int) -> str:
    return f"{value / 2**20:.1f} MiB"


def _ms(seconds: float | None) -> str:
    return f"{(seconds or 0.0) * 1000:,.1f}"


def to_markdown(document: dict[str, Any]) -> str:
    single, concurrent, refill = document["single"], document["concurrent"], document["refill"]
    machine = document["machine"]
    lines = [
        f"# Sustained load: W1, {document['key_bits']}-bit keys, TLS, a store of "
        f"{document['store_size']} entries",
        "",
        f"Workload {document['workload']}, {document['weight_bits']}-bit weights (the "
        f"compiler's pick); machine {machine['platform']}, {machine['cpus']} CPUs; run "
        f"{document['started']} to {document['finished']}"
        f"{' (quick)' if document['quick'] else ''}. Made by `ppinfer bench load`; every "
        "figure comes from this one run.",
        "",
        "| phase | clients | inferences | errors | wrong | wall s | inferences/s | median ms "
        "| p95 ms | max ms | store taken / missed | A CPU s | B CPU s | cores busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, phase in (("single, store warm", single), ("concurrent", concurrent)):
        errors = sum(phase["errors"].values())
        store = phase["store"]
        lines.append(
            f"| {name} | {phase['clients']} | {phase['inferences_done']} | {errors} "
            f"| {phase['wrong_answers']} | {phase['wall_s']:.1f} "
            f"| {phase['throughput_per_s']:.2f} | {_ms(phase['latency_median_s'])} "
            f"| {_ms(phase['latency_p95_s'])} | {_ms(phase['latency_max_s'])} "
            f"| {store['taken']:g} / {store['missed']:g} | {phase['cpu_s']['A']:.1f} "
            f"| {phase['cpu_s']['B']:.1f} | {_cores_busy(phase):.2f} |"
        )
    per_entry = refill["cpu_s_per_entry"]
    total = per_entry["A"] + per_entry["B"]
    lines += [
        "",
        "Single: one session, its requests back to back once the store is full; the store",
        "covers all of them and the tickets the session holds ahead. Concurrent: every",
        "session sends back to back for the whole phase, so once the store's depth is used",
        "up each request waits for an entry: the sustained rate is what the offline half",
        "allows on this machine.",
        "",
        "## The offline half: cost per entry (refill with no client)",
        "",
        "| entries made | wall s | entries/s | A CPU s per entry | B CPU s per entry "
        "| A+B CPU s per entry | A<->B KiB per entry |",
        "|---|---|---|---|---|---|---|",
        f"| {refill['entries_made']} | {refill['wall_s']:.1f} | {refill['entries_per_s']:.2f} "
        f"| {per_entry['A']:.3f} | {per_entry['B']:.3f} | {total:.3f} "
        f"| {refill['a_b_bytes_per_entry'] / 1024:,.1f} |",
        "",
        f"At {total:.3f} CPU-s per entry, {machine['cpus']} cores make at most "
        f"{machine['cpus'] / total if total else 0:.2f} entries per second: the ceiling of",
        "sustained throughput whatever the online half costs.",
        "",
        "## Memory (whole run)",
        "",
        "| daemon | sampled peak RSS (tree) | sum of per-process peaks (VmHWM) |",
        "|---|---|---|",
    ]
    for name in ("A", "B"):
        memory = document["memory"][name]
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
