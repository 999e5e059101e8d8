"""TenSEAL (CKKS) running W1's architecture with x^2 activations: the peer beside us.

One process plays both parts, in turn, with only serialized bytes passing between them,
so each part's CPU time (``time.process_time``, all threads) and bytes are its own:

- client: make the CKKS context and its Galois keys (once), encrypt the input, decrypt
  the output;
- server: the three layers on the ciphertext (vector-matrix products and squares).

The parameters are TenSEAL's MNIST tutorial's (N = 8192, a 26-bit scale, six inner
primes): enough depth for three products and two squares at 128-bit security. There is
no network in between: latency is compute only, and the report says so.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["PeerResult", "run_tenseal"]

POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = [31, 26, 26, 26, 26, 26, 26, 31]
SCALE_BITS = 26


@dataclass
class PeerResult:
    inferences: int
    setup_client_cpu_s: float
    setup_bytes_up: int  # the public context with Galois and relinearization keys
    client_cpu_s: list[float]
    server_cpu_s: list[float]
    latency_s: list[float]
    bytes_up: int  # per inference
    bytes_down: int
    accuracy: float  # against the labels
    plaintext_accuracy: float  # the same x^2 model in float, same inputs
    agreement: float  # predictions equal to the float x^2 model's
    max_logit_error: float

    def summary(self) -> dict[str, Any]:
        return {
            "peer": "TenSEAL CKKS",
            "parameters": {
                "poly_modulus_degree": POLY_MODULUS_DEGREE,
                "coeff_mod_bit_sizes": COEFF_MOD_BIT_SIZES,
                "scale_bits": SCALE_BITS,
            },
            "inferences": self.inferences,
            "setup_client_cpu_s": self.setup_client_cpu_s,
            "setup_bytes_up": self.setup_bytes_up,
            "client_cpu_s": statistics.median(self.client_cpu_s),
            "server_cpu_s": statistics.median(self.server_cpu_s),
            "latency_median_s": statistics.median(self.latency_s),
            "latency_p95_s": _p95(self.latency_s),
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "accuracy": self.accuracy,
            "plaintext_accuracy": self.plaintext_accuracy,
            "agreement_with_plaintext": self.agreement,
            "max_logit_error": self.max_logit_error,
        }


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def _layers(model: Any) -> list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """(W^T, b) of each Linear layer, as TenSEAL's vector-matrix product wants them."""
    from torch import nn

    return [
        (m.weight.detach().double().numpy().T.copy(), m.bias.detach().double().numpy())
        for m in model
        if isinstance(m, nn.Linear)
    ]


def run_tenseal(
    model: Any, inputs: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]
) -> PeerResult:
    """Private inference with TenSEAL on each input; ``model`` is W1 with x^2 activations."""
    import tenseal as ts
    import torch

    layers = _layers(model)
    started = time.process_time()
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=POLY_MODULUS_DEGREE,
        coeff_mod_bit_sizes=COEFF_MOD_BIT_SIZES,
    )
    context.global_scale = 2**SCALE_BITS
    context.generate_galois_keys()
    public_context = context.serialize(save_secret_key=False)
    setup_cpu = time.process_time() - started

    server_context = ts.context_from(public_context)
    with torch.no_grad():
        plain = model[:-1](torch.as_tensor(inputs, dtype=torch.float32)).double().numpy()
    client_cpu, server_cpu, latency, outputs = [], [], [], []
    bytes_up = bytes_down = 0
    for x in inputs:
        wall = time.perf_counter()
        cpu = time.process_time()
        up = ts.ckks_vector(context, x.tolist()).serialize()
        client = time.process_time() - cpu

        cpu = time.process_time()
        value = ts.ckks_vector_from(server_context, up)
        for index, (weight, bias) in enumerate(layers):
            value = value.mm(weight) + bias.tolist()
            if index < len(layers) - 1:
                value = value.square()
        down = value.serialize()
        server_cpu.append(time.process_time() - cpu)

        cpu = time.process_time()
        logits = ts.ckks_vector_from(context, down).decrypt()
        client_cpu.append(client + time.process_time() - cpu)
        latency.append(time.perf_counter() - wall)
        outputs.append(logits)
        bytes_up, bytes_down = len(up), len(down)
    result = np.array(outputs, dtype=np.float64)
    return PeerResult(
        inferences=len(inputs),
        setup_client_cpu_s=setup_cpu,
        setup_bytes_up=len(public_context),
        client_cpu_s=client_cpu,
        server_cpu_s=server_cpu,
        latency_s=latency,
        bytes_up=bytes_up,
        bytes_down=bytes_down,
        accuracy=float(np.mean(result.argmax(axis=1) == labels)),
        plaintext_accuracy=float(np.mean(plain.argmax(axis=1) == labels)),
        agreement=float(np.mean(result.argmax(axis=1) == plain.argmax(axis=1))),
        max_logit_error=float(np.max(np.abs(result - plain))),
    )
