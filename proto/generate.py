"""Regenerate the committed Python stubs under ppinfer/v1/ from proto/ppinfer/v1/*.proto.

Run from anywhere: ``python proto/generate.py``. ``tests/test_proto_stubs.py`` runs the
same function into a temporary folder and checks that nothing would change, so the
committed stubs can never drift from the .proto sources or the pinned grpcio-tools.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
PACKAGE_DIR = Path("ppinfer") / "v1"


def proto_sources() -> list[Path]:
    """The .proto files of package ppinfer.v1, in a stable order."""
    return sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every source below ``out_root``."""
    from grpc_tools import protoc  # dev-only dependency, imported where it is needed

    out_root.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    sources = [str(path.relative_to(PROTO_ROOT)) for path in proto_sources()]
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see its message above")
    return sorted((out_root / PACKAGE_DIR).glob("*_pb2*.py*"))


if __name__ == "__main__":
    written = generate(REPO_ROOT)
    for path in written:
        print(path.relative_to(REPO_ROOT))
    sys.exit(0)
