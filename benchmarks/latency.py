"""``ppinfer bench latency``: the two-server protocol against the client-aided baseline,
and TenSEAL beside both, on the same models, key size and run.

Key server B and model server A run as separate processes (``ppinfer serve-key`` and
``ppinfer serve-model``); every (workload, mode) runs its inferences in a client
process of its own (:mod:`benchmarks.latency_client`), one at a time. The two-server
mode runs them back to back once A's stores are full (as a user of the defaults sees it);
the store-empty mode runs them on a second A without a store, so each makes its own
entry (the first request after a start), each once B's randomizer pool is full again
(after an idle moment); the client-aided baseline too. Server CPU comes from /proc
(user+sys of each daemon over the client's run; in the two-server mode it includes the
store's background refill); A's counters give the A<->B bytes (online: the steps'
own) and the per-step breakdown. Ratios are taken between figures of this one run.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.procfs import tree_cpu
from benchmarks.servers import machine, modmul_seconds, start_servers, stats, wait_refilled
from benchmarks.workloads import BENCH_WEIGHT_BITS
from ppinfer.errors import PPInferError
from ppinfer.protocol.entry_store import DEFAULT_CAPACITY

__all__ = ["SCHEMA_VERSION", "run_latency", "write_outputs"]

SCHEMA_VERSION = 1
#: two-server: back to back with A's store warm (the default deployment, as users see it);
#: store-empty: the same protocol on an A without a store (--store-size 0), so every
#: request makes its own entry, as the first request after a start or past a burst does,
#: each once B's randomizer pool is full (after an idle moment); client-aided: baseline.
MODES = ("two-server", "store-empty", "client-aided")
#: A's store in a --quick smoke run: its requests, their tickets and the link's.
QUICK_STORE = 8
#: Tickets a session holds ahead (the client's default max_in_flight): entries it binds.
SESSION_TICKETS = 2
#: Published claim of the two-server design on W1: client CPU and client bytes ratios.
CLAIMED_RATIOS = {"client_cpu": 2000.0, "client_bytes": 30.0}


def _client(
    server: str,
    admin: str,
    model: str,
    mode: str,
    inputs: np.ndarray,
    key_bits: int,
    folder: Path,
    ca: Path,
    pool: int = 0,
    warm: int = 0,
) -> dict[str, Any]:
    path = folder / f"{model}-inputs.npy"
    np.save(path, inputs)
    process = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.latency_client",
            "--server", server, "--admin", admin, "--model", model, "--mode", mode,
            "--inputs", str(path), "--key-bits", str(key_bits), "--pool", str(pool),
            "--ca", str(ca), "--warm", str(warm),
        ],
        capture_output=True, text=True, timeout=6 * 3600,
    )  # fmt: skip
    try:
        document: dict[str, Any] = json.loads(process.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise PPInferError(f"benchmark client failed: {process.stderr.strip()[-2000:]}") from None
    if "error" in document:
        raise PPInferError(f"benchmark client ({model}, {mode}): {document['error']}")
    return document


def _client_mode(mode: str) -> str:
    """The client's mode for a benchmark mode (store-empty differs only at A)."""
    return "two-server" if mode == "store-empty" else mode


def _wait_store(admin: str, ca: Path, model: str, entries: int, timeout: float = 3600) -> None:
    """Wait until A's store for ``model`` holds ``entries`` (or its capacity, if less)."""
    deadline = time.monotonic() + timeout
    key = f"model_server.{model}.store.store_depth"
    while stats(admin, ca).get(key, 0) < entries:
        if time.monotonic() > deadline:
            raise PPInferError(f"A's store for {model} did not reach {entries} entries")
        time.sleep(0.5)


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(row[key] for row in rows))


def _steps(before: dict[str, int], after: dict[str, int], prefix: str, n: int) -> list[Any]:
    """Per step of one inference: A's time, the peer's round trip, bytes, rounds (means)."""
    steps = []
    for k in range(64):
        name = f"{prefix}step{k}."
        keys = [key for key in after if key.startswith(name)]
        if not keys:
            if k == 0:
                continue  # the client-aided mode has no input step on A
            break
        figure = {
            field: (after.get(name + field, 0) - before.get(name + field, 0)) / n
            for field in ("a_us", "peer_us", "bytes_out", "bytes_in", "rounds")
        }
        steps.append(
            {
                "step": k,
                "a_ms": figure["a_us"] / 1000,
                "peer_ms": figure["peer_us"] / 1000,
                "bytes_to_peer": figure["bytes_out"],
                "bytes_from_peer": figure["bytes_in"],
                "rounds": figure["rounds"],
            }
        )
    return steps


