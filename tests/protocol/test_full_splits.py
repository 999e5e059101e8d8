"""Whole test splits of two bundled datasets through both servers over gRPC: every
prediction agrees with the float model. Breast cancer runs at 2048 bits; the 360 digits
at 1024, whose plaintext arithmetic is the same (the key size changes only how many
values a ciphertext packs; the 2048-bit digits runs are in tests/rpc/test_client_aided.py
and the demo)."""

from __future__ import annotations

from typing import Any

import numpy as np
from deployment import Deployment, compiled, deploy, float_logits

from ppinfer.example_models import breast_cancer_split, train_mlp
from ppinfer.paillier import PrivateKey, PublicKey

Keypair = tuple[PublicKey, PrivateKey]


def _run_split(deployment: Deployment, inputs: np.ndarray) -> tuple[np.ndarray, Any]:
    with deployment.client() as client:
        logits = np.array(list(client.predict_stream(inputs)))
        return logits, client.stats


def test_digits_relu_mlp_full_test_split(
    keypair_1024: Keypair, digits: Any, digits_relu_model: Any, digits_plan: Any
) -> None:
    reference = float_logits(digits_relu_model, digits.test_x)
    with deploy([digits_plan], keypair_1024) as deployment:
        private, stats = _run_split(deployment, digits.test_x)
    agreement = np.mean(private.argmax(axis=1) == reference.argmax(axis=1))
    error = float(np.max(np.abs(private - reference)))
    print(
        f"digits relu: agreement {agreement:.2%} over {len(private)}, max logit error {error:.2e}, "
        f"client {stats.bytes_up / len(private):.0f} B up {stats.bytes_down / len(private):.0f} "
        f"B down per inference"
    )
    assert len(private) == len(digits.test_x) == 360
    assert agreement == 1.0
    assert error < 0.01


def test_breast_cancer_tanh_mlp_full_test_split_at_2048_bits(keypair_2048: Keypair) -> None:
    split = breast_cancer_split()
    model = train_mlp(split, [16], "tanh")
    plan = compiled(model, split, "breast-cancer-tanh")
    reference = float_logits(model, split.test_x)
    with deploy([plan], keypair_2048) as deployment:
        private, _ = _run_split(deployment, split.test_x)
    error = float(np.max(np.abs(private - reference)))
    print(f"breast cancer tanh: {len(private)} inputs, max logit error {error:.2e}")
    assert len(private) == len(split.test_x) == 114
    assert np.array_equal(private.argmax(axis=1), reference.argmax(axis=1))
    assert error < 0.01
