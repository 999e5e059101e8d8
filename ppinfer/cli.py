"""The ``ppinfer`` command: one entry point, one subcommand per job.

Errors a user can cause end as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ppinfer.daemon_options import KEY_SERVER_OPTIONS, MODEL_SERVER_OPTIONS, add_options
from ppinfer.errors import MissingDependencyError, PPInferError, ServerError

__all__ = ["main"]

#: Key sizes ``ppinfer keygen`` offers; 1024 is for load tests only and says so.
KEY_SIZES = (1024, 2048, 3072, 4096)
EXIT_USAGE = 2
EXIT_FAILURE = 1


def _require_server_extra(feature: str) -> None:
    try:
        import gmpy2  # noqa: F401
        import phe  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(
            f"{feature} needs the server extra: pip install 'ppinfer[server]' "
            f"({error.name} is missing)"
        ) from error


def _keygen(args: argparse.Namespace) -> int:
    _require_server_extra("ppinfer keygen")
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from ppinfer.filestore import refuse_existing
    from ppinfer.paillier import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, generate_keypair, save_keypair
    from ppinfer.session import key_server_fingerprint, public_bytes
    from ppinfer.x25519file import X25519_PRIVATE_FILE, X25519_PUBLIC_FILE, save_x25519

    out = Path(args.out)
    if not args.force:  # check all four first, so a refusal never leaves half a key folder
        names = (PUBLIC_KEY_FILE, PRIVATE_KEY_FILE, X25519_PUBLIC_FILE, X25519_PRIVATE_FILE)
        refuse_existing(*(out / name for name in names))
    if args.bits < 2048:
        print(f"warning: {args.bits}-bit keys are for tests and load runs only", file=sys.stderr)
    public, private = generate_keypair(args.bits)
    public_path, private_path = save_keypair(out, public, private, overwrite=args.force)
    static = X25519PrivateKey.generate()
    x25519_public, x25519_private = save_x25519(out, static, overwrite=args.force)
    key_id = key_server_fingerprint(public.n_bytes, public_bytes(static.public_key()))
    print(f"key id    {key_id}  (clients pin it: ppinfer predict --pin KEY_ID)")
    print(f"bits      {public.bits}")
    print(f"public    {public_path} {x25519_public}")
    print(f"secret    {private_path} {x25519_private} (mode 0600)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ppinfer.info import collect_info, format_info

    info = collect_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _bench(args: argparse.Namespace) -> int:
    _require_server_extra("ppinfer bench")
    from ppinfer.benchmarks import primitives

    bits = args.bits or ([1024] if args.quick else [2048, 3072])
    sizes = dict(repeats=2, fast_ops=50, slow_ops=4) if args.quick else {}
    document = primitives.run(bits, progress=not args.no_progress, **sizes)
    markdown = primitives.to_markdown(document)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    markdown_path = Path(args.markdown) if args.markdown else Path(args.json).with_suffix(".md")
    markdown_path.write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"wrote {args.json} and {markdown_path}", file=sys.stderr)
    return 0


def _bench_latency(args: argparse.Namespace) -> int:
    _require_server_extra("ppinfer bench latency")
    try:
        import matplotlib  # noqa: F401
        import tenseal  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(
            f"ppinfer bench latency needs the bench extra ({error.name} is missing): "
            "pip install 'ppinfer[bench]'"
        ) from None
    from ppinfer.benchmarks.latency import run_latency, write_outputs

    workloads = args.workloads
    if args.quick:
        counts = dict.fromkeys(workloads, args.inferences or 2)
        bits, peer = args.bits or [512], args.peer_inferences or 1
    else:
        defaults = {"W1": 5, "W2": 20, "W3": 3}
        counts = {name: args.inferences or defaults[name] for name in workloads}
        bits, peer = args.bits or [2048], args.peer_inferences or 3
    document = run_latency(
        workloads,
        bits,
        counts,
        quick=args.quick,
        mnist=Path(args.mnist) if args.mnist else None,
        link=args.link,
        link_inferences=1 if args.quick else 2,
        peer_inferences=0 if args.no_peer else peer,
        naive_inferences=0 if args.no_naive else 1,
        weight_bits=args.weight_bits,
        progress=not args.no_progress,
        say=lambda text: print(text, file=sys.stderr),
    )
    written = write_outputs(document, Path(args.json), plots=not args.no_plots)
    print(Path(args.json).with_suffix(".md").read_text())
    print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    return 0


def _bench_load(args: argparse.Namespace) -> int:
    _require_server_extra("ppinfer bench load")
    from ppinfer.benchmarks.load import run_load, to_markdown, write_outputs

    if args.clients < 1 or args.inferences < 1:
        raise PPInferError("--clients and --inferences must be at least 1")
    document = run_load(
        args.clients,
        args.inferences,
        args.bits,
        quick=args.quick,
        weight_bits=args.weight_bits,
        say=lambda text: print(text, file=sys.stderr),
    )
    written = write_outputs(document, Path(args.json))
    print(to_markdown(document))
    print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    concurrent = document["concurrent"]
    return 0 if not concurrent["errors"] and not concurrent["wrong_answers"] else 1


def _bench_batching(args: argparse.Namespace) -> int:
    _require_server_extra("ppinfer bench batching")
    from ppinfer.benchmarks.batching import run_batching, to_markdown
    from ppinfer.benchmarks.workloads import build_workload, compile_workload
    from ppinfer.paillier import generate_keypair

    if args.batch < 2:
        raise PPInferError("--batch must be at least 2 (requests sharing one first layer)")
    workload = build_workload("W1", epochs_scale=0.1 if args.quick else 1.0)
    plan = compile_workload(workload, weight_bits=args.weight_bits).plan
    print(f"generating a {args.bits}-bit key...", file=sys.stderr)
    _, private = generate_keypair(args.bits)
    document = run_batching(plan, private, args.batch)
    markdown = to_markdown(document)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace, daemon: str) -> int:
    """serve-key or serve-model: settings from flags and --config, checked, then run."""
    _require_server_extra(f"ppinfer {args.command}")
    from ppinfer import daemon_options
    from ppinfer.servers import daemon as daemons
    from ppinfer.servers.logs import configure_logging

    options = {
        "key": daemon_options.KEY_SERVER_OPTIONS,
        "model": daemon_options.MODEL_SERVER_OPTIONS,
    }[daemon]
    settings = daemon_options.resolve(args, options)
    configure_logging(settings["log_format"], settings["log_level"])
    check, run = {
        "key": (daemons.check_key_server, daemons.run_key_server),
        "model": (daemons.check_model_server, daemons.run_model_server),
    }[daemon]
    if args.check_config:
        print(f"ppinfer {args.command}: configuration is usable: {check(settings)}")
        return 0
    return run(settings)


def _serve_key(args: argparse.Namespace) -> int:
    return _serve(args, "key")


def _serve_model(args: argparse.Namespace) -> int:
    return _serve(args, "model")


def _certs(args: argparse.Namespace) -> int:
    from ppinfer.certs import make_dev_certificates

    hosts = [host.strip() for host in args.hosts.split(",") if host.strip()]
    paths = make_dev_certificates(Path(args.out), hosts, args.days, overwrite=args.force)
    print("development CA and certificates (keys mode 0600), valid for " + ", ".join(hosts))
    for path in paths:
        print(f"  {path}")
    return 0


def _channel_tls(args: argparse.Namespace) -> Any:
    """The client's TLS settings; None (plaintext) only with --insecure."""
    from ppinfer.tls import ChannelTls

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
    _require_server_extra("ppinfer predict --mode client-aided")
    from ppinfer.client.aided import AidedClient

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


