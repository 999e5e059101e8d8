"""The ``ppinfer`` command: one entry point, one subcommand per job.

Errors a user can cause end as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ppinfer.errors import MissingDependencyError, PPInferError

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
    from ppinfer.paillier import generate_keypair, save_keypair

    if args.bits < 2048:
        print(f"warning: {args.bits}-bit keys are for tests and load runs only", file=sys.stderr)
    public, private = generate_keypair(args.bits)
    public_path, private_path = save_keypair(Path(args.out), public, private, overwrite=args.force)
    print(f"key id    {public.key_id}")
    print(f"bits      {public.bits}")
    print(f"public    {public_path}")
    print(f"secret    {private_path} (mode 0600)")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; return the process exit status."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
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
