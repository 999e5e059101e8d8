"""``ppinfer bench latency --quick``: the whole benchmark as users run it, checked for a
complete, well-formed result (every figure present and positive), never for timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from console import ppinfer

RUN_FIGURES = [
    "client_cpu_s",
    "client_own_cpu_s",
    "client_bytes_up",
    "client_bytes_down",
    "client_wire_bytes_up",
    "client_wire_bytes_down",
    "client_messages",
    "latency_median_s",
    "latency_p95_s",
    "server_a_cpu_s",
]
PEER_FIGURES = [
    "setup_client_cpu_s",
    "setup_bytes_up",
    "client_cpu_s",
    "server_cpu_s",
    "latency_median_s",
    "latency_p95_s",
    "bytes_up",
    "bytes_down",
]


@pytest.mark.timeout(900)
def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "latency.json"
    result = ppinfer(
        "bench", "latency", "--quick", "--no-progress", "--json", str(out),
        "--link", "8mbit:20ms",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["schema_version"] == 1 and document["quick"] is True
    assert set(document["workloads"]) == {"W1", "W2", "W3"}
    for workload in document["workloads"].values():  # the compiler's pick, and why
        assert 4 <= workload["weight_bits"] <= 16 and "picked" in workload["weight_bits_choice"]
        assert workload["compile_agreement"] == 1.0
    runs = document["runs"]
    modes = ("two-server", "store-empty", "client-aided")
    assert {(r["workload"], r["mode"]) for r in runs} == {
        (w, m) for w in ("W1", "W2", "W3") for m in modes
    }
    for run in runs:
        for figure in RUN_FIGURES:
            assert run[figure] > 0, (run["workload"], run["mode"], figure)
        assert run["key_bits"] == 512 and run["inferences"] == 2
        assert 0.0 <= run["agreement_with_float"] <= 1.0
        assert run["link"]["latency_median_s"] > 0
        layers = [s for s in run["steps"] if s["rounds"] > 0 and s["step"] > 0]
        assert layers and all(s["a_ms"] > 0 and s["bytes_to_peer"] > 0 for s in layers)
        if run["mode"] != "client-aided":
            assert run["a_b_bytes"] > run["a_b_online_bytes"] > 0
        if run["mode"] == "two-server":  # warm: every entry the session bound was ready
            assert run["store_missed"] == 0 and run["store_taken"] == run["inferences"] + 2
        if run["mode"] == "store-empty":  # no store: every request made its own entry
            assert run["store_missed"] == run["inferences"] + 2 and run["store_taken"] == 0
            assert run["server_b_cpu_s"] > 0 and run["first_layer_linear_ms"] > 0
    for ratio in document["ratios"]:
        assert ratio["client_cpu"] > 0 and ratio["client_bytes"] > 1 and ratio["latency"] > 0
        assert ratio["store_empty_latency"] > 0
    naive = document["naive"]
    for figure in ("latency_median_s", "a_cpu_s", "b_cpu_s", "speedup_two_server"):
        assert naive[figure] > 0, figure
    assert naive["max_logit_error"] < 0.01  # the reference computes the same logits
    peer = document["peer"]
    for figure in PEER_FIGURES:
        assert peer[figure] > 0, figure
    assert 0.0 <= peer["accuracy"] <= 1.0
    markdown = out.with_suffix(".md").read_text()
    assert "| W1 | 512 | client-aided |" in markdown and "TenSEAL" in markdown
    assert "## The preprocessing store" in markdown and "| weight bits |" in markdown
    for suffix in ("client-cpu", "client-bytes", "steps"):
        png = tmp_path / f"latency-{suffix}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_link_is_refused_clearly(tmp_path: Path) -> None:
    result = ppinfer(
        "bench", "latency", "--quick", "--json", str(tmp_path / "x.json"), "--link", "fast"
    )
    assert result.returncode == 1
    assert "1mbit:100ms" in result.stderr and "Traceback" not in result.stderr
