"""Helpers and fixtures of the daemon tests (tests/daemons/): waiting, health and key-id
probes, daemons as processes, one small deployment per module. The root conftest loads
this file as a plugin, so the fixtures need no import."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from deployment import Deployment, deploy, dev_certificates
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ppinfer.client import Client
from ppinfer.compiler import Precision
from ppinfer.compiler.plan import Plan, save_plan
from ppinfer.daemons.launch import Daemon, start_daemon
from ppinfer.paillier import PrivateKey, PublicKey, save_keypair
from ppinfer.protocol.x25519_keyfile import save_x25519
from ppinfer.rpc.dev_certificates import CA_FILE, DevTls
from ppinfer.rpc.tls import ChannelTls
from ppinfer.v1 import model_service_pb2, model_service_pb2_grpc

Keypair = tuple[PublicKey, PrivateKey]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def health(address: str, ca: Path | None = None) -> str:
    credentials = ChannelTls.from_files(ca or dev_certificates() / CA_FILE).credentials()
    with grpc.secure_channel(address, credentials) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="ppinfer.v1.ModelService"), timeout=5
            )
        except grpc.RpcError as error:
            return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Daemons:
    """B and A as processes with development TLS, B on a fixed port so it can come back."""

    def __init__(self, folder: Path, plan: Plan, keypair: Keypair) -> None:
        self.folder = folder
        self.tls = DevTls.create(folder / "tls")
        public, private = keypair
        save_keypair(folder / "keys", public, private)
        save_x25519(folder / "keys", X25519PrivateKey.generate())
        save_plan(plan, folder / "plan.ppi")
        self.key_port = free_port()
        self.key = self.start_key()
        self.model = start_daemon(
            [
                "serve-model", "--model", str(folder / "plan.ppi"),
                "--key-server", f"127.0.0.1:{self.key_port}", "--listen", "127.0.0.1:0",
                "--health-interval", "0.2", "--drain-seconds", "60", "--allow-small-keys",
                *self.tls.model_server_flags(),
            ],
            folder / "a.log",
        )  # fmt: skip

    def start_key(self) -> Daemon:
        return start_daemon(
            [
                "serve-key", "--keys", str(self.folder / "keys"),
                "--listen", f"127.0.0.1:{self.key_port}", "--pool", "256", "--allow-small-keys",
                *self.tls.key_server_flags(),
            ],
            self.folder / "b.log",
        )  # fmt: skip

    def client(self, **options: Any) -> Client:
        return Client(self.model.address, tls=ChannelTls.from_files(self.tls.ca), **options)

    def close(self) -> None:
        self.model.stop()
        self.key.stop()


def key_id(address: str, ca: Path | None = None) -> str:
    """The key id A states for new sessions (GetServerInfo; no session opened)."""
    credentials = ChannelTls.from_files(ca or dev_certificates() / CA_FILE).credentials()
    with grpc.secure_channel(address, credentials) as channel:
        info = model_service_pb2_grpc.ModelServiceStub(channel).GetServerInfo(
            model_service_pb2.ServerInfoRequest(), timeout=10
        )
    return str(info.key_id)


@pytest.fixture(scope="session")
def small_deployment(keypair_1024: Keypair, digits_plan: Plan) -> Iterator[Deployment]:
    with deploy([digits_plan], keypair_1024) as deployment:
        yield deployment


@pytest.fixture
def daemons(tmp_path: Path, deep_plan: Plan, keypair_1024: Keypair) -> Iterator[Daemons]:
    running = Daemons(tmp_path, deep_plan, keypair_1024)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="session")
def deep_plan(digits: Any) -> Plan:
    """Six layers: an inference makes five round trips to B, time to act in between."""
    import torch
    from torch import nn

    from ppinfer.compiler import compile_model

    torch.manual_seed(7)
    layers: list[nn.Module] = []
    widths = [64, 96, 96, 96, 96, 96, 10]
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    model = nn.Sequential(*layers[:-1], nn.Softmax(dim=1))
    # Untrained: the fault tests need its round trips, not its accuracy, so a few hundred
    # images fix the activation ranges (the simulator's agreement run is not the point).
    return compile_model(
        model, (64,), "deep", calibration=digits.train_x[:256], precision=Precision(weight_bits=16)
    ).plan
