"""``ppinfer bench SUITE``: the suites of benchmarks/, which only a source checkout has."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import ppinfer
from ppinfer.cli.extras import KEY_SIZES, require_server_extra
from ppinfer.errors import MissingDependencyError, PPInferError

__all__ = ["add_parser"]


def _suites() -> None:
    """Make the checkout's benchmarks/ importable, or say why ppinfer bench cannot run.

    The suites are not part of any wheel (README, "Layout"): an editable install from a
    checkout finds them beside the ppinfer package."""
    try:
        importlib.import_module("benchmarks")
        return
    except ImportError:
        pass
    checkout = Path(ppinfer.__file__).resolve().parent.parent
    if not (checkout / "benchmarks" / "__init__.py").is_file():
        raise MissingDependencyError(
            "ppinfer bench runs the suites of a source checkout (benchmarks/ is not in the "
            "wheel): clone the repository and pip install -e '.[bench]' there"
        )
    sys.path.insert(0, str(checkout))


def _bench(args: argparse.Namespace) -> int:
    require_server_extra("ppinfer bench")
    _suites()
    from benchmarks import primitives

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
    require_server_extra("ppinfer bench latency")
    try:
        import matplotlib  # noqa: F401
        import tenseal  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(
            f"ppinfer bench latency needs the bench extra ({error.name} is missing): "
            "pip install 'ppinfer[bench]'"
        ) from None
    _suites()
    from benchmarks.latency import run_latency, write_outputs

    workloads = args.workloads
    if args.quick:
        counts = dict.fromkeys(workloads, args.inferences or 2)
        bits, peer = args.bits or [512], args.peer_inferences or 1
    else:
        defaults = {"W1": 10, "W2": 20, "W3": 3}
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
    require_server_extra("ppinfer bench load")
    _suites()
    from benchmarks.load import run_load, to_markdown, write_outputs

    if args.clients < 1 or args.single < 1 or args.seconds <= 0:
        raise PPInferError("--clients and --single must be at least 1, --seconds above 0")
    if args.store_size is not None and args.store_size < 1:
        raise PPInferError("--store-size must be at least 1")
    document = run_load(
        args.clients,
        args.seconds,
        args.single,
        args.bits,
        store_size=args.store_size,
        quick=args.quick,
        weight_bits=args.weight_bits,
        say=lambda text: print(text, file=sys.stderr),
    )
    written = write_outputs(document, Path(args.json))
    print(to_markdown(document))
    print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    phases = (document["single"], document["concurrent"])
    return 0 if not any(p["errors"] or p["wrong_answers"] for p in phases) else 1


def _bench_batching(args: argparse.Namespace) -> int:
    require_server_extra("ppinfer bench batching")
    _suites()
    from benchmarks.batching import run_batching, to_markdown
    from benchmarks.workloads import build_workload, compile_workload
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


def _weight_bits_option(parser: argparse.ArgumentParser) -> None:
    try:
        _suites()
        from benchmarks.workloads import BENCH_WEIGHT_BITS
    except MissingDependencyError:  # no suites here: running one says so
        return
    parser.add_argument(
        "--weight-bits",
        type=int,
        default=BENCH_WEIGHT_BITS,
        choices=range(4, 17),
        metavar="BITS",
        help="signed weight bits of the workloads' plans, 4 to 16 (default: the compiler's "
        "pick, the narrowest that agrees with the float model on every calibration input)",
    )


def add_parser(commands: Any) -> None:
    """Register bench and its suites."""
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
        help="inferences per workload and mode (default W1 10, W2 20, W3 3; --quick: 2)",
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
        "load",
        help="sustained use of W1: one client back to back on a warm store, the offline "
        "cost per entry, then concurrent clients; errors, wrong answers, memory",
    )
    load.add_argument("--json", required=True, metavar="FILE", help="results as JSON")
    load.add_argument(
        "--single", type=int, default=200, help="back-to-back requests of one client (200)"
    )
    load.add_argument("--clients", type=int, default=8, help="sessions at once (default 8)")
    load.add_argument(
        "--seconds", type=float, default=60.0, help="length of the concurrent phase (60)"
    )
    load.add_argument(
        "--store-size", type=int, metavar="N",
        help="A's store (default: --single plus the session's 2 tickets)",
    )  # fmt: skip
    load.add_argument(
        "--bits", type=int, default=2048, choices=[1024, *KEY_SIZES[1:]],
        help="key size of B (default 2048)",
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
