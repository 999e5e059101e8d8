"""ONNX models to steps (needs the ``onnx`` package; no ONNX runtime).

Each supported ONNX operator becomes the float64 torch operation it specifies. The graph
must be a chain: every node takes the previous node's output and otherwise only
initializers or constants. Anything else is refused with the node's name and operator.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ppinfer.compiler.activations import Function
from ppinfer.compiler.steps import CompileError, Run, Step

__all__ = ["onnx_steps"]

Attributes = dict[str, Any]
Constants = list[npt.NDArray[np.float64] | None]


def _tensor(array: npt.NDArray[Any] | None) -> Any:
    import torch

    return None if array is None else torch.as_tensor(np.asarray(array, dtype=np.float64))


def _pads(attributes: Attributes, dims: int, label: str) -> list[int]:
    if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise CompileError(f"{label}: auto_pad is not supported; export with explicit pads")
    pads = [int(p) for p in attributes.get("pads", [0] * (2 * dims))]
    if pads[:dims] != pads[dims:]:
        raise CompileError(f"{label}: asymmetric padding {pads} is not supported")
    return pads[:dims]


def _conv(label: str, attributes: Attributes, constants: Constants) -> Run:
    import torch.nn.functional as F

    weight, bias = _tensor(constants[1]), _tensor(constants[2] if len(constants) > 2 else None)
    dims = weight.dim() - 2
    convolution = {1: F.conv1d, 2: F.conv2d}.get(dims)
    if convolution is None:
        raise CompileError(f"{label}: {dims}-d convolutions are not supported")
    options: dict[str, Any] = {
        "stride": [int(s) for s in attributes.get("strides", [1] * dims)],
        "padding": _pads(attributes, dims, label),
        "dilation": [int(d) for d in attributes.get("dilations", [1] * dims)],
        "groups": int(attributes.get("group", 1)),
    }
    return lambda x: convolution(x, weight, bias, **options)


def _gemm(label: str, attributes: Attributes, constants: Constants) -> Run:
    if int(attributes.get("transA", 0)):
        raise CompileError(f"{label}: Gemm with transA is not supported")
    weight = _tensor(constants[1])
    if int(attributes.get("transB", 0)):
        weight = weight.T
    weight = weight * float(attributes.get("alpha", 1.0))
    bias = _tensor(constants[2] if len(constants) > 2 else None)
    if bias is not None:
        bias = bias * float(attributes.get("beta", 1.0))
    return lambda x: x @ weight + (0.0 if bias is None else bias)


def _pool(label: str, kind: str, attributes: Attributes) -> Run:
    import torch.nn.functional as F

    kernel = [int(k) for k in attributes["kernel_shape"]]
    dims = len(kernel)
    options: dict[str, Any] = {
        "kernel_size": kernel,
        "stride": [int(s) for s in attributes.get("strides", kernel)],
        "padding": _pads(attributes, dims, label),
        "ceil_mode": bool(attributes.get("ceil_mode", 0)),
    }
    pool: Any
    if kind == "max":
        options["dilation"] = [int(d) for d in attributes.get("dilations", [1] * dims)]
        pool = {1: F.max_pool1d, 2: F.max_pool2d}.get(dims)
    else:
        options["count_include_pad"] = bool(attributes.get("count_include_pad", 0))
        pool = {1: F.avg_pool1d, 2: F.avg_pool2d}.get(dims)
    if pool is None:
        raise CompileError(f"{label}: {dims}-d pooling is not supported")
    return lambda x: pool(x, **options)


def _batch_norm(label: str, attributes: Attributes, constants: Constants) -> Run:
    import torch.nn.functional as F

    scale, shift, mean, variance = (_tensor(c) for c in constants[1:5])
    epsilon = float(attributes.get("epsilon", 1e-5))
    return lambda x: F.batch_norm(x, mean, variance, scale, shift, False, 0.0, epsilon)


def _reshape(label: str, attributes: Attributes, constants: Constants) -> Run:
    target = [int(v) for v in np.asarray(constants[1]).ravel()]
    if not target or target[0] not in (0, 1, -1):
        raise CompileError(f"{label}: a Reshape must keep the batch dimension first")
    rest = target[1:]
    return lambda x: x.reshape(x.shape[0], *rest)


def _flatten(label: str, attributes: Attributes) -> Run:
    if int(attributes.get("axis", 1)) != 1:
        raise CompileError(f"{label}: Flatten must keep the batch axis (axis=1)")
    return lambda x: x.reshape(x.shape[0], -1)


def _constant_op(label: str, op: str, constants: Constants) -> Run:
    operand = _tensor(constants[1])
    if operand is None:
        raise CompileError(f"{label}: {op} needs a constant operand")
    operations: dict[str, Callable[[Any], Any]] = {
        "Add": lambda x: x + operand,
        "Sub": lambda x: x - operand,
        "Mul": lambda x: x * operand,
        "Div": lambda x: x / operand,
        "MatMul": lambda x: x @ operand,
    }
    return operations[op]


def _elementwise(op: str, attributes: Attributes, constants: Constants) -> Function | None:
    simple = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}
    if op in simple:
        return Function(simple[op])
    if op == "LeakyRelu":
        return Function("leaky_relu", (float(attributes.get("alpha", 0.01)),))
    if op == "PRelu":
        slopes = np.asarray(constants[1], dtype=np.float64).ravel()
        if slopes.size == 0 or not np.all(slopes == slopes[0]):
            raise CompileError("PRelu with a slope per channel is not supported; share one slope")
        return Function("leaky_relu", (float(slopes[0]),))
    if op == "Clip":
        low = -np.inf if len(constants) < 2 or constants[1] is None else float(constants[1])
        high = np.inf if len(constants) < 3 or constants[2] is None else float(constants[2])
        return Function("hardtanh", (max(low, -1e300), min(high, 1e300)))
    if op == "Gelu":
        approximate = attributes.get("approximate", b"none")
        return Function("gelu_tanh" if approximate in (b"tanh", "tanh") else "gelu")
    if op == "Softplus":
        return Function("softplus", (1.0, 1e300))  # ONNX Softplus has no threshold
    return None


_CLIENT = {"Softmax": "softmax", "LogSoftmax": "log_softmax", "Sigmoid": "sigmoid"}
_SKIPPED = {"Identity", "Dropout"}


def _run_function(function: Function) -> Run:
    import torch

    from ppinfer.compiler.activations import FUNCTIONS

    real = FUNCTIONS[function.name].real

    def run(x: Any) -> Any:
        return torch.as_tensor(real(function.parameters, x.numpy().ravel())).reshape(x.shape)

    return run


def _step(label: str, op: str, attributes: Attributes, constants: Constants, last: bool) -> Step:
    if op in _CLIENT and last:
        return Step(label, "client", lambda x: x, client=_CLIENT[op])
    function = _elementwise(op, attributes, constants)
    if function is not None:
        return Step(label, "elementwise", _run_function(function), function=function)
    if op in ("Mul", "Pow") and constants[1] is None:
        return Step(label, "elementwise", lambda x: x * x, function=Function("square"))
    if op == "Pow" and np.all(np.asarray(constants[1]) == 2):
        return Step(label, "elementwise", lambda x: x * x, function=Function("square"))
    affine: dict[str, Callable[[], Run]] = {
        "Conv": lambda: _conv(label, attributes, constants),
        "Gemm": lambda: _gemm(label, attributes, constants),
        "AveragePool": lambda: _pool(label, "average", attributes),
        "GlobalAveragePool": lambda: lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
        "BatchNormalization": lambda: _batch_norm(label, attributes, constants),
        "Flatten": lambda: _flatten(label, attributes),
        "Reshape": lambda: _reshape(label, attributes, constants),
    }
    if op in affine:
        return Step(label, "affine", affine[op]())
    if op in ("Add", "Sub", "Mul", "Div", "MatMul"):
        return Step(label, "affine", _constant_op(label, op, constants))
    if op == "MaxPool":
        return Step(label, "maxpool", _pool(label, "max", attributes))
    raise CompileError(f"ONNX node {label} is not supported (operator {op})")


def onnx_steps(path: Path) -> tuple[list[Step], tuple[int, ...] | None]:
    """The chain of steps of the ONNX model at ``path``, and its input shape if fixed."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as error:
        raise CompileError("compiling ONNX models needs: pip install 'ppinfer[onnx]'") from error
    try:
        model = onnx.load(str(path))
    except Exception as error:  # onnx raises protobuf errors of several kinds
        raise CompileError(f"cannot read {path} as an ONNX model: {error}") from error
    graph = model.graph
    values: dict[str, npt.NDArray[Any]] = {
        init.name: numpy_helper.to_array(init) for init in graph.initializer
    }
    inputs = [i for i in graph.input if i.name not in values]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise CompileError("the ONNX model must have exactly one input and one output")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(int(d.dim_value) for d in dims[1:])
    head = inputs[0].name
    steps: list[Step] = []
    nodes = list(graph.node)
    for position, node in enumerate(nodes):
        label = f"{node.name or node.output[0]} ({node.op_type})"
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(attributes["value"])
            continue
        data = [name for name in node.input if name and name not in values]
        if node.op_type in ("Mul", "Pow") and list(node.input) == [head, head]:
            data = [head]
        if data != [head] or (node.input and node.input[0] != head):
            raise CompileError(
                f"ONNX node {label} combines values from several layers (a residual or a "
                "branch); ppinfer evaluates models that are a chain of layers"
            )
        constants: Constants = [
            None if name == head or not name else values[name] for name in node.input
        ]
        if node.op_type not in _SKIPPED:
            last = position == len(nodes) - 1
            steps.append(_step(label, node.op_type, attributes, constants, last))
        head = node.output[0]
    if head != graph.output[0].name:
        raise CompileError("the ONNX model's output is not its last node's value")
    return steps, shape if shape and all(d > 0 for d in shape) else None
