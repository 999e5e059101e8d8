"""The deployments the tests run the protocol over: both servers in this process over
real localhost sockets, built as the daemons build them (``deploy``), or the parties'
objects wired by direct calls (``deploy_local``). Both offer ``client()``, ``key_core``
and ``a_counters()``; ``deploy_over(link, ...)`` picks one by name."""

from __future__ import annotations

import atexit
import functools
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ppinfer.client import Client
from ppinfer.compiler import Precision, compile_model
from ppinfer.compiler.plan import Plan
from ppinfer.compiler.program import Program
from ppinfer.daemons.key_daemon import build_key_core, build_key_server
from ppinfer.daemons.model_daemon import build_model_server
from ppinfer.daemons.serving import Running
from ppinfer.example_models import Split
from ppinfer.paillier import PrivateKey, PublicKey, RandomizerPool
from ppinfer.paillier.worker_pool import WorkerPool
from ppinfer.protocol.evaluation_types import Observer
from ppinfer.protocol.in_process import InProcessClient, InProcessDeployment
from ppinfer.protocol.key_core import KeyServerCore
from ppinfer.protocol.key_core import Observer as KeyObserver
from ppinfer.protocol.model_evaluator import ModelEvaluator
from ppinfer.rpc.aided_client import AidedClient
from ppinfer.rpc.dev_certificates import (
    CA_FILE,
    KEY_SERVER_NAME,
    MODEL_SERVER_NAME,
    make_dev_certificates,
)
from ppinfer.rpc.key_servicer import KeyRing
from ppinfer.rpc.session_limits import SessionLimits
from ppinfer.rpc.tls import ChannelTls, ServerTls
from ppinfer.v1 import model_service_pb2_grpc, tensors_pb2


@functools.cache
def shared_worker_pool() -> WorkerPool:
    """A's worker processes, one per core, shared by every A of the test run (a daemon
    keeps its own; here they would only add start-up time)."""
    pool = WorkerPool()
    atexit.register(pool.close)
    return pool


@functools.cache
def dev_certificates() -> Path:
    """One development CA and certificates for the whole test run (ppinfer certs)."""
    folder = Path(tempfile.mkdtemp(prefix="ppinfer-test-certs-"))
    make_dev_certificates(folder)
    return folder


def client_tls() -> ChannelTls:
    """What a client trusts: the development CA."""
    return ChannelTls.from_files(dev_certificates() / CA_FILE)


def key_server_tls() -> ServerTls:
    """B: its certificate; only A's certificate (from the CA, named) may call it."""
    certs = dev_certificates()
    return ServerTls.from_files(
        certs / "key-server.crt", certs / "key-server.key", certs / CA_FILE, MODEL_SERVER_NAME
    )


def model_server_tls() -> tuple[ServerTls, ChannelTls]:
    """A: its certificate for clients, and its mutual-TLS channel to B."""
    certs = dev_certificates()
    serving = ServerTls.from_files(certs / "model-server.crt", certs / "model-server.key")
    to_key_server = ChannelTls.from_files(
        certs / CA_FILE, KEY_SERVER_NAME, certs / "model-server.crt", certs / "model-server.key"
    )
    return serving, to_key_server


@dataclass
class Deployment:
    address: str
    key_address: str
    keys: KeyRing
    key_server: Running
    model_server: Running
    private: PrivateKey
    static: X25519PrivateKey
    plans: list[Plan]
    allow_client_aided: bool = False

    def start_key_server(self) -> None:
        """(Re)start B on its address with the same keys, as a restarted daemon would."""
        self.key_server, self.keys = build_key_server(
            self.private,
            self.static,
            self.key_address,
            pool_size=256,
            tls=key_server_tls(),
            allow_small_keys=True,
        )
        self.key_server.server.start()

    def restart_model_server(self) -> None:
        """Stop A (draining its sessions) and start a new A on the same address."""
        self.model_server.stop(5.0)
        self.model_server = _model_server(
            self.plans, self.key_address, self.address, allow_client_aided=self.allow_client_aided
        )

    def admin_channel(self) -> grpc.Channel:
        """A TLS channel to A's admin listener (GetStats), as an operator has it."""
        admin = self.model_server.admin
        assert admin is not None
        return grpc.secure_channel(f"127.0.0.1:{admin.port}", self.tls.credentials())

    @property
    def key_core(self) -> KeyServerCore:
        return self.keys.current

    @property
    def tls(self) -> ChannelTls:
        return client_tls()

    def client(self, **options: Any) -> Client:
        return Client(self.address, tls=self.tls, **options)

    def aided(self, **options: Any) -> AidedClient:
        return AidedClient(self.address, tls=self.tls, **options)

    def channel(self) -> grpc.Channel:
        """A plain (synchronous) TLS channel to A, for raw calls."""
        return grpc.secure_channel(self.address, self.tls.credentials())

    def a_counters(self, model: str) -> dict[str, int]:
        """A's counters of ``model``, as an operator reads them (GetStats, admin listener)."""
        with self.admin_channel() as channel:
            stats = model_service_pb2_grpc.ModelServiceStub(channel).GetStats(
                tensors_pb2.StatsRequest(), timeout=30
            )
        prefix = f"model_server.{model}."
        return {k[len(prefix) :]: v for k, v in stats.counters.items() if k.startswith(prefix)}


