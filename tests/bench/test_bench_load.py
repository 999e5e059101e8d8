"""``ppinfer bench load`` end to end at a small size: daemons, the three phases, report."""

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
            "--clients", "3", "--seconds", "2", "--single", "6", "--bits", "1024", "--quick",
        ],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    single, refill, concurrent = document["single"], document["refill"], document["concurrent"]
    assert document["store_size"] == 6 + 2  # the single phase and its session's tickets
    # the single phase ran on a warm store: every entry it bound was taken, none made
    assert single["inferences_done"] == 6 and single["wrong_answers"] == 0
    assert single["store"]["missed"] == 0 and single["store"]["taken"] == 6 + 2
    # the refill made what the single phase took, and says what each entry cost
    assert refill["entries_made"] == 8 and refill["a_b_bytes_per_entry"] > 0
    assert refill["cpu_s_per_entry"]["A"] > 0 and refill["cpu_s_per_entry"]["B"] > 0
    assert concurrent["clients"] == 3 and concurrent["inferences_done"] >= 3
    assert concurrent["wall_s"] >= 2 and concurrent["errors"] == {}
    assert concurrent["wrong_answers"] == 0
    store = concurrent["store"]
    assert store["taken"] + store["missed"] >= concurrent["inferences_done"]
    for daemon in ("A", "B"):
        memory = document["memory"][daemon]
        assert memory["peak_rss_bytes"] >= memory["rss_bytes"] > 0
    markdown = out.with_suffix(".md").read_text()
    assert "| single, store warm | 1 | 6 | 0 | 0 |" in markdown
    assert "A+B CPU s per entry" in markdown
