"""Convolutional networks end to end over real gRPC at 2048 bits: a digits CNN (Conv2d,
BatchNorm, ReLU, MaxPool2d, Linear), an HE-style CNN (Square, AvgPool2d), a Conv1d net
over 64-sample signals, and the digits CNN exported to ONNX and compiled from that file.

The default run checks the first test images of each; ``-m slow`` runs the full split."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from deployment import WIDE, deploy

from ppinfer.compiler import compile_model, round_trips
from ppinfer.compiler.plan import Plan
from ppinfer.example_models import train_example
from ppinfer.paillier import PrivateKey, PublicKey

Keypair = tuple[PublicKey, PrivateKey]
CASES = ["digits-cnn", "he-cnn", "conv1d", "digits-cnn-onnx"]
#: Test images the default run sends through each network.
QUICK_SAMPLES = 8


@pytest.fixture(scope="module")
def networks(digits: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """name -> (float model, input shape, plan), each compiled with the training images."""
    out: dict[str, Any] = {}
    for name in ("digits-cnn", "he-cnn", "conv1d"):
        model, shape = train_example(name, digits)
        calibration = digits.train_x.reshape(-1, *shape)
        report = compile_model(model, shape, name, calibration=calibration, precision=WIDE)
        out[name] = (model, shape, report)
    pytest.importorskip("onnx")
    model, shape, _ = out["digits-cnn"]
    path = Path(tmp_path_factory.mktemp("onnx")) / "digits-cnn-onnx.onnx"
    torch.onnx.export(model, (torch.zeros(1, *shape),), str(path), dynamo=False)
    calibration = digits.train_x.reshape(-1, *shape)
    out["digits-cnn-onnx"] = (
        model,
        shape,
        compile_model(path, shape, calibration=calibration, precision=WIDE),
    )
    return out


@pytest.fixture(scope="module")
def cnn_deployment(networks: dict[str, Any], keypair_2048: Keypair) -> Any:
    plans: list[Plan] = [report.plan for _, _, report in networks.values()]
    with deploy(plans, keypair_2048) as deployment:
        yield deployment


def _agreement(deployment: Any, networks: dict[str, Any], name: str, inputs: np.ndarray) -> None:
    model, shape, report = networks[name]
    # On the 1437 training images, in the simulator with fresh random masks: a near-tie
    # (logits closer than the quantization error, ~4e-3 for the Square CNN) may flip.
    assert report.agreement >= 0.999
    x = inputs.reshape(-1, *shape)
    with torch.no_grad():
        reference = model[:-1](torch.as_tensor(x, dtype=torch.float32)).double().numpy()
    started = time.perf_counter()
    with deployment.client(model=report.plan.name) as client:
        private = np.array(list(client.predict_stream(x)))
    elapsed = time.perf_counter() - started
    agreement = float(np.mean(private.argmax(axis=1) == reference.argmax(axis=1)))
    error = float(np.max(np.abs(private - reference)))
    print(
        f"{name}: agreement {agreement:.2%} over {len(x)}, max logit error {error:.2e}, "
        f"{round_trips(report)} round trips to B, {elapsed / len(x) * 1e3:.0f} ms per inference "
        f"(streamed, 8 in flight)"
    )
    assert private.shape == reference.shape
    assert agreement == 1.0
    assert error < 0.05


@pytest.mark.parametrize("name", CASES)
def test_cnn_first_test_images_at_2048_bits(
    cnn_deployment: Any, networks: dict[str, Any], digits: Any, name: str
) -> None:
    _agreement(cnn_deployment, networks, name, digits.test_x[:QUICK_SAMPLES])


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", CASES)
def test_cnn_full_test_split_at_2048_bits(
    cnn_deployment: Any, networks: dict[str, Any], digits: Any, name: str
) -> None:
    assert len(digits.test_x) == 360
    _agreement(cnn_deployment, networks, name, digits.test_x)


def test_onnx_plan_matches_the_torch_plan(networks: dict[str, Any]) -> None:
    ours, theirs = networks["digits-cnn-onnx"][2].plan, networks["digits-cnn"][2].plan
    assert [d.weight.shape for d in ours.dense] == [d.weight.shape for d in theirs.dense]
    for a, b in zip(ours.dense, theirs.dense, strict=True):
        np.testing.assert_allclose(a.weight, b.weight, atol=1e-5)
    assert ours.activations[0].stage == theirs.activations[0].stage
