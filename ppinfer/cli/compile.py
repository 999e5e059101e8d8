"""``ppinfer compile``: a torch, TorchScript or ONNX model into a plan file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ppinfer.errors import MissingDependencyError, PPInferError

__all__ = ["add_parser"]

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
    from ppinfer.compiler.plan import save_plan

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


def _shape(text: str) -> tuple[int, ...]:
    """argparse type for D1,D2,...: positive integers."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,8,8, got {text!r}")
    return shape


def add_parser(commands: Any) -> None:
    """Register compile."""
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
    compile_.add_argument(
        "--weight-bits",
        type=int,
        default=None,
        help="signed weight bits (default: with --calibration, the narrowest from 4 to 16 "
        "whose plan agrees with the float model on every calibration input; else 16)",
    )
    compile_.add_argument(
        "--activation-bits",
        type=int,
        default=20,
        help="significant bits of each activation over its calibrated range",
    )
    compile_.add_argument("--name", help="model name (default: the file's stem)")
    compile_.add_argument("--force", action="store_true", help="replace a plan file that exists")
    compile_.set_defaults(run=_compile)
