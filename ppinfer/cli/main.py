"""The ``ppinfer`` command: one entry point, one subcommand per job, each in its module.

Errors a user can cause end as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ppinfer.cli import bench, compile, demo, keys, predict, serve
from ppinfer.errors import PPInferError, ServerError

__all__ = ["main"]

EXIT_FAILURE = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppinfer", description="Private inference with two non-colluding servers."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (keys, serve, predict, compile, demo, bench):
        command.add_parser(commands)
    return parser


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
