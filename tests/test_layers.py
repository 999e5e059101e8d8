"""The import-layer contracts of pyproject.toml ([tool.importlinter]) hold, and would catch
an upward import: the same contracts run on a copy of the tree with one planted."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_layer_contracts_hold() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        # the arithmetic reaching up into a party
        ("ppinfer/encoding/fixedpoint.py", "import ppinfer.protocol.session_keys", "layers"),
        # a party speaking protobuf
        ("ppinfer/protocol/key_core.py", "import ppinfer.v1.key_service_pb2", "protobuf"),
        # the client path pulling in the server's big-integer library
        ("ppinfer/rpc/client_stub.py", "import gmpy2", "client path"),
    ],
)
def test_an_upward_import_breaks_a_contract(
    tmp_path: Path, module: str, planted: str, contract: str
) -> None:
    for name in ("ppinfer", "benchmarks"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{planted}  # planted by the test\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert " 0 broken" not in result.stdout
    broken = result.stdout.split("Broken contracts", 1)[1]
    assert contract in broken, broken
