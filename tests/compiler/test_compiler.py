"""Compiling torch, TorchScript and ONNX models: what is supported, fused, refused, how exact."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ppinfer.compiler import CompileError, Precision, compile_model, format_report, round_trips
from ppinfer.compiler.activations import Function, StageSpec, evaluate_stage
from ppinfer.compiler.torch_modules import Square

#: The lowering tests below bound the logit error, a property of the width: at 16-bit
#: weights. (By default the compiler picks a narrower width; that has its own test.)
FULL_WIDTH = Precision(weight_bits=16)


def _calibration(*shape: int, count: int = 64) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(count, *shape))


@pytest.mark.parametrize(
    ("activation", "function"),
    [
        (nn.ReLU(), Function("relu")),
        (nn.LeakyReLU(0.2), Function("leaky_relu", (0.2,))),
        (nn.PReLU(init=0.3), Function("leaky_relu", (0.30000001192092896,))),
        (nn.ReLU6(), Function("hardtanh", (0.0, 6.0))),
        (nn.Hardtanh(-2.0, 1.5), Function("hardtanh", (-2.0, 1.5))),
        (nn.Tanh(), Function("tanh")),
        (nn.Sigmoid(), Function("sigmoid")),
        (nn.SiLU(), Function("silu")),
        (nn.GELU(), Function("gelu")),
        (nn.GELU(approximate="tanh"), Function("gelu_tanh")),
        (nn.Softplus(beta=2.0, threshold=10.0), Function("softplus", (2.0, 10.0))),
        (Square(), Function("square")),
    ],
)
def test_every_activation_compiles_and_agrees(activation: nn.Module, function: Function) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), activation, nn.Linear(8, 3), nn.Softmax(dim=1)).eval()
    report = compile_model(model, (6,), "m", calibration=_calibration(6), precision=FULL_WIDTH)
    assert [a.functions for a in report.plan.activations] == [(function,)]
    assert report.plan.client_activation == "softmax"
    assert report.agreement == 1.0
    assert report.max_logit_error is not None and report.max_logit_error < 0.01
    table = format_report(report)
    assert "| 0 | 0 (Linear) | 8 |" in table and "agreement" in table


class _Functional(nn.Module):
    """Not a Sequential: functional calls and tensor methods in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv(x)), 2, stride=1)
        x = torch.flatten(x, 1)
        return F.log_softmax(self.fc(x.view(x.shape[0], -1)), dim=1)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x)) + x


class _DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x


def test_traced_module_with_functional_calls_compiles() -> None:
    torch.manual_seed(2)
    model = _Functional().eval()
    calibration = _calibration(2, 8, 8)
    report = compile_model(model, (2, 8, 8), "f", calibration=calibration, precision=FULL_WIDTH)
    plan = report.plan
    assert plan.client_activation == "log_softmax"
    assert len(plan.activations) == 1 and plan.activations[0].stage.describe() == "relu → max/4"
    assert report.agreement == 1.0 and report.max_logit_error is not None
    assert report.max_logit_error < 1e-3


@pytest.mark.parametrize(
    "layers",
    [
        [nn.Conv1d(2, 4, 3, stride=2, padding=2, dilation=2), nn.ReLU(), nn.MaxPool1d(3, 2)],
        [nn.Conv1d(2, 4, 5, padding=2, groups=2), nn.BatchNorm1d(4), nn.Tanh(), nn.AvgPool1d(2)],
        [nn.Conv2d(2, 6, 3, stride=(1, 2), padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(2)],
        [nn.Conv2d(2, 4, 3, dilation=2, padding=2), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(2)],
        [nn.Conv2d(2, 4, 3), nn.GELU(), nn.AdaptiveMaxPool2d(3), nn.SiLU()],
        [nn.MaxPool2d(2, padding=1), nn.Conv2d(2, 3, 2), Square(), nn.AvgPool2d(2, ceil_mode=True)],
    ],
    ids=[
        "conv1d-dilated",
        "conv1d-groups-bn",
        "conv2d-groups",
        "conv2d-bn",
        "maxpool-silu",
        "lead",
    ],
)
def test_convolutions_and_pooling_agree(layers: list[nn.Module]) -> None:
    torch.manual_seed(3)
    one_d = isinstance(layers[0], (nn.Conv1d, nn.MaxPool1d))
    shape = (2, 16) if one_d else (2, 8, 8)
    body = nn.Sequential(*layers).eval()
    with torch.no_grad():
        for module in body:  # give batch norm statistics that are not the identity
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                _randomize_statistics(module)
        features = body(torch.zeros(1, *shape)).numel()
    model = nn.Sequential(body, nn.Flatten(), nn.Linear(features, 4)).eval()
    calibration = _calibration(*shape)
    report = compile_model(model, shape, "c", calibration=calibration, precision=FULL_WIDTH)
    assert report.agreement == 1.0
    assert report.max_logit_error is not None and report.max_logit_error < 1e-3


def test_a_trailing_sigmoid_runs_at_the_client() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU6(), nn.Linear(3, 1), nn.Sigmoid()).eval()
    report = compile_model(model, (4,), "binary", calibration=_calibration(4))
    assert report.plan.client_activation == "sigmoid" and len(report.plan.dense) == 2
    # one output: the argmax always "agrees", so the compiler does not narrow the weights
    assert report.weight_bits == 16 and "one output" in report.weight_bits_choice
    assert report.plan.activations[0].functions == (Function("hardtanh", (0.0, 6.0)),)