def _measure_mode(
    servers: dict[str, Any],
    workload: Any,
    mode: str,
    inputs: np.ndarray,
    key_bits: int,
    folder: Path,
) -> dict[str, Any]:
    a, b = servers["empty" if mode == "store-empty" else "model"], servers["key"]
    ca = servers["tls"].ca
    n = len(inputs)
    # warm: the store holds every entry the session binds; back to back, no idle wait
    warm, pool = (n + SESSION_TICKETS, 0) if mode == "two-server" else (0, servers["pool"])
    if warm:
        _wait_store(a.admin, ca, workload.name, warm)
    before, cpu_a, cpu_b = (
        stats(a.admin, ca), tree_cpu(a.process.pid), tree_cpu(b.process.pid)
    )  # fmt: skip
    document = _client(
        a.address, a.admin, workload.name, _client_mode(mode), inputs, key_bits, folder, ca,
        pool, warm,
    )  # fmt: skip
    cpu_a, cpu_b = tree_cpu(a.process.pid) - cpu_a, tree_cpu(b.process.pid) - cpu_b
    after = stats(a.admin, ca)
    wait_refilled(a.admin, ca, servers["pool"])
    rows, served = document["inferences"], n
    prefix = f"model_server.{workload.name}." + ("aided." if mode == "client-aided" else "")
    store = {
        key: after.get(f"{prefix}store.{key}", 0) - before.get(f"{prefix}store.{key}", 0)
        for key in ("taken", "missed")
    }
    steps = _steps(before, after, prefix, served)
    online = sum(s["bytes_to_peer"] + s["bytes_from_peer"] for s in steps)
    link_bytes = sum(
        after.get(key, 0) - before.get(key, 0)
        for key in ("model_server.key_link.bytes_sent", "model_server.key_link.bytes_received")
    )
    logits = np.array([row["logits"] for row in rows])
    latencies = [row["latency_s"] for row in rows]
    return {
        "mode": mode,
        "inferences": n,
        "client_setup_cpu_s": document["setup_client_cpu_s"],
        "client_cpu_s": _median(rows, "client_cpu_s"),
        "client_own_cpu_s": _median(rows, "client_own_cpu_s"),
        "client_bytes_up": _median(rows, "bytes_up"),
        "client_bytes_down": _median(rows, "bytes_down"),
        "client_wire_bytes_up": _median(rows, "wire_bytes_up"),
        "client_wire_bytes_down": _median(rows, "wire_bytes_down"),
        "client_messages": _median(rows, "messages_up") + _median(rows, "messages_down"),
        "latency_median_s": float(statistics.median(latencies)),
        "latency_p95_s": float(np.percentile(latencies, 95)),
        "server_a_cpu_s": cpu_a / served,
        "server_b_cpu_s": cpu_b / served,
        "a_b_bytes": link_bytes / served,
        "a_b_online_bytes": online,
        "store_taken": store["taken"],
        "store_missed": store["missed"],
        "steps": steps,
        "first_layer_linear_ms": (
            after.get(prefix + "layer1.linear_us", 0) - before.get(prefix + "layer1.linear_us", 0)
        )
        / served
        / 1000,
        "_logits": logits,
    }


