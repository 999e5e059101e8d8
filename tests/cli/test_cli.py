"""The ppinfer command as users run it: a real process, real files, real exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from console import ppinfer
from secret_spellings import assert_never_shown, paillier_secrets

from ppinfer.paillier import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, load_private_key
from ppinfer.rpc.dev_certificates import DevTls


def test_keygen_writes_keys_and_prints_key_id(tmp_path: Path) -> None:
    result = ppinfer("keygen", "--bits", "2048", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    from ppinfer.protocol.session_keys import key_server_fingerprint, public_bytes
    from ppinfer.protocol.x25519_keyfile import X25519_PRIVATE_FILE, load_x25519

    private = load_private_key(tmp_path / PRIVATE_KEY_FILE)
    assert private.public.bits == 2048
    static = load_x25519(tmp_path / X25519_PRIVATE_FILE)
    static_bytes = static.private_bytes_raw()
    # what clients pin: over both public keys, as a client recomputes it
    key_id = key_server_fingerprint(private.public.n_bytes, public_bytes(static.public_key()))
    assert f"key id    {key_id}" in result.stdout
    assert stat.S_IMODE(os.stat(tmp_path / PRIVATE_KEY_FILE).st_mode) == 0o600
    assert (tmp_path / PUBLIC_KEY_FILE).exists()
    assert_never_shown(result.stdout + result.stderr, [*paillier_secrets(private), static_bytes])


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    assert ppinfer("keygen", "--bits", "1024", "--out", str(tmp_path)).returncode == 0
    before = (tmp_path / PRIVATE_KEY_FILE).read_bytes()
    again = ppinfer("keygen", "--bits", "1024", "--out", str(tmp_path))
    assert again.returncode == 1
    assert "--force" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / PRIVATE_KEY_FILE).read_bytes() == before
    forced = ppinfer("keygen", "--bits", "1024", "--out", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / PRIVATE_KEY_FILE).read_bytes() != before


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


def test_keygen_also_writes_the_static_x25519_key(tmp_path: Path) -> None:
    from ppinfer.protocol.x25519_keyfile import X25519_PRIVATE_FILE, load_x25519

    assert ppinfer("keygen", "--bits", "1024", "--out", str(tmp_path)).returncode == 0
    assert stat.S_IMODE(os.stat(tmp_path / X25519_PRIVATE_FILE).st_mode) == 0o600
    load_x25519(tmp_path / X25519_PRIVATE_FILE)


def _plan_logits(path: Path, inputs: Any) -> Any:
    """What the compiled plan answers for ``inputs``, simulated in the clear."""
    from ppinfer.compiler.plan import load_plan
    from ppinfer.compiler.program import Program
    from ppinfer.compiler.simulator import simulate_batch

    return simulate_batch(Program(load_plan(path)), inputs)


def test_daemons_predict_and_compile_as_processes(tmp_path: Path) -> None:
    """serve-key and serve-model as real processes, then compile and predict from the CLI."""
    import numpy as np
    import torch
    from torch import nn

    from ppinfer.daemons.launch import start_daemon

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), nn.Softmax(dim=1))
    torch.save(model, tmp_path / "model.pt")
    calibration = np.random.default_rng(0).normal(size=(32, 4))
    np.save(tmp_path / "calibration.npy", calibration)
    compiled = ppinfer(
        "compile",
        str(tmp_path / "model.pt"),
        "-o",
        str(tmp_path / "m.ppi"),
        "--input-shape",
        "4",
        "--calibration",
        str(tmp_path / "calibration.npy"),
    )
    assert compiled.returncode == 0, compiled.stderr
    assert "agreement with the float model on 32 calibration inputs: 100.00%" in compiled.stdout
    assert ppinfer("keygen", "--bits", "1024", "--out", str(tmp_path / "keys")).returncode == 0

    tls = DevTls.create(tmp_path / "tls")
    serve_key = [
        "serve-key", "--keys", str(tmp_path / "keys"), "--listen", "127.0.0.1:0",
        *tls.key_server_flags(),
    ]  # fmt: skip
    small = ppinfer(*serve_key)  # finding 7: a 1024-bit key is not served without a flag
    assert small.returncode == 1 and "--allow-small-keys" in small.stderr
    assert len(small.stderr.strip().splitlines()) == 1
    key_server = start_daemon([*serve_key, "--allow-small-keys"], tmp_path / "b.log")
    serve_model = [
        "serve-model", "--model", str(tmp_path / "m.ppi"), "--key-server",
        key_server.address, "--listen", "127.0.0.1:0", "--allow-small-keys",
        *tls.model_server_flags(),
    ]  # fmt: skip
    try:
        model_server = start_daemon(serve_model, tmp_path / "a.log")
        try:
            np.save(tmp_path / "x.npy", calibration[:3])
            result = ppinfer(
                "predict", "--server", model_server.address, str(tmp_path / "x.npy"), "--json",
                *tls.client_flags(),
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            with torch.no_grad():
                expected = model(torch.as_tensor(calibration[:3], dtype=torch.float32)).numpy()
            answers = json.loads(result.stdout)
            assert [a["prediction"] for a in answers] == list(expected.argmax(axis=1))
            # the plan's own answer (float32 in the JSON), at the weight bits it picked
            planned = _plan_logits(tmp_path / "m.ppi", calibration[:3])
            np.testing.assert_allclose([a["logits"] for a in answers], planned, atol=1e-5)
            aided_flags = ["--mode", "client-aided", "--key-bits", "1024", *tls.client_flags()]
            aided = ppinfer(
                "predict", "--server", model_server.address, str(tmp_path / "x.npy"), "--json",
                *aided_flags,
            )  # fmt: skip
            # finding 1: off by default, refused in one line that names the flag
            assert aided.returncode == 1 and "--allow-client-aided" in aided.stderr
            assert len(aided.stderr.strip().splitlines()) == 1, aided.stderr
            pinned = ppinfer(
                "predict", "--server", model_server.address, str(tmp_path / "x.npy"),
                "--mode", "client-aided", "--pin", "ab" * 32,
            )  # fmt: skip
            assert pinned.returncode == 1 and "--mode two-server" in pinned.stderr
            np.save(tmp_path / "bad.npy", np.zeros(5))
            bad = ppinfer(
                "predict", "--server", model_server.address, str(tmp_path / "bad.npy"),
                *tls.client_flags(),
            )  # fmt: skip
            assert bad.returncode == 1 and "Traceback" not in bad.stderr
            assert "shape" in bad.stderr
            untrusted = ppinfer(
                "predict", "--server", model_server.address, str(tmp_path / "x.npy")
            )
            assert untrusted.returncode == 1 and "Traceback" not in untrusted.stderr
            assert "TLS handshake" in untrusted.stderr and "--ca" in untrusted.stderr
            # one line: no gRPC C-core line before ours, no ': OK' after (issue 22, item 10)
            assert len(untrusted.stderr.strip().splitlines()) == 1, untrusted.stderr
            assert not untrusted.stderr.strip().endswith(": OK")
        finally:
            model_server.stop()
        assert model_server.process.returncode == 0  # SIGTERM: a clean, graceful exit
        down = ppinfer(
            "predict", "--server", model_server.address, str(tmp_path / "x.npy"),
            *tls.client_flags(),
        )  # fmt: skip
        assert down.returncode == 1 and "UNAVAILABLE" in down.stderr
        assert "Traceback" not in down.stderr
        benchmarking = start_daemon([*serve_model, "--allow-client-aided"], tmp_path / "a2.log")
        try:
            aided = ppinfer(
                "predict", "--server", benchmarking.address, str(tmp_path / "x.npy"), "--json",
                *aided_flags,
            )  # fmt: skip
        finally:
            benchmarking.stop()
        assert aided.returncode == 0, aided.stderr
        aided_answers = json.loads(aided.stdout)
        assert [a["prediction"] for a in aided_answers] == list(expected.argmax(axis=1))
        aided_logits = [a["logits"] for a in aided_answers]  # the same plan, the same answer
        np.testing.assert_allclose(aided_logits, [a["logits"] for a in answers], atol=1e-5)
    finally:
        key_server.stop()


def test_compile_refuses_unsupported_layers_cleanly(tmp_path: Path) -> None:
    import torch
    from torch import nn

    torch.save(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)), tmp_path / "m.pt")
    result = ppinfer(
        "compile",
        str(tmp_path / "m.pt"),
        "-o",
        str(tmp_path / "m.ppi"),
        "--input-shape",
        "4",
        "--input-range",
        "1",
    )
    assert result.returncode == 1
    assert "layer 1 (LayerNorm) is not supported" in result.stderr
    assert "Traceback" not in result.stderr


def test_compile_input_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    bad_shape = ppinfer(
        "compile", str(tmp_path / "junk.pt"), "-o", str(tmp_path / "m.ppi"), "--input-shape", "4,x"
    )
    assert bad_shape.returncode == 2 and "positive integers" in bad_shape.stderr
    bad_model = ppinfer(
        "compile", str(tmp_path / "junk.pt"), "-o", str(tmp_path / "m.ppi"), "--input-shape", "4"
    )
    assert bad_model.returncode == 1 and "cannot load a torch model" in bad_model.stderr
    for result in (bad_shape, bad_model):
        assert "Traceback" not in result.stderr


def test_compile_an_onnx_cnn_prints_the_layer_table(tmp_path: Path) -> None:
    import numpy as np
    import torch
    from torch import nn

    from ppinfer.compiler.plan import load_plan

    pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 3)
    ).eval()
    torch.onnx.export(model, (torch.zeros(1, 1, 4, 4),), str(tmp_path / "cnn.onnx"), dynamo=False)
    np.save(tmp_path / "calibration.npy", np.random.default_rng(0).normal(size=(16, 1, 4, 4)))
    result = ppinfer(
        "compile",
        str(tmp_path / "cnn.onnx"),
        "-o",
        str(tmp_path / "cnn.ppi"),
        "--calibration",
        str(tmp_path / "calibration.npy"),
    )
    assert result.returncode == 0, result.stderr
    assert "relu → max/4" in result.stdout and "P2 (windows) + P3 (d^1)" in result.stdout
    assert "on 16 calibration inputs: 100.00%" in result.stdout
    assert load_plan(tmp_path / "cnn.ppi").input_shape == (1, 4, 4)


def test_the_plaintext_development_path(tmp_path: Path) -> None:
    """Issue 22, item 2: both daemons with --insecure, then ppinfer predict --insecure. The
    CLI warned about plaintext and then dialled TLS anyway."""
    import numpy as np
    import torch
    from torch import nn

    from ppinfer.daemons.launch import start_daemon

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    torch.save(model, tmp_path / "model.pt")
    inputs = np.random.default_rng(1).normal(size=(3, 4))
    np.save(tmp_path / "x.npy", inputs)
    compiled = ppinfer(
        "compile", str(tmp_path / "model.pt"), "-o", str(tmp_path / "m.ppi"), "--input-shape",
        "4", "--calibration", str(tmp_path / "x.npy"),
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr
    assert ppinfer("keygen", "--bits", "1024", "--out", str(tmp_path / "keys")).returncode == 0
    plain = ["--insecure", "--allow-small-keys"]
    key_server = start_daemon(  # JSON logs: the banner is a JSON line too (item 12)
        [
            "serve-key", "--keys", str(tmp_path / "keys"), "--listen", "127.0.0.1:0",
            "--log-format", "json", *plain,
        ],
        tmp_path / "b.log",
    )  # fmt: skip
    try:
        model_server = start_daemon(
            [
                "serve-model", "--model", str(tmp_path / "m.ppi"), "--key-server",
                key_server.address, "--listen", "127.0.0.1:0", *plain,
            ],
            tmp_path / "a.log",
        )  # fmt: skip
        try:
            result = ppinfer(
                "predict", "--server", model_server.address, "--insecure", "--json",
                str(tmp_path / "x.npy"),
            )  # fmt: skip
        finally:
            model_server.stop()
    finally:
        key_server.stop()
    assert result.returncode == 0, result.stderr
    assert "not encrypted" in result.stderr  # the warning, once
    with torch.no_grad():
        expected = model(torch.as_tensor(inputs, dtype=torch.float32)).numpy()
    answers = json.loads(result.stdout)
    np.testing.assert_allclose(
        [a["logits"] for a in answers], _plan_logits(tmp_path / "m.ppi", inputs), atol=1e-5
    )
    np.testing.assert_allclose([a["logits"] for a in answers], expected, atol=0.05)
    assert "scores" not in answers[0]  # no client activation: the logits, once (item 14)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("strings", "holds <U1 values"),
        ("scalar", "holds no inputs"),
        ("empty", "holds no inputs"),
        ("complex", "holds complex values"),
        ("archive", "is an .npz archive"),
    ],
)
def test_predict_refuses_unusable_input_files_in_one_line(
    tmp_path: Path, content: str, message: str
) -> None:
    """Issue 22, items 7 and 14: each of these gave a traceback, or (empty, complex) a
    silent exit 0 or a silent cast."""
    import numpy as np

    path = tmp_path / ("x.npz" if content == "archive" else "x.npy")
    arrays = {
        "strings": np.array(["a", "b"]),
        "scalar": np.array(1.5),
        "empty": np.zeros((0, 4)),
        "complex": np.ones(4, dtype=complex),
    }
    if content == "archive":
        np.savez(path, x=np.zeros(4))
    else:
        np.save(path, arrays[content])
    result = ppinfer("predict", "--server", "127.0.0.1:9", "--insecure", str(path))
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_compiling_a_model_whose_class_lived_in_the_training_script(tmp_path: Path) -> None:
    """Issue 22, item 9: the most common way to save a model; the error said only "Can't
    get attribute 'Net' on <module '__main__'>"."""
    script = tmp_path / "train.py"
    script.write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x)\n"
        f"torch.save(Net(), {str(tmp_path / 'net.pt')!r})\n"
    )
    subprocess.run([sys.executable, str(script)], check=True, timeout=300)
    result = ppinfer(
        "compile", str(tmp_path / "net.pt"), "-o", str(tmp_path / "n.ppi"), "--input-shape", "4"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "importable module" in result.stderr and "TorchScript" in result.stderr


def test_compile_refuses_to_overwrite_and_nonsense_bits(tmp_path: Path) -> None:
    """Issue 22, item 14: compile -o replaced a plan (keygen and certs refuse to), and
    --weight-bits 0 was accepted."""
    import torch
    from torch import nn

    torch.save(nn.Sequential(nn.Linear(4, 2)), tmp_path / "m.pt")
    out = tmp_path / "m.ppi"
    args = ["compile", str(tmp_path / "m.pt"), "-o", str(out), "--input-shape", "4"]
    args += ["--input-range", "4"]
    assert ppinfer(*args).returncode == 0
    before = out.read_bytes()
    again = ppinfer(*args)
    assert again.returncode == 1 and "--force" in again.stderr and out.read_bytes() == before
    assert ppinfer(*args, "--force").returncode == 0
    zero = ppinfer(*args, "--force", "--weight-bits", "0")
    assert zero.returncode == 1 and "weight_bits must be in [2, 24]" in zero.stderr


def test_predict_needs_a_port(tmp_path: Path) -> None:
    """Issue 22, item 8: --server localhost dialled port 443 without a word."""
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros(4))
    result = ppinfer("predict", "--server", "localhost", "--insecure", str(tmp_path / "x.npy"))
    assert result.returncode == 1 and "--server must be HOST:PORT" in result.stderr