def test_fusion_rules() -> None:
    model = nn.Sequential(
        nn.Linear(16, 16),
        nn.Linear(16, 16),  # fuses with the one before
        nn.Unflatten(1, (1, 4, 4)),
        nn.ReLU(),
        nn.MaxPool2d(2, 1),  # one round trip with the ReLU
        nn.MaxPool2d(2, 1),  # a second pooling: an identity layer, then a new round trip
        nn.Sigmoid(),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    report = compile_model(model, (16,), "fused", calibration=_calibration(16))
    plan = report.plan
    assert [d.label for d in plan.dense] == [
        "0 (Linear) + 1 (Linear) + 2 (Unflatten)",
        "(identity)",
        "7 (Flatten) + 8 (Linear)",
    ]
    assert [a.stage.describe() for a in plan.activations] == ["relu → max/4", "max/4 → sigmoid"]
    assert round_trips(report) == 4 and report.agreement == 1.0


def _randomize_statistics(norm: Any) -> None:
    """Batch-norm statistics that are not the identity, so folding them is tested."""
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)


def _onnx_file(model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    pytest.importorskip("onnx")
    torch.onnx.export(model, (torch.zeros(1, *shape),), str(path), dynamo=False)
    return path


def _digits_like_cnn() -> nn.Module:
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
        nn.LogSoftmax(dim=1),
    )
    _randomize_statistics(model[1])
    return model.eval()


@pytest.mark.parametrize("form", ["torch.save", "torchscript", "traced", "onnx"])
def test_model_files_compile_to_the_same_plan(tmp_path: Path, form: str) -> None:
    model = _digits_like_cnn()
    shape = (1, 8, 8)
    path = tmp_path / "model.pt"
    if form == "torch.save":
        torch.save(model, path)
    elif form == "torchscript":
        torch.jit.save(torch.jit.script(model), path)
    elif form == "traced":
        traced = torch.jit.trace(model, torch.zeros(1, *shape))  # type: ignore[no-untyped-call]
        torch.jit.save(traced, path)
    else:
        path = _onnx_file(model, shape, tmp_path / "model.onnx")
    calibration = _calibration(*shape)
    expected = compile_model(model, shape, "m", calibration=calibration).plan
    report = compile_model(path, shape, calibration=calibration)
    assert report.agreement == 1.0 and report.plan.name == path.stem
    plan = report.plan
    assert plan.client_activation == "log_softmax"
    assert len(plan.dense) == len(expected.dense) == 2
    for ours, theirs in zip(plan.dense, expected.dense, strict=True):
        np.testing.assert_allclose(ours.weight, theirs.weight, atol=1e-6)
        np.testing.assert_allclose(ours.bias, theirs.bias, atol=1e-6)
    assert plan.activations[0].stage == expected.activations[0].stage
    np.testing.assert_array_equal(plan.activations[0].windows, expected.activations[0].windows)


def _prelu(*slopes: float) -> nn.PReLU:
    prelu = nn.PReLU(len(slopes))
    with torch.no_grad():
        prelu.weight.copy_(torch.tensor(slopes))
    return prelu


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)), "1 \\(LayerNorm\\)"),
        (
            nn.Sequential(nn.Linear(4, 2), nn.Softmax(dim=1), nn.Linear(2, 2)),
            "must be the model's last layer",
        ),
        (_Residual(), "residual"),
        (_DataDependent(), "cannot trace"),
        (
            nn.Sequential(nn.Linear(4, 6), nn.Unflatten(1, (2, 3)), _prelu(0.1, 0.2), nn.Flatten()),
            "different slope per channel",
        ),
        (nn.Sequential(nn.Linear(4, 4), nn.Softplus(beta=-1.0)), "beta > 0"),
        (nn.Sequential(nn.Linear(4, 4)).state_dict(), "state_dict"),
        (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4).train()), None),
    ],
)
def test_unsupported_models_are_refused_naming_the_layer(model: Any, message: str | None) -> None:
    if message is None:  # batch norm in train mode is compiled in eval mode, not refused
        assert compile_model(model, (4,), "m", calibration=_calibration(4)).agreement == 1.0
        return
    with pytest.raises(CompileError, match=message):
        compile_model(model, (4,), "bad", calibration=_calibration(4))


def test_onnx_branches_and_unknown_operators_are_refused(tmp_path: Path) -> None:
    path = _onnx_file(_Residual().eval(), (4,), tmp_path / "residual.onnx")
    with pytest.raises(CompileError, match="residual"):
        compile_model(path)

    class Transposed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.transpose(1, 2).flatten(1)

    path = _onnx_file(Transposed().eval(), (2, 3), tmp_path / "transposed.onnx")
    with pytest.raises(CompileError, match="operator Transpose"):
        compile_model(path, (2, 3), calibration=_calibration(2, 3))
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(CompileError, match="cannot read"):
        compile_model(tmp_path / "junk.onnx", (4,))


