"""Bundled real data and small models: scikit-learn's digits and breast-cancer sets.

The demo and the end-to-end tests train the same way, so a result seen in one is the
result of the other. Needs torch and scikit-learn (``ppinfer[demo]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "NETWORKS",
    "Split",
    "breast_cancer_split",
    "digits_split",
    "train_example",
    "train_mlp",
    "train_network",
]


@dataclass(frozen=True)
class Split:
    name: str
    train_x: npt.NDArray[np.float64]
    train_y: npt.NDArray[np.int64]
    test_x: npt.NDArray[np.float64]
    test_y: npt.NDArray[np.int64]
    classes: int


def _split(name: str, x: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> Split:
    from sklearn.model_selection import train_test_split

    train_x, test_x, train_y, test_y = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y
    )
    return Split(name, train_x, train_y, test_x, test_y, int(y.max()) + 1)


def digits_split() -> Split:
    """8x8 handwritten digits (1797 images), pixels scaled to [0, 1]; 360 test images."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return _split("digits", data.data.astype(np.float64) / 16.0, data.target.astype(np.int64))


def breast_cancer_split() -> Split:
    """Wisconsin breast-cancer records (569, 30 features), standardized on the train split."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    split = _split("breast_cancer", data.data.astype(np.float64), data.target.astype(np.int64))
    mean, std = split.train_x.mean(axis=0), split.train_x.std(axis=0)
    return Split(
        split.name,
        (split.train_x - mean) / std,
        split.train_y,
        (split.test_x - mean) / std,
        split.test_y,
        split.classes,
    )


def train_mlp(
    split: Split, hidden: list[int], activation: str = "relu", epochs: int = 300, seed: int = 0
) -> Any:
    """A torch nn.Sequential MLP trained full-batch with Adam (deterministic for a seed)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    factories = {
        "relu": nn.ReLU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "leaky_relu": nn.LeakyReLU,
    }
    layers: list[nn.Module] = []
    width = split.train_x.shape[1]
    for size in hidden:
        layers += [nn.Linear(width, size), factories[activation]()]
        width = size
    layers.append(nn.Linear(width, split.classes))
    features = (split.train_x.shape[1],)
    return train_network(nn.Sequential(*layers), split, features, epochs, seed, lr=0.01)


def train_network(
    model: Any,
    split: Split,
    shape: tuple[int, ...],
    epochs: int = 300,
    seed: int = 0,
    lr: float = 0.01,
) -> Any:
    """Train ``model`` full-batch with Adam on inputs reshaped to ``shape``; append a
    Softmax (which the client runs) and return it in eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    x = torch.as_tensor(split.train_x, dtype=torch.float32).reshape(-1, *shape)
    y = torch.as_tensor(split.train_y)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    model.append(nn.Softmax(dim=1))
    return model.eval()


def _digits_cnn() -> Any:
    """Conv2d, BatchNorm, ReLU, MaxPool2d, Linear over 1x8x8 digits."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )


def _he_cnn() -> Any:
    """The shape of the HE-only CNNs of the literature: square activations, average pooling."""
    from torch import nn

    from ppinfer.compiler.torch_modules import Square

    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        Square(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1),
        Square(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


def _conv1d_net() -> Any:
    """A 1-D CNN over a 64-sample signal (digits read row by row, standing in for ECG)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv1d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(6, 8, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(4),
        nn.Flatten(),
        nn.Linear(8 * 4, 10),
    )


def train_example(name: str, split: Split, seed: int = 0) -> tuple[Any, tuple[int, ...]]:
    """The example network ``name`` trained on ``split``, initialized from ``seed``, and its
    input shape: the same model on every run."""
    import torch

    build, shape, lr = NETWORKS[name]
    torch.manual_seed(seed)
    return train_network(build(), split, shape, seed=seed, lr=lr), shape


#: name -> (builder, input shape, learning rate) of the example networks on digits.
NETWORKS: dict[str, tuple[Any, tuple[int, ...], float]] = {
    "digits-cnn": (_digits_cnn, (1, 8, 8), 0.01),
    "he-cnn": (_he_cnn, (1, 8, 8), 0.005),
    "conv1d": (_conv1d_net, (1, 64), 0.01),
}
