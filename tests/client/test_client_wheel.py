"""The client-only wheel (client/pyproject.toml) holds the stub and what it imports, no
daemon, benchmark or compiler code, and it predicts privately with phe, gmpy2 and torch
blocked."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deployment import deploy, dev_certificates
from test_client_light import BLOCKER

from ppinfer.compiler.program import Program
from ppinfer.compiler.simulator import simulate_batch
from ppinfer.rpc.dev_certificates import CA_FILE

ROOT = Path(__file__).resolve().parents[2]
#: Code that must never reach an app embedding the stub.
SERVER_SIDE = (
    "ppinfer/daemons/",
    "ppinfer/compiler/",
    "ppinfer/paillier/",
    "ppinfer/cli/",
    "benchmarks/",
    "ppinfer/protocol/key_core.py",
    "ppinfer/protocol/model_evaluator.py",
    "ppinfer/rpc/model_servicer.py",
    "ppinfer/rpc/key_servicer.py",
    "ppinfer/rpc/aided_client.py",
)


@pytest.fixture(scope="module")
def client_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT / "client"), "--no-deps",
         "--no-build-isolation", "-q", "-w", str(out)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = out.glob("ppinfer_client-*.whl")
    yield wheel


def test_the_client_wheel_holds_no_server_code(client_wheel: Path) -> None:
    names = zipfile.ZipFile(client_wheel).namelist()
    assert "ppinfer/rpc/client_stub.py" in names
    assert "ppinfer/protocol/client_session.py" in names
    assert "ppinfer/v1/model_service_pb2_grpc.py" in names
    shipped = [name for name in names if name.startswith(SERVER_SIDE)]
    assert shipped == []
    metadata = (
        zipfile.ZipFile(client_wheel)
        .read(next(name for name in names if name.endswith("METADATA")))
        .decode()
    )
    requires = sorted(
        line.split()[1] for line in metadata.splitlines() if line.startswith("Requires-Dist")
    )
    assert [r.split(">")[0].split("<")[0] for r in requires] == [
        "cryptography",
        "grpcio",
        "numpy",
        "protobuf",
    ]


def test_the_client_wheel_predicts_with_server_packages_blocked(
    client_wheel: Path, tmp_path: Path, keypair_1024: Any, digits_plan: Any, digits: Any
) -> None:
    unpacked = tmp_path / "site"
    zipfile.ZipFile(client_wheel).extractall(unpacked)
    inputs = digits.test_x[:3]
    np.save(tmp_path / "inputs.npy", inputs)
    with deploy([digits_plan], keypair_1024) as deployment:
        code = BLOCKER + textwrap.dedent(
            f"""
            import json, sys
            sys.path.insert(0, {str(unpacked)!r})
            import numpy as np
            import ppinfer.client
            from ppinfer.client import Client
            from ppinfer.rpc.tls import ChannelTls
            assert ppinfer.client.__file__.startswith({str(unpacked)!r}), ppinfer.client.__file__
            tls = ChannelTls.from_files({str(dev_certificates() / CA_FILE)!r})
            inputs = np.load({str(tmp_path / "inputs.npy")!r})
            with Client({deployment.address!r}, tls=tls) as client:
                logits = [values.tolist() for values in client.predict_stream(inputs)]
            print(json.dumps(logits))
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=False
        )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = simulate_batch(Program(digits_plan), inputs)
    np.testing.assert_allclose(np.array(json.loads(result.stdout)), expected, atol=5e-3)
