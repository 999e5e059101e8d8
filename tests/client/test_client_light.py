"""The client path imports neither phe, gmpy2 nor torch: checked with those modules blocked."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CLIENT_MODULES = [
    "ppinfer",
    "ppinfer.client",
    "ppinfer.rpc.client_stub",
    "ppinfer.protocol.client_session",
    "ppinfer.client.postprocess",
    "ppinfer.protocol.session_keys",
    "ppinfer.rpc.tensor_messages",
    "ppinfer.encoding.fixedpoint",
    "ppinfer.encoding.packing",
    "ppinfer.errors",
    "ppinfer.v1.model_service_pb2_grpc",
    "ppinfer.cli.main",
    "ppinfer.cli.info",
]

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"phe", "gmpy2", "torch"}:
                raise ImportError(f"blocked on the client path: {name}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    """
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code], capture_output=True, text=True, timeout=120
    )


def test_client_modules_import_without_server_packages() -> None:
    imports = "\n".join(f"import {name}" for name in CLIENT_MODULES)
    result = _run(imports + "\nprint('ok')")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_blocker_really_blocks() -> None:
    result = _run("import ppinfer.paillier")
    assert result.returncode != 0
    assert "blocked on the client path: gmpy2" in result.stderr


def test_cli_reports_missing_server_extra_cleanly() -> None:
    code = (
        "from ppinfer.cli.main import main; "
        "raise SystemExit(main(['keygen', '--out', '/nonexistent']))"
    )
    result = _run(code)
    assert result.returncode == 1
    assert "pip install 'ppinfer[server]'" in result.stderr
    assert "Traceback" not in result.stderr
    info = _run("from ppinfer.cli.main import main; raise SystemExit(main(['info']))")
    assert info.returncode == 0, info.stderr
    assert "gmpy2 active: no" in info.stdout
