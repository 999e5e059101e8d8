"""Torch models to steps: anything ``torch.fx`` can trace, and TorchScript Sequentials.

torch.fx gives the dataflow of an ``nn.Module`` (custom ``forward`` included); ppinfer
needs it to be a chain, so a node that combines two values (a residual addition, a
concatenation) is refused with its name. TorchScript modules cannot be traced by fx; a
scripted or traced ``Sequential`` is read child by child.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ppinfer.compiler.activations import Function
from ppinfer.compiler.steps import (
    AFFINE_MODULES,
    CLIENT_MODULES,
    MAXPOOL_MODULES,
    CompileError,
    Run,
    Step,
    elementwise_module,
)

__all__ = ["torch_steps"]


def _functional_tables() -> tuple[dict[Any, str], dict[Any, str], set[Any], set[Any]]:
    import torch
    import torch.nn.functional as F  # the conventional name

    elementwise = {
        F.relu: "relu",
        torch.relu: "relu",
        torch.sigmoid: "sigmoid",
        F.sigmoid: "sigmoid",
        torch.tanh: "tanh",
        F.tanh: "tanh",
        F.silu: "silu",
        torch.square: "square",
    }
    client = {F.softmax: "softmax", torch.softmax: "softmax", F.log_softmax: "log_softmax"}
    affine = {
        torch.flatten,
        F.avg_pool1d,
        F.avg_pool2d,
        F.adaptive_avg_pool1d,
        F.adaptive_avg_pool2d,
        F.dropout,
        F.linear,
        F.conv1d,
        F.conv2d,
        F.pad,
    }
    maxpool = {F.max_pool1d, F.max_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d}
    return elementwise, client, affine, maxpool


_AFFINE_METHODS = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze"}
_ELEMENTWISE_METHODS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "square": "square"}


def _module_step(label: str, type_name: str, module: Any) -> Step:
    run: Run = module
    if type_name in AFFINE_MODULES:
        return Step(label, "affine", run)
    if type_name in MAXPOOL_MODULES:
        return Step(label, "maxpool", run)
    function = elementwise_module(type_name, module)
    if function is not None:
        return Step(label, "elementwise", run, function=function)
    if type_name in CLIENT_MODULES:
        return Step(label, "client", run, client=CLIENT_MODULES[type_name])
    raise CompileError(
        f"layer {label} is not supported: ppinfer compiles affine layers (Linear, Conv, "
        "AvgPool, BatchNorm, Flatten), MaxPool, and the activations ReLU, LeakyReLU, PReLU, "
        "ReLU6, Hardtanh, Sigmoid, Tanh, SiLU, GELU, Softplus and "
        "ppinfer.compiler.torch_modules.Square"
    )


def _leaky(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Function:
    slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
    return Function("leaky_relu", (float(slope),))


def _function_step(label: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Step:
    """A call_function/call_method node whose data argument is the chain's current value."""
    import torch.nn.functional as F

    elementwise, client, affine, maxpool = _functional_tables()

    def run(x: Any) -> Any:
        call_args = [_resolve(a, x) for a in args]
        if isinstance(target, str):
            return getattr(call_args[0], target)(*call_args[1:], **kwargs)
        return target(*call_args, **kwargs)

    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    if target in affine or target in _AFFINE_METHODS:
        return Step(label, "affine", run)
    if target in maxpool:
        return Step(label, "maxpool", run)
    if target in elementwise or target in _ELEMENTWISE_METHODS:
        table = elementwise if target in elementwise else _ELEMENTWISE_METHODS
        return Step(label, "elementwise", run, function=Function(table[target]))
    if target is F.leaky_relu:
        return Step(label, "elementwise", run, function=_leaky(args, kwargs))
    if target is F.gelu:
        approximate = kwargs.get("approximate", "none")
        return Step(
            label,
            "elementwise",
            run,
            function=Function("gelu_tanh" if approximate == "tanh" else "gelu"),
        )
    if target in (F.relu6, F.hardtanh):
        low, high = (
            (0.0, 6.0)
            if target is F.relu6
            else (
                float(kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)),
                float(kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)),
            )
        )
        return Step(label, "elementwise", run, function=Function("hardtanh", (low, high)))
    if target in (operator.pow, "pow") and len(args) == 2 and args[1] == 2:
        return Step(label, "elementwise", run, function=Function("square"))
    if target in client:
        return Step(label, "client", run, client=client[target])
    raise CompileError(f"{label}: the operation {name} is not supported by ppinfer")


class _Data:
    """Marks where the chain's value goes in a call's arguments."""


_DATA = _Data()


@dataclass(frozen=True)
class _ShapeOf:
    """An argument computed from the shape of the chain's value (``x.view(x.shape[0], -1)``)."""

    read: Callable[[Any], Any]


def _resolve(argument: Any, x: Any) -> Any:
    if argument is _DATA:
        return x
    if isinstance(argument, _ShapeOf):
        return argument.read(x)
    if isinstance(argument, (list, tuple)):
        return type(argument)(_resolve(a, x) for a in argument)
    return argument


