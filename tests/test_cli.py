"""The ppinfer command as users run it: a real process, real files, real exit codes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ppinfer.paillier import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, load_private_key


def ppinfer(*args: str) -> subprocess.CompletedProcess[str]:
    beside_python = Path(sys.executable).with_name("ppinfer")
    executable = str(beside_python) if beside_python.exists() else shutil.which("ppinfer")
    assert executable, "the ppinfer console script is not installed"
    return subprocess.run([executable, *args], capture_output=True, text=True, timeout=600)


def test_keygen_writes_keys_and_prints_key_id(tmp_path: Path) -> None:
    result = ppinfer("keygen", "--bits", "2048", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    private = load_private_key(tmp_path / PRIVATE_KEY_FILE)
    assert private.public.bits == 2048
    assert private.public.key_id in result.stdout
    assert stat.S_IMODE(os.stat(tmp_path / PRIVATE_KEY_FILE).st_mode) == 0o600
    assert (tmp_path / PUBLIC_KEY_FILE).exists()
    assert format(private.p, "x") not in result.stdout + result.stderr


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    assert ppinfer("keygen", "--bits", "1024", "--out", str(tmp_path)).returncode == 0
    before = (tmp_path / PRIVATE_KEY_FILE).read_bytes()
    again = ppinfer("keygen", "--bits", "1024", "--out", str(tmp_path))
    assert again.returncode == 1
    assert "--force" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / PRIVATE_KEY_FILE).read_bytes() == before


def test_keygen_rejects_bad_size(tmp_path: Path) -> None:
    result = ppinfer("keygen", "--bits", "1000", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_info_reports_versions_and_gmpy2() -> None:
    result = ppinfer("info")
    assert result.returncode == 0, result.stderr
    assert "gmpy2 active: yes" in result.stdout
    document = json.loads(ppinfer("info", "--json").stdout)
    assert document["gmpy2_active"] is True
    assert document["packages"]["grpcio"]


def test_bench_primitives_quick_writes_complete_results(tmp_path: Path) -> None:
    out = tmp_path / "primitives.json"
    result = ppinfer("bench", "primitives", "--quick", "--no-progress", "--json", str(out))
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["schema_version"] == 1
    operations = {m["operation"] for m in document["measurements"]}
    assert {"encrypt (pool hit)", "phe encrypt", "decrypt packed x32 (per value)"} <= operations
    assert all(m["seconds_per_op"] > 0 and m["bits"] == 1024 for m in document["measurements"])
    assert len(document["ratios"]) >= 3
    assert all(r["value"] > 0 for r in document["ratios"])
    markdown = out.with_suffix(".md").read_text()
    assert "| encrypt (pool hit) |" in markdown


@pytest.mark.slow
def test_bench_primitives_full_run_at_2048(tmp_path: Path) -> None:
    out = tmp_path / "primitives.json"
    result = ppinfer("bench", "primitives", "--bits", "2048", "--no-progress", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert {r["bits"] for r in json.loads(out.read_text())["ratios"]} == {2048}