def test_input_range_is_needed_and_respected() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(CompileError, match="calibration data or an input range"):
        compile_model(model, (3,), "m")

    plan = compile_model(model, (3,), "m", precision=Precision(input_range=100.0)).plan
    assert plan.input_format.max_abs_real >= 100.0


def test_activation_precision_follows_the_calibrated_range() -> None:
    torch.manual_seed(5)
    widened = nn.Linear(4, 4)
    with torch.no_grad():
        widened.weight.mul_(64.0)  # the second activation reaches 64x further
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), widened, nn.ReLU(), nn.Linear(4, 2))
    plan = compile_model(model.eval(), (4,), "m", calibration=_calibration(4)).plan
    first, second = (a.out_frac_bits for a in plan.activations)
    assert 5 <= first - second <= 7


_TORCH_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
    "leaky_relu": lambda t: F.leaky_relu(t, 0.1),
    "hardtanh": lambda t: F.hardtanh(t, -1.0, 2.5),
    "softplus": lambda t: F.softplus(t, 2.0, 5.0),
    "square": lambda t: t * t,
}
_PARAMETERS = {"leaky_relu": (0.1,), "hardtanh": (-1.0, 2.5), "softplus": (2.0, 5.0)}


@pytest.mark.parametrize("name", sorted(_TORCH_FUNCTIONS))
@pytest.mark.parametrize("group", [1, 3])
def test_key_server_functions_match_torch(name: str, group: int) -> None:
    scale_in, scale_out = 30, 16
    reals = np.linspace(-6, 6, 99)
    values = [round(v * 2**scale_in) for v in reals]
    stage = StageSpec((Function(name, _PARAMETERS.get(name, ())),), group)
    outputs = np.array(evaluate_stage(stage, values, scale_in, scale_out)) / 2.0**scale_out
    expected = _TORCH_FUNCTIONS[name](torch.as_tensor(reals, dtype=torch.float64)).numpy()
    expected = expected.reshape(-1, group).max(axis=1)
    np.testing.assert_allclose(outputs, expected, atol=2.0**-scale_out)


def test_the_python_api_compiles_an_onnx_file_and_saves_the_plan(tmp_path: Path) -> None:
    """Issue 22, item 13: ppinfer.compile required input_shape for an ONNX file (which
    declares it), and no saving of a plan was documented."""
    import ppinfer
    from ppinfer.compiler.plan import PlanError

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    calibration = np.random.default_rng(3).normal(size=(16, 4))
    plan = ppinfer.compile(_onnx_file(model, (4,), tmp_path / "m.onnx"), calibration=calibration)
    assert plan.input_shape == (4,)
    ppinfer.save_plan(plan, tmp_path / "m.ppi")
    with pytest.raises(PlanError, match="exists"):
        ppinfer.save_plan(plan, tmp_path / "m.ppi")
    ppinfer.save_plan(plan, tmp_path / "m.ppi", overwrite=True)
    assert ppinfer.load_plan(tmp_path / "m.ppi").input_shape == (4,)


def test_weight_bits_too_few_to_mean_anything_are_refused() -> None:
    """Issue 22, item 14: --weight-bits 0 wrote a plan with 64% agreement, without a word."""
    with pytest.raises(CompileError, match=r"weight_bits must be in \[2, 24\], not 0"):
        Precision(weight_bits=0)


def test_the_compiler_picks_the_narrowest_weight_bits_that_keep_agreement(
    digits: Any, digits_relu_model: Any
) -> None:
    """A's offline cost follows the weight bits: with calibration data the compiler takes
    the narrowest width (4 to 16) whose plan agrees with the float model on every input,
    says so in the table, and an explicit width overrides the pick."""
    calibration = digits.train_x[:256]
    picked = compile_model(digits_relu_model, (64,), "d", calibration=calibration)
    assert 4 <= picked.weight_bits < 16
    assert picked.agreement == 1.0  # measured on the picked plan, not assumed
    assert f"weight bits: {picked.weight_bits} (picked" in format_report(picked)
    if picked.weight_bits > 4:  # one bit fewer loses agreement somewhere
        narrower = Precision(weight_bits=picked.weight_bits - 1)
        fewer = compile_model(digits_relu_model, (64,), "d", calibration=calibration,
                              precision=narrower)  # fmt: skip
        assert fewer.agreement is not None and fewer.agreement < 1.0
    given = compile_model(digits_relu_model, (64,), "d", calibration=calibration,
                          precision=Precision(weight_bits=12))  # fmt: skip
    assert given.weight_bits == 12 and "weight bits: 12\n" in format_report(given) + "\n"
    # no calibration data: nothing to measure agreement on, so the default width
    scale = Precision(input_range=float(np.max(np.abs(calibration))))
    bare = compile_model(digits_relu_model, (64,), "d", precision=scale)
    assert bare.weight_bits == 16 and "no calibration data" in bare.weight_bits_choice
