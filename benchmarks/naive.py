"""The naive reference: the two-server protocol written the obvious way with python-paillier.

Benchmarks only, never a mode of ppinfer. It follows the same steps as the real protocol,
in one process and without gRPC (so it is timed a little in its favour):

1. B encrypts -r for the client's input mask r; A adds the masked input u = x + r.
2. A computes every layer with phe's object API and the float weights: one
   ``EncryptedNumber * float`` (an exponentiation) per weight, and one ``+`` per weight
   (which re-scales whenever the two exponents differ).
3. At each activation A permutes the values and, where the function allows it, scales
   each by a random d; B decrypts each value on its own (no packing), applies the
   function and encrypts the result afresh (a full exponentiation each, no pool); A
   undoes the permutation and multiplies by 1/d.
4. A adds an output mask; B decrypts; the client subtracts the mask.

Single-threaded, as the obvious code is. :func:`naive_inference` returns the logits and
where the time went.

Step 3 is the brief's stage answer (fresh encryptions of the results). ppinfer's B
answers y + t in the clear instead and A applies each layer to Enc(-t) (PROTOCOL.md §6):
written the obvious way that costs the same, one encryption per result and one
exponentiation per weight, so the reference keeps the brief's form.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["NaiveTiming", "naive_inference"]

_ACTIVATIONS: dict[str, Callable[[float], float]] = {
    "ReLU": lambda v: max(v, 0.0),
    "Tanh": lambda v: float(np.tanh(v)),
}
#: Functions for which A may scale by d > 0 and divide afterwards (f(d z) = d f(z)).
_HOMOGENEOUS = {"ReLU"}


@dataclass
class NaiveTiming:
    a_seconds: float = 0.0
    b_seconds: float = 0.0
    client_seconds: float = 0.0

    @property
    def total(self) -> float:
        return self.a_seconds + self.b_seconds + self.client_seconds


def _layers(model: Any) -> list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], str]]:
    """(W, b, activation after it or "") for an nn.Sequential of Linear and activations."""
    from torch import nn

    layers: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], str]] = []
    for module in model:
        if isinstance(module, nn.Linear):
            weight = module.weight.detach().double().numpy()
            layers.append((weight, module.bias.detach().double().numpy(), ""))
        elif type(module).__name__ in _ACTIVATIONS and layers:
            weight, bias, _ = layers[-1]
            layers[-1] = (weight, bias, type(module).__name__)
        elif not isinstance(module, nn.Softmax):
            raise ValueError(f"the naive reference runs Linear/ReLU/Tanh MLPs, not {module}")
    return layers


def _uniform() -> float:
    return secrets.randbelow(2**53) / 2**53


def naive_inference(
    model: Any, x: npt.NDArray[np.float64], public: Any, private: Any
) -> tuple[npt.NDArray[np.float64], NaiveTiming]:
    """One private inference the naive way; ``public``/``private`` are phe keys."""
    timing = NaiveTiming()
    started = time.process_time()
    r = [(_uniform() - 0.5) * 2**20 for _ in range(x.size)]  # the client's mask
    u = [float(v) + m for v, m in zip(x.ravel(), r, strict=True)]
    timing.client_seconds += time.process_time() - started

    started = time.process_time()
    negative_mask = [public.encrypt(-m) for m in r]
    timing.b_seconds += time.process_time() - started

    started = time.process_time()
    values = [c + v for c, v in zip(negative_mask, u, strict=True)]
    timing.a_seconds += time.process_time() - started
    layers = _layers(model)
    for weight, bias, activation in layers:
        started = time.process_time()
        z = []
        for row, b in zip(weight, bias, strict=True):
            total = values[0] * float(row[0])
            for value, w in zip(values[1:], row[1:], strict=True):
                total = total + value * float(w)
            z.append(total + float(b))
        if not activation:
            s = [(_uniform() - 0.5) * 2**20 for _ in z]  # output mask
            masked = [value + m for value, m in zip(z, s, strict=True)]
            timing.a_seconds += time.process_time() - started
            started = time.process_time()
            opened = [private.decrypt(value) for value in masked]
            timing.b_seconds += time.process_time() - started
            started = time.process_time()
            logits = np.array([o - m for o, m in zip(opened, s, strict=True)], dtype=np.float64)
            timing.client_seconds += time.process_time() - started
            return logits, timing
        order = np.random.default_rng(secrets.randbits(64)).permutation(len(z)).tolist()
        scales = [1.0 + 255.0 * _uniform() if activation in _HOMOGENEOUS else 1.0 for _ in z]
        sent = [z[i] * scales[k] for k, i in enumerate(order)]
        timing.a_seconds += time.process_time() - started

        started = time.process_time()
        function = _ACTIVATIONS[activation]
        answered = [public.encrypt(float(function(private.decrypt(value)))) for value in sent]
        timing.b_seconds += time.process_time() - started

        started = time.process_time()
        restored: list[Any] = [None] * len(z)
        for k, i in enumerate(order):
            restored[i] = answered[k] * (1.0 / scales[k])
        values = restored
        timing.a_seconds += time.process_time() - started
    raise ValueError("the model has no output layer")
