"""Compiling torch Sequential models: what is supported, fused, refused, and how exact it is."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ppinfer.compiler import CompileError, compile_sequential, format_report
from ppinfer.nn import Square
from ppinfer.numerics import activate


def _calibration(features: int, count: int = 64) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(count, features))


@pytest.mark.parametrize(
    ("activation", "name"),
    [
        (nn.ReLU(), "relu"),
        (nn.LeakyReLU(0.2), "leaky_relu"),
        (nn.Tanh(), "tanh"),
        (nn.Sigmoid(), "sigmoid"),
        (Square(), "square"),
    ],
)
def test_supported_activations_compile_and_agree(activation: nn.Module, name: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), activation, nn.Linear(8, 3), nn.Softmax(dim=1))
    report = compile_sequential(model, (6,), "m", calibration=_calibration(6))
    assert [a.function for a in report.plan.activations] == [name]
    assert report.plan.client_activation == "softmax"
    assert report.agreement == 1.0
    assert report.max_logit_error is not None and report.max_logit_error < 0.01
    table = format_report(report)
    assert "| dense 0 | 6→8 |" in table and "agreement" in table


def test_consecutive_linear_layers_fuse_and_flatten_dropout_vanish() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(4, 5),
        nn.Linear(5, 6),
        nn.Dropout(0.1),
        nn.ReLU(),
        nn.Identity(),
        nn.Linear(6, 2),
    )
    model.eval()
    calibration = _calibration(4)
    report = compile_sequential(model, (4,), "fused", calibration=calibration)
    assert len(report.plan.dense) == 2 and report.plan.dense[0].weight.shape == (6, 4)
    assert report.agreement == 1.0


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2)), "layer 1 \\(GELU\\)"),
        (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.ReLU(), nn.Linear(4, 2)), "in a row"),
        (nn.Sequential(nn.Linear(4, 4), nn.ReLU()), "end with a Linear"),
        (
            nn.Sequential(nn.Linear(4, 2), nn.Softmax(dim=1), nn.Linear(2, 2)),
            "must be the model's last layer",
        ),
        (nn.Linear(4, 2), "expected torch.nn.Sequential"),
    ],
)
def test_unsupported_models_are_refused_naming_the_layer(model: Any, message: str) -> None:
    with pytest.raises(CompileError, match=message):
        compile_sequential(model, (4,), "bad", calibration=_calibration(4))


def test_input_range_is_needed_and_respected() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(CompileError, match="calibration data or an input range"):
        compile_sequential(model, (3,), "m")
    plan = compile_sequential(model, (3,), "m", input_range=100.0).plan
    assert plan.input_format.max_abs_real >= 100.0


@pytest.mark.parametrize("function", ["relu", "leaky_relu", "tanh", "sigmoid", "square"])
def test_key_server_activations_match_torch(function: str) -> None:
    scale_in, scale_out = 30, 16
    reals = np.linspace(-6, 6, 101)
    values = [round(v * 2**scale_in) for v in reals]
    outputs = np.array(activate(function, 0.1, values, scale_in, scale_out)) / 2.0**scale_out
    functions: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "relu": torch.relu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "leaky_relu": lambda t: nn.functional.leaky_relu(t, 0.1),
        "square": lambda t: t * t,
    }
    torch_function = functions[function]
    expected = torch_function(torch.as_tensor(reals, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(outputs, expected, atol=2.0**-scale_out)
