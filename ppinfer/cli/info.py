"""What this installation is: versions of ppinfer and its dependencies, and which are active."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform

__all__ = ["collect_info", "format_info"]

_DISTRIBUTIONS = {
    "grpcio": "client",
    "protobuf": "client",
    "numpy": "client",
    "cryptography": "client",
    "phe": "server",
    "gmpy2": "server",
    "torch": "torch",
}


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gmpy2_backend() -> str | None:
    """The GMP version gmpy2 runs on, or None when gmpy2 does not import."""
    try:
        gmpy2 = importlib.import_module("gmpy2")
    except ImportError:
        return None
    return str(gmpy2.mp_version())


def collect_info() -> dict[str, object]:
    """A JSON-ready description of the installation."""
    from ppinfer import __version__

    backend = _gmpy2_backend()
    return {
        "ppinfer": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in _DISTRIBUTIONS},
        "gmpy2_active": backend is not None,
        "gmpy2_backend": backend,
        "server_extra": all(
            _version(name) is not None
            for name, extra in _DISTRIBUTIONS.items()
            if extra == "server"
        ),
    }


def format_info(info: dict[str, object]) -> str:
    """The human-readable form printed by ``ppinfer info``."""
    lines = [f"ppinfer {info['ppinfer']} on Python {info['python']} ({info['platform']})"]
    packages = info["packages"]
    assert isinstance(packages, dict)
    for name, extra in _DISTRIBUTIONS.items():
        version = packages[name] or "not installed"
        lines.append(f"  {name:<13} {version:<14} ({extra})")
    if info["gmpy2_active"]:
        lines.append(f"gmpy2 active: yes ({info['gmpy2_backend']}): fast Paillier arithmetic")
    else:
        lines.append("gmpy2 active: no (client-only install; servers need 'ppinfer[server]')")
    return "\n".join(lines)
