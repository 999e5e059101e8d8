"""Which frontend reads a model: a module in memory, a torch file, TorchScript, or ONNX."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from ppinfer.compiler.steps import CompileError, Step

__all__ = ["model_steps"]


def _load_torch_file(path: Path) -> Any:
    import torch

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            scripted = any(
                name.endswith("/code/__torch__.py") or "/code/" in name
                for name in archive.namelist()
            )
        if scripted:
            try:
                return torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
            except Exception as error:  # torch raises many kinds for a damaged archive
                raise CompileError(f"cannot load TorchScript from {path}: {error}") from error
    try:
        # A full module saved with torch.save is a pickle: the one place ppinfer loads one,
        # and only from a file the operator names. Plans never use pickle.
        return torch.load(path, weights_only=False, map_location="cpu")
    except AttributeError as error:  # the pickle names a class this process cannot find
        raise CompileError(
            f"cannot load {path}: {error}. torch.save stores a module by its class's import "
            "path, so a class defined in the training script (__main__) cannot be found "
            "here. Move the class into an importable module (and import it before "
            "compiling from Python), or export the model as TorchScript "
            "(torch.jit.script(model).save(...)) or ONNX (torch.onnx.export)"
        ) from error
    except Exception as error:  # torch raises many kinds for a file that is not a model
        raise CompileError(f"cannot load a torch model from {path}: {error}") from error


def model_steps(model: Any) -> tuple[list[Step], tuple[int, ...] | None]:
    """The model's chain of steps, and the input shape the file declares (ONNX only)."""
    from ppinfer.compiler.torch_import import torch_steps

    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise CompileError(f"no model file at {path}")
        if path.suffix.lower() == ".onnx":
            from ppinfer.compiler.onnx_import import onnx_steps

            return onnx_steps(path)
        return torch_steps(_load_torch_file(path)), None
    return torch_steps(model), None
