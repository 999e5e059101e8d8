"""``ppinfer demo``: key server B and model server A as real processes on localhost, a
client running private inference over the whole digits test split, and the figures.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ppinfer.cli.extras import KEY_SIZES, require_server_extra
from ppinfer.daemons.launch import start_daemon

if TYPE_CHECKING:  # grpc loads only when the demo runs
    from ppinfer.rpc.tls import ChannelTls

__all__ = ["run_demo"]


def run_demo(bits: int = 2048, samples: int | None = None, progress: bool = True) -> int:
    """Train, compile, start both servers, infer privately over the test split, report."""
    import torch
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from tqdm import tqdm

    from ppinfer.compiler import compile_model, format_report
    from ppinfer.compiler.plan import save_plan
    from ppinfer.example_models import digits_split, train_mlp
    from ppinfer.paillier import generate_keypair, save_keypair
    from ppinfer.protocol.session_keys import key_server_fingerprint, public_bytes
    from ppinfer.protocol.x25519_keyfile import save_x25519
    from ppinfer.rpc.dev_certificates import DevTls

    split = digits_split()
    test_x, test_y = split.test_x[:samples], split.test_y[:samples]
    print(f"training a 64-32-10 ReLU MLP on {len(split.train_x)} digits images ...", flush=True)
    model = train_mlp(split, [32], "relu")
    with torch.no_grad():
        plain_logits = model[:-1](torch.as_tensor(test_x, dtype=torch.float32)).double().numpy()
    report = compile_model(model, (64,), "digits-mlp", calibration=split.train_x)
    print(format_report(report, bits))
    with tempfile.TemporaryDirectory(prefix="ppinfer-demo-") as folder:
        work = Path(folder)
        public, private = generate_keypair(bits)
        save_keypair(work / "keys", public, private)
        static = X25519PrivateKey.generate()
        save_x25519(work / "keys", static)
        key_id = key_server_fingerprint(public.n_bytes, public_bytes(static.public_key()))
        save_plan(report.plan, work / "digits.ppi")
        tls = DevTls.create(work / "tls")
        print(
            f"key server keys: {bits}-bit Paillier and X25519, id {key_id[:16]}... (the client "
            "pins it); development TLS certificates made; starting B and A (mutual TLS "
            "between them) ..."
        )
        key_server = start_daemon(
            [
                "serve-key", "--keys", str(work / "keys"), "--listen", "127.0.0.1:0",
                "--pool", "1024", *tls.key_server_flags(),
            ],
            work / "key-server.log",
        )  # fmt: skip
        try:
            model_server = start_daemon(
                [
                    "serve-model",
                    "--model",
                    str(work / "digits.ppi"),
                    "--key-server",
                    key_server.address,
                    "--listen",
                    "127.0.0.1:0",
                    "--admin-listen",
                    "127.0.0.1:0",
                    *tls.model_server_flags(),
                ],
                work / "model-server.log",
            )
            try:
                from ppinfer.rpc.admin_client import read_stats
                from ppinfer.rpc.tls import ChannelTls

                client_tls = ChannelTls.from_files(tls.ca)
                run = _run_client(model_server.address, key_id, client_tls, test_x, progress, tqdm)
                stats = read_stats(model_server.admin, client_tls)
            finally:
                model_server.stop()
        finally:
            key_server.stop()
    _print_figures(run, plain_logits, test_y, stats, bits)
    return 0


@dataclass(frozen=True)
class ClientRun:
    logits: npt.NDArray[np.float64]
    latencies: list[float]
    process_cpu: float  # seconds, the whole client process (gRPC threads included)
    stub_cpu: float  # seconds, the stub's own work (mask, encode, unseal, unmask)
    bytes_up: int
    bytes_down: int

    @property
    def inferences(self) -> int:
        return len(self.latencies)


def _run_client(
    address: str,
    key_id: str,
    tls: ChannelTls,
    inputs: npt.NDArray[np.float64],
    progress: bool,
    tqdm: Any,
) -> ClientRun:
    from ppinfer.client import Client

    latencies, outputs = [], []
    cpu_start = time.process_time()
    with Client(address, expected_key_id=key_id, tls=tls) as client:
        for x in tqdm(inputs, desc="private inference", unit="input", disable=not progress):
            started = time.perf_counter()
            outputs.append(client.predict(x))
            latencies.append(time.perf_counter() - started)
        stats = client.stats
    return ClientRun(
        np.array(outputs),
        latencies,
        time.process_time() - cpu_start,
        stats.cpu_seconds,
        stats.bytes_up,
        stats.bytes_down,
    )


def _print_figures(
    run: ClientRun,
    plain_logits: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int64],
    counters: dict[str, int],
    bits: int,
) -> None:
    count = run.inferences
    private_pred, plain_pred = run.logits.argmax(axis=1), plain_logits.argmax(axis=1)
    print()
    print(f"digits test split, {count} inputs, {bits}-bit Paillier key")
    print(
        f"  accuracy          private {np.mean(private_pred == labels):.2%}   "
        f"plaintext torch {np.mean(plain_pred == labels):.2%}"
    )
    print(
        f"  agreement         {np.mean(private_pred == plain_pred):.2%} of predictions; "
        f"max logit error {np.max(np.abs(run.logits - plain_logits)):.2e}"
    )
    print(
        f"  client CPU        {1e3 * run.stub_cpu / count:.3f} ms per inference in the stub; "
        f"{1e3 * run.process_cpu / count:.3f} ms for the whole client process "
        "(gRPC threads included)"
    )
    print(
        f"  client bytes      {run.bytes_up / count:.0f} up, {run.bytes_down / count:.0f} down "
        "per inference (serialized messages)"
    )
    print(
        f"  latency           median {1e3 * statistics.median(run.latencies):.1f} ms, "
        f"p95 {1e3 * float(np.percentile(run.latencies, 95)):.1f} ms"
    )
    print(
        "  model server A saw: "
        + ", ".join(
            f"{k.split('.')[-1]}={v}"
            for k, v in sorted(counters.items())
            # per-step timings and A's own link bytes are in `ppinfer bench latency`
            if k.startswith("model_server.") and k.count(".") == 2 and ".key_link." not in k
        )
        + " (counts only)"
    )
    print(
        "  key server B saw:   "
        + ", ".join(
            f"{k.split('.', 1)[1]}={v}"
            for k, v in sorted(counters.items())
            if k.startswith("key_server.")
        )
        + " (counts only)"
    )


def _demo(args: argparse.Namespace) -> int:
    require_server_extra("ppinfer demo")
    return run_demo(bits=args.bits, samples=args.samples, progress=not args.no_progress)


def add_parser(commands: Any) -> None:
    """Register demo."""
    demo = commands.add_parser("demo", help="both servers and a client on localhost, on digits")
    demo.add_argument("--bits", type=int, default=2048, choices=KEY_SIZES)
    demo.add_argument("--samples", type=int, help="test inputs to run (default: all)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)
