"""``ppinfer bench load`` end to end at a small size: daemons, concurrent clients, report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_load_quick(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "ppinfer", "bench", "load", "--json", str(out),
            "--clients", "3", "--inferences", "2", "--quick",
        ],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    concurrent, single = document["concurrent"], document["single"]
    assert concurrent["clients"] == 3 and concurrent["inferences_done"] == 6
    assert concurrent["errors"] == {} and concurrent["wrong_answers"] == 0
    assert single["inferences_done"] == 6 and single["wrong_answers"] == 0  # as many as all 3
    for daemon in ("A", "B"):
        memory = concurrent["memory"][daemon]
        assert memory["peak_rss_bytes"] >= memory["rss_bytes"] > 0
        assert concurrent["cpu_s"][daemon] > 0
    assert document["throughput_ratio"] > 0
    pool = concurrent["key_server_pool"]
    assert pool["hits"] + pool["misses"] > 0 and 0.0 <= pool["hit_rate"] <= 1.0
    markdown = out.with_suffix(".md").read_text()
    assert "| concurrent | 6 | 0 | 0 |" in markdown
    busy = sum(single["cpu_s"].values()) / single["wall_s"]
    assert 0 < busy <= document["machine"]["cpus"] * 1.05  # CPU seconds per wall second
    assert f"kept {busy:.2f} of the {document['machine']['cpus']} cores busy" in markdown