def _shape_reader(node: Any, head: Any, shapes: dict[Any, _ShapeOf]) -> _ShapeOf | None:
    """x.shape, x.size(), x.size(i) of the current value, or an index into one of those."""
    reads_shape = node.op == "call_function" and node.target is getattr
    if reads_shape and node.args[0] is head and node.args[1] == "shape":
        return _ShapeOf(lambda x: x.shape)
    if node.op == "call_method" and node.target == "size" and node.args[0] is head:
        dim = node.args[1] if len(node.args) > 1 else None
        return _ShapeOf(lambda x: x.size() if dim is None else x.size(dim))
    if node.op == "call_function" and node.target is operator.getitem and node.args[0] in shapes:
        source, index = shapes[node.args[0]], node.args[1]
        return _ShapeOf(lambda x: source.read(x)[index])
    return None


def _fx_steps(model: Any) -> list[Step]:
    from torch import fx

    from ppinfer.compiler.torch_modules import Square

    class Tracer(fx.Tracer):
        def is_leaf_module(self, module: Any, qualified_name: str) -> bool:
            return isinstance(module, Square) or super().is_leaf_module(module, qualified_name)

    try:
        graph = Tracer().trace(model)
        graph_module = fx.GraphModule(model, graph)
    except Exception as error:  # fx raises many kinds on data-dependent control flow
        raise CompileError(
            f"torch.fx cannot trace {type(model).__name__} ({error}); export the model to "
            "ONNX or write forward() without data-dependent control flow"
        ) from error
    modules = dict(graph_module.named_modules())
    steps: list[Step] = []
    shapes: dict[Any, _ShapeOf] = {}
    head = None
    for node in graph_module.graph.nodes:
        if node.op == "placeholder":
            if head is not None:
                raise CompileError(
                    f"the model takes several inputs ({node.name}); one is supported"
                )
            head = node
            continue
        if node.op == "get_attr":
            continue
        if node.op == "output":
            if node.args[0] is not head:
                raise CompileError("the model's output is not the last layer's value")
            break
        label = f"{node.name} ({getattr(node.target, '__name__', node.target)})"
        reader = _shape_reader(node, head, shapes)
        if reader is not None:
            shapes[node] = reader
            continue
        data = [a for a in node.all_input_nodes if a.op != "get_attr" and a not in shapes]
        if (
            node.op == "call_function"
            and node.target is operator.mul
            and len(node.args) == 2
            and node.args[0] is node.args[1] is head
        ):
            steps.append(Step(label, "elementwise", lambda x: x * x, function=Function("square")))
            head = node
            continue
        if len(data) != 1 or data[0] is not head:
            raise CompileError(
                f"node {label} combines values from several layers (a residual or a branch); "
                "ppinfer evaluates models that are a chain of layers"
            )
        if node.op == "call_module":
            module = modules[node.target]
            steps.append(
                _module_step(
                    f"{node.target} ({type(module).__name__})", type(module).__name__, module
                )
            )
        else:
            args = tuple(_argument(a, head, graph_module, shapes) for a in node.args)
            kwargs = {k: _argument(v, head, graph_module, shapes) for k, v in node.kwargs.items()}
            steps.append(_function_step(label, node.target, args, kwargs))
        head = node
    return steps


def _argument(value: Any, head: Any, graph_module: Any, shapes: dict[Any, _ShapeOf]) -> Any:
    from torch import fx

    if value is head:
        return _DATA
    if isinstance(value, (list, tuple)):
        return type(value)(_argument(v, head, graph_module, shapes) for v in value)
    if value in shapes:
        return shapes[value]
    if isinstance(value, fx.Node) and value.op == "get_attr":
        return _attr(graph_module, str(value.target))
    if isinstance(value, fx.Node):
        raise CompileError(f"argument {value.name} is computed from the data; not supported")
    return value


def _attr(module: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def _script_steps(model: Any) -> list[Step]:
    if getattr(model, "original_name", "") != "Sequential":
        raise CompileError(
            f"TorchScript module {getattr(model, 'original_name', '?')} is not a Sequential; "
            "save the nn.Module with torch.save or export it to ONNX"
        )
    return [
        _module_step(f"{name} ({child.original_name})", child.original_name, child)
        for name, child in model.named_children()
    ]


def torch_steps(model: Any) -> list[Step]:
    """The chain of steps of a float64 copy of ``model`` in eval mode."""
    import copy

    import torch

    if isinstance(model, torch.jit.ScriptModule):
        model = copy.deepcopy(model)
        model.double()
        model.eval()
        return _script_steps(model)
    if not isinstance(model, torch.nn.Module):
        raise CompileError(
            f"expected a torch.nn.Module, got {type(model).__name__} (a state_dict holds "
            "only weights: save the module itself with torch.save(model, path))"
        )
    model = copy.deepcopy(model).double().eval()
    return _fx_steps(model)
