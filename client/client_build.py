"""PEP 517 backend of the client-only wheel: setuptools over a staged copy of the client's
modules.

The staged tree holds ppinfer's package markers, ``ppinfer.client`` and every module it
imports, directly or not, as grimp finds them in ../ppinfer: the wheel cannot grow a
server module by accident, and a server module the client starts to import shows up in
the layer contract (pyproject.toml, "light-client") before it reaches this list.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from setuptools import build_meta

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent
ENTRY = "ppinfer.client"
#: Files beside the modules that the wheel carries: typing markers and the stubs' types.
DATA = ["py.typed", "v1/*.pyi"]


def client_modules() -> list[str]:
    """The dotted names of ``ppinfer.client`` and everything it imports, with the packages
    on the way (importing a module runs its packages' ``__init__`` and what they import)."""
    import grimp

    sys.path.insert(0, str(SOURCE))
    try:
        graph = grimp.build_graph("ppinfer", cache_dir=None)
    finally:
        sys.path.remove(str(SOURCE))
    modules: set[str] = set()
    pending = {ENTRY}
    while pending:
        name = pending.pop()
        modules.add(name)
        parts = name.split(".")
        packages = {".".join(parts[:end]) for end in range(1, len(parts))}
        imported = _root_imports(graph) if name == "ppinfer" else _imports(graph, name)
        pending |= (imported | packages) - modules
    return sorted(modules)


def _imports(graph: Any, name: str) -> set[str]:
    return set(graph.find_modules_directly_imported_by(name))


def _root_imports(graph: Any) -> set[str]:
    """What ``import ppinfer`` itself runs: its top-level imports. The imports inside its
    functions (ppinfer.compile, save_plan, load_plan) are the full install's API, and
    refuse with an install hint in this wheel."""
    lines = (SOURCE / "ppinfer" / "__init__.py").read_text().splitlines()
    return {
        imported
        for imported in _imports(graph, "ppinfer")
        if any(
            not lines[detail["line_number"] - 1].startswith((" ", "\t"))
            for detail in graph.get_import_details(importer="ppinfer", imported=imported)
        )
    }


def _module_file(name: str) -> Path:
    path = SOURCE.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _stage(root: Path) -> None:
    files = {_module_file(name) for name in client_modules()}
    for pattern in DATA:
        files.update((SOURCE / "ppinfer").glob(pattern))
    for file in files:
        target = root / file.relative_to(SOURCE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)
    project = (HERE / "pyproject.toml").read_text()
    project = project.split("[project]", 1)[1]
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n'
        "\n[project]" + project + "\n[tool.setuptools.packages.find]\ninclude = ['ppinfer*']\n"
        "\n[tool.setuptools.package-data]\nppinfer = " + repr(DATA).replace("'", '"') + "\n"
    )


def _in_stage(build: Any, directory: str, *args: Any) -> str:
    out = Path(directory).resolve()
    with tempfile.TemporaryDirectory(prefix="ppinfer-client-") as stage:
        _stage(Path(stage))
        previous = Path.cwd()
        os.chdir(stage)
        try:
            return str(build(str(out), *args))
        finally:
            os.chdir(previous)


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    return _in_stage(build_meta.build_wheel, wheel_directory, config_settings)


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: dict[str, Any] | None = None
) -> str:
    prepare = build_meta.prepare_metadata_for_build_wheel
    return _in_stage(prepare, metadata_directory, config_settings)


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return []