@dataclass
class LocalDeployment:
    """Client, A and B in this process, no sockets: the protocol without its transport."""

    parties: InProcessDeployment
    plans: list[Plan]

    @property
    def key_core(self) -> KeyServerCore:
        return self.parties.key_core

    def client(self, **options: Any) -> InProcessClient:
        return self.parties.client(**options)

    def a_counters(self, model: str) -> dict[str, int]:
        """As the gRPC deployment's: the evaluator's counters, its store's as store.*."""
        evaluator = self.parties.serving.evaluator(model)
        counters = evaluator.counters.snapshot()
        store = self.parties.serving.store(evaluator)
        counters.update({f"store.{k}": v for k, v in store.stats().items()})
        return counters


@contextmanager
def deploy_local(
    plans: list[Plan],
    keypair: tuple[PublicKey, PrivateKey],
    key_observer: KeyObserver | None = None,
    model_observer: Observer | None = None,
    store_size: int | None = None,
    store_low_water: int | None = None,
) -> Iterator[LocalDeployment]:
    """B's core and A's evaluators as the daemons make them, wired by direct calls."""
    public, private = keypair
    core = build_key_core(private, X25519PrivateKey.generate(), 256, 1024, key_observer)
    pool = RandomizerPool(public, capacity=256)
    evaluators = {
        plan.name: ModelEvaluator(
            Program(plan), public, pool, model_observer, worker_pool=shared_worker_pool()
        )
        for plan in plans
    }
    size = TEST_STORE_SIZE if store_size is None else store_size
    parties = InProcessDeployment(evaluators, core, size, store_low_water)
    try:
        yield LocalDeployment(parties, plans)
    finally:
        parties.close()
        pool.close()
        core.close()


#: The tests' plans: 16-bit weights as given, not picked (each pick compiles four or
#: five times).
WIDE = Precision(weight_bits=16)

#: Entries per model the test deployments keep ready (the daemons' default is 64: too much
#: filling for two cores shared by the test workers).
TEST_STORE_SIZE = 2

#: The links a protocol suite runs over.
LINKS = ["local", "grpc"]


def deploy_over(
    link: str,
    plans: list[Plan],
    keypair: tuple[PublicKey, PrivateKey],
    key_observer: KeyObserver | None = None,
    model_observer: Observer | None = None,
    store_size: int = TEST_STORE_SIZE,
    store_low_water: int | None = None,
) -> Any:
    """``deploy_local`` or ``deploy`` (gRPC over TLS on localhost), by ``link``."""
    if link == "local":
        return deploy_local(
            plans, keypair, key_observer, model_observer, store_size, store_low_water
        )
    return deploy(
        plans, keypair, key_observer, model_observer,
        store_size=store_size, store_low_water=store_low_water,
    )  # fmt: skip


@contextmanager
def deploy(
    plans: list[Plan],
    keypair: tuple[PublicKey, PrivateKey],
    key_observer: KeyObserver | None = None,
    model_observer: Observer | None = None,
    limits: SessionLimits | None = None,
    health_interval: float = 1.0,
    retire_seconds: float = 60.0,
    allow_client_aided: bool = False,
    **model_options: Any,
) -> Iterator[Deployment]:
    """B and A as the daemons build them (small keys allowed, an admin listener for
    GetStats); ``allow_client_aided`` as an operator would set it."""
    _, private = keypair
    static = X25519PrivateKey.generate()
    key_server, keys = build_key_server(
        private,
        static,
        pool_size=256,
        observer=key_observer,
        tls=key_server_tls(),
        retire_seconds=retire_seconds,
        allow_small_keys=True,
    )
    key_server.server.start()
    key_address = f"127.0.0.1:{key_server.port}"
    model_server = _model_server(
        plans,
        key_address,
        observer=model_observer,
        limits=limits,
        health_interval=health_interval,
        allow_client_aided=allow_client_aided,
        **model_options,
    )
    deployment = Deployment(
        f"127.0.0.1:{model_server.port}",
        key_address,
        keys,
        key_server,
        model_server,
        private,
        static,
        plans,
        allow_client_aided,
    )
    try:
        yield deployment
    finally:
        deployment.model_server.stop(0)
        deployment.key_server.stop(0)


def _model_server(
    plans: list[Plan], key_address: str, listen: str = "127.0.0.1:0", **options: Any
) -> Running:
    """A, started, with development TLS, small keys allowed and an admin listener."""
    serving, to_key_server = model_server_tls()
    model_server = build_model_server(
        plans,
        key_address,
        listen,
        tls=serving,
        key_server_tls=to_key_server,
        admin_listen="127.0.0.1:0",
        allow_small_keys=True,
        **{"worker_pool": shared_worker_pool(), "store_size": TEST_STORE_SIZE, **options},
    )
    model_server.server.start()
    if model_server.admin is not None:
        model_server.admin.server.start()
    return model_server


def float_logits(model: Any, inputs: np.ndarray) -> np.ndarray:
    """The float model's logits (its trailing softmax left out)."""
    import torch

    with torch.no_grad():
        logits = model[:-1](torch.as_tensor(inputs, dtype=torch.float32)).double().numpy()
    return np.asarray(logits, dtype=np.float64)


def compiled(model: Any, split: Split, name: str, shape: tuple[int, ...] | None = None) -> Plan:
    shape = shape or (split.train_x.shape[1],)
    return compile_model(model, shape, name, calibration=split.train_x, precision=WIDE).plan
