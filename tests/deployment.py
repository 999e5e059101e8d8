"""Both servers in this process over real localhost sockets, built as the daemons build them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ppinfer.compiler import compile_model
from ppinfer.examples import Split
from ppinfer.paillier import PrivateKey, PublicKey
from ppinfer.plan import Plan
from ppinfer.servers.daemon import Running, build_key_server, build_model_server
from ppinfer.servers.evaluator import Observer
from ppinfer.servers.key_core import KeyServerCore
from ppinfer.servers.key_core import Observer as KeyObserver


@dataclass
class Deployment:
    address: str
    key_address: str
    key_core: KeyServerCore
    key_server: Running
    model_server: Running


@contextmanager
def deploy(
    plans: list[Plan],
    keypair: tuple[PublicKey, PrivateKey],
    key_observer: KeyObserver | None = None,
    model_observer: Observer | None = None,
) -> Iterator[Deployment]:
    _, private = keypair
    key_server, core = build_key_server(
        private, X25519PrivateKey.generate(), pool_size=256, observer=key_observer
    )
    key_server.server.start()
    key_address = f"127.0.0.1:{key_server.port}"
    model_server = build_model_server(plans, key_address, observer=model_observer)
    model_server.server.start()
    try:
        yield Deployment(
            f"127.0.0.1:{model_server.port}", key_address, core, key_server, model_server
        )
    finally:
        model_server.stop(0)
        key_server.stop(0)


def float_logits(model: Any, inputs: np.ndarray) -> np.ndarray:
    """The float model's logits (its trailing softmax left out)."""
    import torch

    with torch.no_grad():
        logits = model[:-1](torch.as_tensor(inputs, dtype=torch.float32)).double().numpy()
    return np.asarray(logits, dtype=np.float64)


def compiled(model: Any, split: Split, name: str, shape: tuple[int, ...] | None = None) -> Plan:
    shape = shape or (split.train_x.shape[1],)
    return compile_model(model, shape, name, calibration=split.train_x).plan
