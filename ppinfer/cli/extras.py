"""What the optional extras provide, and the one-line hint when one is missing."""

from __future__ import annotations

from ppinfer.errors import MissingDependencyError

__all__ = ["KEY_SIZES", "require_server_extra"]

#: Key sizes ``ppinfer keygen`` offers; 1024 is for load tests only and says so.
KEY_SIZES = (1024, 2048, 3072, 4096)
EXIT_USAGE = 2
EXIT_FAILURE = 1


def require_server_extra(feature: str) -> None:
    """Refuse ``feature`` with an install hint unless ppinfer[server] is installed."""
    try:
        import gmpy2  # noqa: F401
        import phe  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(
            f"{feature} needs the server extra: pip install 'ppinfer[server]' "
            f"({error.name} is missing)"
        ) from error
