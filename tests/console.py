"""The ``ppinfer`` console script as a user runs it, from the test's virtual environment."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["ppinfer"]


def ppinfer(*args: str) -> subprocess.CompletedProcess[str]:
    beside_python = Path(sys.executable).with_name("ppinfer")
    executable = str(beside_python) if beside_python.exists() else shutil.which("ppinfer")
    assert executable, "the ppinfer console script is not installed"
    return subprocess.run([executable, *args], capture_output=True, text=True, timeout=600)
