"""The committed stubs under ppinfer/v1/ are exactly what proto/generate.py writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("proto_generate", REPO / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regeneration_changes_nothing(tmp_path: Path) -> None:
    written = _generator().generate(tmp_path)
    assert written, "the generator wrote no stubs"
    committed = sorted((REPO / "ppinfer" / "v1").glob("*_pb2*.py*"))
    assert [p.name for p in written] == [p.name for p in committed]
    for fresh in written:
        current = REPO / "ppinfer" / "v1" / fresh.name
        assert fresh.read_bytes() == current.read_bytes(), (
            f"{current.name} is stale: run 'python proto/generate.py' and commit the result"
        )


def test_services_are_defined() -> None:
    from ppinfer.v1 import key_service_pb2, model_service_pb2

    model_methods = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].methods_by_name
    key_methods = key_service_pb2.DESCRIPTOR.services_by_name["KeyService"].methods_by_name
    assert model_methods["Session"].client_streaming and model_methods["Session"].server_streaming
    assert key_methods["Exchange"].client_streaming and key_methods["Exchange"].server_streaming
    assert model_service_pb2.DESCRIPTOR.package == "ppinfer.v1"
