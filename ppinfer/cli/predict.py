"""``ppinfer predict``: private predictions for the inputs of a .npy file."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ppinfer.cli.extras import require_server_extra
from ppinfer.errors import PPInferError

__all__ = ["add_parser"]


def _channel_tls(args: argparse.Namespace) -> Any:
    """The client's TLS settings; None (plaintext) only with --insecure."""
    from ppinfer.rpc.tls import ChannelTls

    if args.insecure:
        if args.ca:
            raise PPInferError("--insecure and --ca contradict each other: choose one")
        print("warning: --insecure: the connection to the model server is not encrypted",
              file=sys.stderr)  # fmt: skip
        return None
    return ChannelTls.from_files(args.ca, args.server_name)


def _client(args: argparse.Namespace) -> Any:
    """The two-server stub, or the client-aided baseline (which needs ppinfer[server])."""
    from ppinfer.client import Client

    host, _, port = args.server.rpartition(":")
    if not host or not port.isdigit():  # gRPC would quietly dial port 443
        raise PPInferError(f"--server must be HOST:PORT with a port number, not {args.server!r}")
    tls = _channel_tls(args)
    plaintext = tls is None  # --insecure: say so to the client, or it falls back to TLS
    if args.mode == "two-server":
        return Client(
            args.server, model=args.model, expected_key_id=args.pin, tls=tls, insecure=plaintext
        )
    if args.pin:
        raise PPInferError("--pin names the key server's key: it applies to --mode two-server")
    require_server_extra("ppinfer predict --mode client-aided")
    from ppinfer.rpc.aided_client import AidedClient

    def announce(bits: int) -> None:
        print(f"generating this client's {bits}-bit Paillier key...", file=sys.stderr)

    return AidedClient(
        args.server,
        model=args.model,
        key_bits=args.key_bits,
        tls=tls,
        insecure=plaintext,
        on_keygen=announce,
    )


def _predict(args: argparse.Namespace) -> int:
    # gRPC's C core would print its own line (a failed TLS handshake, say) before ours:
    # the client reports every failure itself, once. Set before grpc is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import numpy as np

    from ppinfer.client.postprocess import client_activation

    inputs = _read_inputs(args.input)
    results: list[dict[str, Any]] = []
    try:
        with _client(args) as client:
            assert client.model is not None
            batch = _batch(inputs, client.model.input_shape, args.input)
            name = client.model.client_activation
            threshold = 0.5 if name == "sigmoid" else 0.0  # one output: a probability or a logit
            for logits in client.predict_stream(batch):
                scores = client_activation(name, logits)
                prediction = (
                    int(np.argmax(scores)) if scores.size > 1 else int(scores[0] > threshold)
                )
                result = {"logits": logits.tolist(), "prediction": prediction}
                if name:  # the client-side activation's output, when the model has one
                    result["scores"] = scores.tolist()
                results.append(result)
                if not args.json:  # as each arrives: a later failure loses none of them
                    _print_result(len(results) - 1, result)
    finally:
        if args.json:  # what arrived, even when a later input failed
            print(json.dumps(results), flush=True)
    return 0


def _read_inputs(path: str) -> Any:
    """A numeric .npy array of finite real values, as predict takes it."""
    import numpy as np

    try:
        inputs = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise PPInferError(f"cannot read {path} as a .npy array: {error}") from error
    if not isinstance(inputs, np.ndarray):  # an .npz archive loads as a mapping
        raise PPInferError(f"{path} is an .npz archive; give one array saved with numpy.save")
    if inputs.dtype.kind not in "biuf":
        kind = "complex" if inputs.dtype.kind == "c" else f"{inputs.dtype}"
        raise PPInferError(f"{path} holds {kind} values; inputs are real numbers")
    if inputs.ndim == 0 or inputs.size == 0:
        raise PPInferError(f"{path} holds no inputs (shape {inputs.shape})")
    return inputs.astype(np.float64)


def _batch(inputs: Any, shape: tuple[int, ...], path: str) -> list[Any]:
    """One input of the model's shape, or a batch of them along the first axis."""
    if tuple(inputs.shape) == shape:
        return [inputs]
    if tuple(inputs.shape[1:]) == shape:
        return list(inputs)
    raise PPInferError(
        f"{path} has shape {inputs.shape}; the model takes one input of shape {shape} "
        f"or a batch of shape (N, {', '.join(map(str, shape))})"
    )


def _print_result(index: int, result: dict[str, Any]) -> None:
    values = result.get("scores", result["logits"])
    label = "scores" if "scores" in result else "logits"
    print(
        f"{index}: prediction {result['prediction']}  {label} "
        + " ".join(f"{v:.4f}" for v in values),
        flush=True,
    )


def add_parser(commands: Any) -> None:
    """Register predict."""
    predict = commands.add_parser("predict", help="private prediction for inputs in a .npy file")
    predict.add_argument(
        "input", metavar="INPUT.npy", help="one input of the model's shape, or a batch of them"
    )
    predict.add_argument("--server", required=True, metavar="HOST:PORT", help="model server A")
    predict.add_argument("--model", default="", help="model name (default: the server's only one)")
    predict.add_argument("--pin", metavar="KEY_ID", help="refuse any other key server key id")
    predict.add_argument("--json", action="store_true", help="print JSON")
    predict.add_argument(
        "--ca", metavar="FILE", help="CA certificate that signed A's (default: the system's CAs)"
    )
    predict.add_argument(
        "--server-name", metavar="NAME", help="name A's certificate must bear, if not HOST"
    )
    predict.add_argument(
        "--insecure", action="store_true", help="connect without TLS (development only)"
    )
    predict.add_argument(
        "--mode",
        choices=["two-server", "client-aided"],
        default="two-server",
        help="two-server (default; the light client) or the client-aided baseline, where the "
        "client holds its own Paillier key and computes every activation",
    )
    predict.add_argument(
        "--key-bits",
        type=int,
        default=2048,
        metavar="BITS",
        help="client-aided mode: the client's key size (default 2048)",
    )
    predict.set_defaults(run=_predict)