#: Below this agreement on the calibration data, compile warns.
LOW_AGREEMENT = 0.99


def _compile(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401  # only to give the install hint before anything else
    except ImportError as error:
        raise MissingDependencyError(
            "ppinfer compile needs: pip install 'ppinfer[torch]'"
        ) from error
    import numpy as np

    from ppinfer.compiler import Precision, compile_model, format_report
    from ppinfer.plan import save_plan

    if Path(args.output).exists() and not args.force:  # before the work, not after it
        raise PPInferError(f"{args.output} exists; move it away or pass --force")

    calibration = None
    if args.calibration:
        try:
            calibration = np.load(args.calibration, allow_pickle=False).astype(np.float64)
        except (OSError, ValueError) as error:
            raise PPInferError(
                f"cannot read {args.calibration} as a .npy array: {error}"
            ) from error
    precision = Precision(
        weight_bits=args.weight_bits,
        activation_bits=args.activation_bits,
        input_range=args.input_range,
    )
    report = compile_model(
        args.model,
        args.input_shape,
        args.name or Path(args.model).stem,
        calibration=calibration,
        precision=precision,
    )
    save_plan(report.plan, Path(args.output), overwrite=args.force)
    print(format_report(report))
    print(f"wrote {args.output}")
    if report.agreement is not None and report.agreement < LOW_AGREEMENT:
        print(
            f"warning: the plan agrees with the float model on only {report.agreement:.1%} of "
            "the calibration inputs; raise --weight-bits or --activation-bits",
            file=sys.stderr,
        )
    return 0


def _demo(args: argparse.Namespace) -> int:
    _require_server_extra("ppinfer demo")
    from ppinfer.demo import run_demo

    return run_demo(bits=args.bits, samples=args.samples, progress=not args.no_progress)


def _shape(text: str) -> tuple[int, ...]:
    """argparse type for D1,D2,...: positive integers."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,8,8, got {text!r}")
    return shape


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppinfer", description="Private inference with two non-colluding servers."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = commands.add_parser("keygen", help="make the key server's Paillier key pair")
    keygen.add_argument(
        "--bits",
        type=int,
        default=2048,
        choices=KEY_SIZES,
        help="bit length of the modulus n (default 2048)",
    )
    keygen.add_argument("--out", required=True, metavar="DIR", help="folder for the key files")
    keygen.add_argument("--force", action="store_true", help="replace key files that exist")
    keygen.set_defaults(run=_keygen)

    info = commands.add_parser("info", help="versions, and whether gmpy2 is active")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_info)

    serve_key = commands.add_parser(
        "serve-key", help="run key server B (flags or --config FILE.toml)"
    )
    add_options(serve_key, KEY_SERVER_OPTIONS)
    serve_key.set_defaults(run=_serve_key)

    serve_model = commands.add_parser(
        "serve-model", help="run model server A (flags or --config FILE.toml)"
    )
    add_options(serve_model, MODEL_SERVER_OPTIONS)
    serve_model.set_defaults(run=_serve_model)

    certs = commands.add_parser(
        "certs", help="make a development CA and TLS certificates for both daemons"
    )
    certs.add_argument("--out", required=True, metavar="DIR", help="folder for the files")
    certs.add_argument(
        "--hosts",
        default="localhost,127.0.0.1",
        metavar="LIST",
        help="comma-separated names and addresses the certificates are valid for",
    )
    certs.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    certs.add_argument("--force", action="store_true", help="replace files that exist")
    certs.set_defaults(run=_certs)

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

    compile_ = commands.add_parser(
        "compile", help="compile a torch, TorchScript or ONNX model into a plan"
    )
    compile_.add_argument(
        "model",
        metavar="MODEL",
        help="a module saved with torch.save, a TorchScript file, or a .onnx file",
    )
    compile_.add_argument("-o", "--output", required=True, metavar="PLAN.ppi")
    compile_.add_argument(
        "--input-shape",
        type=_shape,
        metavar="C,H,W",
        help="one input's shape without the batch axis (ONNX files may declare it)",
    )
    compile_.add_argument(
        "--calibration",
        metavar="DATA.npy",
        help="inputs that fix the input range and measure agreement",
    )
    compile_.add_argument("--input-range", type=float, help="largest |x| the plan accepts")
    compile_.add_argument("--weight-bits", type=int, default=16, help="signed weight bits")
    compile_.add_argument(
        "--activation-bits",
        type=int,
        default=20,
        help="significant bits of each activation over its calibrated range",
    )
    compile_.add_argument("--name", help="model name (default: the file's stem)")
    compile_.add_argument("--force", action="store_true", help="replace a plan file that exists")
    compile_.set_defaults(run=_compile)

    demo = commands.add_parser("demo", help="both servers and a client on localhost, on digits")
    demo.add_argument("--bits", type=int, default=2048, choices=KEY_SIZES)
    demo.add_argument("--samples", type=int, help="test inputs to run (default: all)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)

    bench = commands.add_parser("bench", help="run a benchmark")
    suites = bench.add_subparsers(dest="suite", required=True, metavar="SUITE")
    primitives = suites.add_parser("primitives", help="Paillier operations vs python-paillier")
    primitives.add_argument("--json", required=True, metavar="FILE", help="results as JSON")
    primitives.add_argument(
        "--markdown", metavar="FILE", help="report as markdown (default: the JSON path with .md)"
    )
    primitives.add_argument(
        "--bits", type=int, nargs="+", choices=KEY_SIZES, help="key sizes (default 2048 3072)"
    )
    primitives.add_argument(
        "--quick", action="store_true", help="a short smoke run: 1024 bits, few operations"
    )
    primitives.add_argument("--no-progress", action="store_true", help="no progress bar")
    primitives.set_defaults(run=_bench)

    latency = suites.add_parser(
        "latency",
        help="two-server vs client-aided (and TenSEAL) on W1, W2, W3: client CPU, bytes, latency",
    )
    latency.add_argument("--json", required=True, metavar="FILE", help="results as JSON")
    latency.add_argument(
        "--bits",
        type=int,
        nargs="+",
        choices=[512, 1024, *KEY_SIZES],
        help="key sizes of B and of the client-aided client (default 2048; --quick: 512)",
    )
    latency.add_argument(
        "--workloads", nargs="+", choices=["W1", "W2", "W3"], default=["W1", "W2", "W3"]
    )
    latency.add_argument(
        "--inferences",
        type=int,
        metavar="N",
        help="inferences per workload and mode (default W1 5, W2 20, W3 3; --quick: 2)",
    )
    latency.add_argument(
        "--mnist", metavar="DIR", help="MNIST IDX files for W1 and W3 (default: bundled digits)"
    )
    latency.add_argument(
        "--link",
        metavar="RATE:RTT",
        help="also run each mode behind an emulated link, such as 1mbit:100ms or 256kbit:100ms",
    )
    latency.add_argument("--peer-inferences", type=int, metavar="N", help="TenSEAL inferences")
    latency.add_argument("--no-peer", action="store_true", help="leave TenSEAL out")
    latency.add_argument(
        "--no-naive", action="store_true", help="leave out the naive python-paillier reference"
    )
    latency.add_argument("--no-plots", action="store_true", help="no PNG plots")
    latency.add_argument(
        "--quick", action="store_true", help="smoke run: 512-bit keys, 2 inferences, short training"
    )
    latency.add_argument("--no-progress", action="store_true", help="no progress bars")
    _weight_bits_option(latency)
    latency.set_defaults(run=_bench_latency)

    load = suites.add_parser(
        "load", help="many concurrent clients on W1: errors, wrong answers, throughput, memory"
    )
    load.add_argument("--json", required=True, metavar="FILE", help="results as JSON")
    load.add_argument("--clients", type=int, default=32, help="sessions at once (default 32)")
    load.add_argument(
        "--inferences", type=int, default=20, help="inferences per client (default 20)"
    )
    load.add_argument(
        "--bits", type=int, default=1024, choices=[1024, *KEY_SIZES[1:]],
        help="key size of B (default 1024)",
    )  # fmt: skip
    load.add_argument("--quick", action="store_true", help="train W1 briefly (smoke runs)")
    _weight_bits_option(load)
    load.set_defaults(run=_bench_load)

    batching = suites.add_parser(
        "batching",
        help="experiment: CPU per request if concurrent requests shared W1's offline first layer",
    )
    batching.add_argument("--json", required=True, metavar="FILE", help="results as JSON")
    batching.add_argument(
        "--batch", type=int, default=4, help="requests sharing the layer (default 4)"
    )
    batching.add_argument(
        "--bits", type=int, default=2048, choices=[512, 1024, *KEY_SIZES[1:]],
        help="key size (default 2048)",
    )  # fmt: skip
    batching.add_argument("--quick", action="store_true", help="train W1 briefly (smoke runs)")
    _weight_bits_option(batching)
    batching.set_defaults(run=_bench_batching)
    return parser


def _weight_bits_option(parser: argparse.ArgumentParser) -> None:
    from ppinfer.benchmarks.workloads import BENCH_WEIGHT_BITS

    parser.add_argument(
        "--weight-bits",
        type=int,
        default=BENCH_WEIGHT_BITS,
        choices=range(4, 17),
        metavar="BITS",
        help=f"signed weight bits of the workloads' plans (default {BENCH_WEIGHT_BITS}; 4 to 16)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; return the process exit status."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except ServerError as error:
        print(f"ppinfer {args.command}: error: {error.status}: {error.message}", file=sys.stderr)
        return EXIT_FAILURE
    except PPInferError as error:
        print(f"ppinfer {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as error:
        print(f"ppinfer {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
