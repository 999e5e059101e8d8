"""Compile PyTorch, TorchScript and ONNX models into plans (needs ``ppinfer[torch]``)."""

from ppinfer.compiler.lower import CompileReport, Precision
from ppinfer.compiler.model_compiler import compile_model
from ppinfer.compiler.report import format_report, round_trips
from ppinfer.compiler.steps import CompileError

__all__ = [
    "CompileError",
    "CompileReport",
    "Precision",
    "compile_model",
    "format_report",
    "round_trips",
]
