"""``ppinfer bench batching`` at a small key: the batched first layer is exact, and reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ppinfer", "bench", "batching", *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_bench_batching_quick(tmp_path: Path) -> None:
    out = tmp_path / "batching.json"
    result = _bench("--json", str(out), "--bits", "512", "--batch", "2", "--quick")
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    outputs, inputs = document["layer"]
    assert (outputs, inputs) == (128, 784)
    assert document["checked_values"] == outputs * 2  # every value of both requests decrypted
    per_ciphertext = (512 - 1) // document["slot_bits"] // 2  # outputs, 2 slots each
    assert per_ciphertext >= 1
    assert document["ciphertexts_to_split"] == -(-outputs // per_ciphertext)
    assert document["unbatched_cpu_s_per_request"] > 0 < document["batched_cpu_s_per_request"]
    assert len(document["steps"]) == 8
    markdown = out.with_suffix(".md").read_text()
    assert "| batched: A's layer, once |" in markdown
    assert "CPU per request: unbatched" in markdown


def test_bench_batching_refuses_a_batch_of_one(tmp_path: Path) -> None:
    result = _bench("--json", str(tmp_path / "b.json"), "--batch", "1")
    assert result.returncode != 0
    assert "--batch must be at least 2" in result.stderr
    assert "Traceback" not in result.stderr