def run_latency(
    workloads: list[str],
    key_sizes: list[int],
    inferences: dict[str, int],
    quick: bool = False,
    mnist: Path | None = None,
    link: str | None = None,
    link_inferences: int = 3,
    peer_inferences: int = 3,
    naive_inferences: int = 1,
    weight_bits: int | None = BENCH_WEIGHT_BITS,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Everything measured in one run, as the JSON document the report is made from."""
    from tqdm import tqdm

    from benchmarks.link import SlowLink, parse_link
    from benchmarks.workloads import (
        build_workload,
        compile_workload,
        float_predictions,
    )
    from ppinfer.compiler.plan import save_plan

    spec = parse_link(link) if link else None
    epochs_scale = 0.15 if quick else 1.0
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "suite": "latency",
        "quick": quick,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "modmul_s": {str(bits): modmul_seconds(bits) for bits in key_sizes},
        "link": None if spec is None else spec.describe(),
        "workloads": {},
        "runs": [],
        "ratios": [],
        "peer": None,
        "naive": None,
    }
    with tempfile.TemporaryDirectory(prefix="ppinfer-bench-") as temporary:
        folder = Path(temporary)
        built = {}
        for name in tqdm(workloads, desc="train and compile", disable=not progress):
            workload = build_workload(name, mnist, epochs_scale=epochs_scale)
            report = compile_workload(workload, 64 if quick else None, weight_bits)
            save_plan(report.plan, folder / f"{name}.ppi")
            built[name] = workload
            inputs = workload.test_inputs(inferences[name])
            float_logits = float_predictions(workload, inputs)
            document["workloads"][name] = {
                "description": workload.description,
                "data": workload.data,
                "inferences": inferences[name],
                "float_accuracy": float(
                    np.mean(float_logits.argmax(axis=1) == workload.split.test_y[: len(inputs)])
                ),
                "compile_agreement": report.agreement,
                "weight_bits": report.weight_bits,
                "weight_bits_choice": report.weight_bits_choice,
                "weights": int(sum(np.count_nonzero(d.weight) for d in report.plan.dense)),
                "first_layer_weights": int(report.plan.dense[0].weight.size),
                "round_trips": len(report.plan.activations) + 2,
            }
        total = len(key_sizes) * len(workloads) * len(MODES) * (2 if spec else 1)
        bar = tqdm(total=total, desc="inferences", disable=not progress)
        # A's default store; a smoke run's covers its few requests (and fills in seconds)
        store = QUICK_STORE if quick else DEFAULT_CAPACITY
        document["store_size"] = store
        for bits in key_sizes:
            servers = start_servers(
                [folder / f"{n}.ppi" for n in workloads], bits, folder,
                model_flags=("--store-size", str(store)), empty_store=True,
            )  # fmt: skip
            for name in workloads:  # quiet servers: every store full before any is measured
                _wait_store(servers["model"].admin, servers["tls"].ca, name, store)
            slows = {
                name: SlowLink(servers[name].address, spec) for name in ("model", "empty")
            } if spec else {}  # fmt: skip
            try:
                for name in workloads:
                    workload = built[name]
                    inputs = workload.test_inputs(inferences[name])
                    reference = float_predictions(workload, inputs)
                    by_mode = {}
                    for mode in MODES:
                        bar.set_postfix_str(f"{bits} bits {name} {mode}")
                        figures = _measure_mode(servers, workload, mode, inputs, bits, folder)
                        logits = figures.pop("_logits")
                        figures["agreement_with_float"] = float(
                            np.mean(logits.argmax(axis=1) == reference.argmax(axis=1))
                        )
                        figures["max_logit_error"] = float(np.max(np.abs(logits - reference)))
                        figures.update(workload=name, key_bits=bits)
                        bar.update()
                        if slows:
                            a = "empty" if mode == "store-empty" else "model"
                            figures["link"] = _link_latency(
                                slows[a].address, servers[a].admin, name, mode,
                                inputs[:link_inferences], bits, folder, servers["tls"].ca,
                                servers["pool"],
                            )  # fmt: skip
                            wait_refilled(
                                servers["model"].admin, servers["tls"].ca, servers["pool"]
                            )
                            bar.update()
                        document["runs"].append(figures)
                        by_mode[mode] = figures
                    document["ratios"].append(_ratios(name, bits, by_mode))
            finally:
                for slow in slows.values():
                    slow.close()
                servers["model"].stop()
                servers["empty"].stop()
                servers["key"].stop()
        bar.close()
        if "W1" in workloads and naive_inferences > 0:
            say("naive reference (python-paillier objects) on W1...")
            document["naive"] = _naive(built["W1"], key_sizes[0], naive_inferences, document)
        if "W1" in workloads and peer_inferences > 0:
            say("TenSEAL peer on W1's architecture with x^2 activations...")
            document["peer"] = _peer(mnist, epochs_scale, peer_inferences)
    document["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return document


def _link_latency(
    address: str,
    admin: str,
    model: str,
    mode: str,
    inputs: np.ndarray,
    bits: int,
    folder: Path,
    ca: Path,
    pool: int,
) -> dict[str, Any]:
    warm = len(inputs) + SESSION_TICKETS if mode == "two-server" else 0
    if warm:
        _wait_store(admin, ca, model, warm)
    document = _client(
        address, admin, model, _client_mode(mode), inputs, bits, folder, ca,
        0 if warm else pool, warm,
    )  # fmt: skip
    latencies = [row["latency_s"] for row in document["inferences"]]
    return {
        "inferences": len(latencies),
        "latency_median_s": float(statistics.median(latencies)),
        "latency_p95_s": float(np.percentile(latencies, 95)),
    }


def _ratios(name: str, bits: int, by_mode: dict[str, dict[str, Any]]) -> dict[str, Any]:
    two, aided = by_mode["two-server"], by_mode["client-aided"]

    def wire(figures: dict[str, Any]) -> float:
        return float(figures["client_wire_bytes_up"] + figures["client_wire_bytes_down"])

    return {
        "workload": name,
        "key_bits": bits,
        "client_cpu": aided["client_cpu_s"] / two["client_cpu_s"],
        "client_own_cpu": aided["client_own_cpu_s"] / two["client_own_cpu_s"],
        "client_bytes": wire(aided) / wire(two),
        "latency": aided["latency_median_s"] / two["latency_median_s"],
        "store_empty_latency": (
            by_mode["store-empty"]["latency_median_s"] / two["latency_median_s"]
        ),
    }


def _naive(workload: Any, bits: int, count: int, document: dict[str, Any]) -> dict[str, Any]:
    """The naive reference on W1, against the two-server median of this run."""
    from benchmarks.naive import naive_inference
    from benchmarks.workloads import float_predictions
    from ppinfer.paillier import generate_keypair
    from ppinfer.paillier.interop import to_phe_private_key, to_phe_public_key

    _, private = generate_keypair(bits)
    phe_public, phe_private = to_phe_public_key(private.public), to_phe_private_key(private)
    inputs = workload.test_inputs(count)
    reference = float_predictions(workload, inputs)
    timings, errors = [], []
    for x, expected in zip(inputs, reference, strict=True):
        logits, timing = naive_inference(workload.model, x, phe_public, phe_private)
        timings.append(timing)
        errors.append(float(np.max(np.abs(logits - expected))))
    [ours] = [
        r for r in document["runs"]
        if r["workload"] == "W1" and r["key_bits"] == bits and r["mode"] == "two-server"
    ]  # fmt: skip
    latency = float(statistics.median(t.total for t in timings))
    return {
        "workload": "W1",
        "key_bits": bits,
        "inferences": count,
        "latency_median_s": latency,
        "a_cpu_s": float(statistics.median(t.a_seconds for t in timings)),
        "b_cpu_s": float(statistics.median(t.b_seconds for t in timings)),
        "max_logit_error": max(errors),
        "speedup_two_server": latency / ours["latency_median_s"],
    }


def _peer(mnist: Path | None, epochs_scale: float, count: int) -> dict[str, Any]:
    from benchmarks.tenseal_peer import run_tenseal
    from benchmarks.workloads import build_workload

    square = build_workload("W1-square", mnist, epochs_scale=epochs_scale)
    inputs = square.test_inputs(count)
    result = run_tenseal(square.model, inputs, square.split.test_y[:count])
    return result.summary() | {"workload": "W1 (x^2 activations)"}


def write_outputs(document: dict[str, Any], json_path: Path, plots: bool = True) -> list[Path]:
    """The JSON document, its markdown report beside it, and the PNG plots."""
    from benchmarks.latency_report import plot, to_markdown

    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    written = [json_path]
    images = plot(document, json_path.with_suffix("")) if plots else []
    markdown = json_path.with_suffix(".md")
    markdown.write_text(to_markdown(document, [p.name for p in images]))
    return [*written, markdown, *images]
