"""The latency benchmark's workloads: real data, trained PyTorch models, compiled plans.

- W1: an MNIST-shaped MLP 784-128-128-10 with ReLU.
- W2: the breast-cancer MLP 30-16-2 with Tanh.
- W3: an MNIST-shaped CNN: Conv2d 1->5 (5x5, stride 2, padding 2), ReLU, Flatten,
  Linear 980->100, ReLU, Linear 100->10.

W1 and W3 read MNIST's IDX files when given a folder with them; otherwise they use
scikit-learn's bundled 8x8 digits, upsampled to 28x28 (bilinear): real handwriting at
MNIST's shape, with no download. TenSEAL runs W1's architecture with x^2 in place of
ReLU, trained the same way (the usual substitute: CKKS evaluates polynomials only).

The benchmarks compile the workloads as a user's ``ppinfer compile`` does: the compiler
picks the narrowest weight bits (4 to 16) whose plan agrees with the float model on every
calibration input (:data:`BENCH_WEIGHT_BITS` None), since A's cost grows with the weights'
bits; ``--weight-bits`` fixes a width for a run.
"""

from __future__ import annotations

import gzip
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ppinfer.errors import PPInferError
from ppinfer.example_models import Split, breast_cancer_split, digits_split, train_network

__all__ = [
    "BENCH_WEIGHT_BITS",
    "WORKLOADS",
    "Workload",
    "build_workload",
    "compile_workload",
    "float_predictions",
    "load_mnist",
    "mnist_shaped_digits",
]

#: name -> what it is, as the report prints it
WORKLOADS = {
    "W1": "MLP 784-128-128-10, ReLU",
    "W2": "breast-cancer MLP 30-16-2, Tanh",
    "W3": "CNN conv 1->5 5x5/2, ReLU, 980-100, ReLU, 100-10",
}
#: Calibration inputs the compiler fits precisions on (taken from the train split).
CALIBRATION = 512
#: Signed bits of the workloads' weights in the benchmarks (None: the compiler's pick).
BENCH_WEIGHT_BITS: int | None = None


@dataclass
class Workload:
    name: str
    description: str
    data: str
    split: Split
    shape: tuple[int, ...]
    model: Any  # torch nn.Sequential ending in Softmax (which the client runs)

    def test_inputs(self, count: int) -> npt.NDArray[np.float64]:
        if count > len(self.split.test_x):
            raise PPInferError(f"{self.name} has {len(self.split.test_x)} test inputs, not {count}")
        return self.split.test_x[:count].reshape(count, *self.shape)


def mnist_shaped_digits() -> Split:
    """scikit-learn's 8x8 digits upsampled to 28x28 (flattened to 784), pixels in [0, 1]."""
    import torch
    import torch.nn.functional as functional

    small = digits_split()

    def upsample(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        images = torch.as_tensor(x, dtype=torch.float64).reshape(-1, 1, 8, 8)
        big = functional.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
        return big.reshape(len(x), 784).clamp(0, 1).numpy()

    return Split(
        "digits-28x28",
        upsample(small.train_x),
        small.train_y,
        upsample(small.test_x),
        small.test_y,
        small.classes,
    )


def _read_idx(path: Path) -> npt.NDArray[np.uint8]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        data = stream.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 8:
        raise PPInferError(f"{path} is not an IDX file of unsigned bytes")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise PPInferError(f"{path} holds {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def load_mnist(folder: Path, train: int = 6000, test: int = 1000) -> Split:
    """MNIST from its four IDX files (optionally .gz) in ``folder``: a train and test subset."""

    def find(stem: str) -> Path:
        for name in (stem, stem + ".gz"):
            if (folder / name).exists():
                return folder / name
        raise PPInferError(f"no {stem}[.gz] in {folder}: give the folder with MNIST's IDX files")

    def images(stem: str, count: int) -> npt.NDArray[np.float64]:
        return _read_idx(find(stem))[:count].reshape(-1, 784).astype(np.float64) / 255.0

    def labels(stem: str, count: int) -> npt.NDArray[np.int64]:
        return _read_idx(find(stem))[:count].astype(np.int64)

    return Split(
        "mnist",
        images("train-images-idx3-ubyte", train),
        labels("train-labels-idx1-ubyte", train),
        images("t10k-images-idx3-ubyte", test),
        labels("t10k-labels-idx1-ubyte", test),
        10,
    )


def _mlp(widths: list[int], activation: Any) -> Any:
    from torch import nn

    layers: list[Any] = []
    for width, following in itertools.pairwise(widths):
        layers += [nn.Linear(width, following), activation()]
    return nn.Sequential(*layers[:-1])


def build_workload(
    name: str, mnist: Path | None = None, seed: int = 0, epochs_scale: float = 1.0
) -> Workload:
    """Train the workload's model on its data (deterministic for a seed); ``epochs_scale``
    below 1 trains less (smoke runs)."""
    import torch
    from torch import nn

    from ppinfer.compiler.torch_modules import Square

    torch.manual_seed(seed)
    if name in {"W1", "W3", "W1-square"}:
        split = load_mnist(mnist) if mnist is not None else mnist_shaped_digits()
        data = str(mnist) if mnist is not None else "scikit-learn digits upsampled to 28x28"
    else:
        split = breast_cancer_split()
        data = "scikit-learn breast cancer (Wisconsin), standardized"
    shape: tuple[int, ...]
    if name == "W1":
        model, shape, epochs, lr = _mlp([784, 128, 128, 10], nn.ReLU), (784,), 150, 0.003
    elif name == "W1-square":
        model, shape, epochs, lr = _mlp([784, 128, 128, 10], Square), (784,), 150, 0.001
    elif name == "W2":
        model, shape, epochs, lr = _mlp([30, 16, 2], nn.Tanh), (30,), 300, 0.01
    elif name == "W3":
        model = nn.Sequential(
            nn.Conv2d(1, 5, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(980, 100),
            nn.ReLU(),
            nn.Linear(100, 10),
        )
        shape, epochs, lr = (1, 28, 28), 120, 0.003
    else:
        raise PPInferError(f"no workload {name!r}; choose from {', '.join(WORKLOADS)}")
    epochs = max(1, round(epochs * epochs_scale))
    trained = train_network(model, split, shape, epochs, seed, lr=lr)
    description = WORKLOADS.get(name, "MLP 784-128-128-10, x^2 (TenSEAL's substitute)")
    return Workload(name, description, data, split, shape, trained)


def compile_workload(
    workload: Workload, calibration: int | None = None, weight_bits: int | None = BENCH_WEIGHT_BITS
) -> Any:
    """The workload's plan with ``weight_bits`` signed weights (None: the narrowest that
    keeps agreement), activation precisions fitted on train inputs (a CompileReport)."""
    from ppinfer.compiler import Precision, compile_model

    count = calibration or CALIBRATION
    inputs = workload.split.train_x[:count].reshape(-1, *workload.shape)
    precision = Precision(weight_bits=weight_bits)
    return compile_model(
        workload.model, workload.shape, workload.name, calibration=inputs, precision=precision
    )


def float_predictions(workload: Workload, inputs: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
    """The float model's logits (its trailing softmax left out)."""
    import torch

    with torch.no_grad():
        x = torch.as_tensor(inputs, dtype=torch.float32)
        logits: npt.NDArray[Any] = workload.model[:-1](x).double().numpy()
    return logits
