"""Versioned JSON documents on disk: atomic writes with an explicit mode, checked reads.

Key files and anything else that must never be half-written or world-readable go
through here. No pickle: documents are JSON objects with a ``format`` and a ``version``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ppinfer.errors import KeyFileError

__all__ = ["check_private", "read_document", "refuse_existing", "write_document"]


def refuse_existing(*paths: Path) -> None:
    """Refuse to replace files that exist: losing a key is not undone by a retry."""
    existing = [str(path) for path in paths if path.exists()]
    if existing:
        raise KeyFileError(f"{', '.join(existing)} exist(s); move them away or pass --force")


def check_private(path: Path, what: str) -> None:
    """Refuse a secret file that others may read or write, or that sits in a folder anyone
    may write to (where it could be swapped), naming the file and its mode."""
    try:
        status = path.stat()
        folder = path.parent.stat().st_mode & 0o777
    except OSError as error:
        raise KeyFileError(f"cannot read the {what} {path}: {error.strerror}") from error
    mode, me = status.st_mode & 0o777, os.geteuid()
    if me != 0 and status.st_uid != me:
        raise KeyFileError(
            f"the {what} {path} belongs to uid {status.st_uid}, but this daemon runs as uid "
            f"{me}: chown it to the daemon's user (files written by root, e.g. by a root "
            "`ppinfer keygen --force`, cannot be read by a daemon that is not root)"
        )
    if mode & 0o077:
        raise KeyFileError(
            f"the {what} {path} has mode {mode:04o}: others may read it; chmod 600 it (or "
            "start with --allow-loose-permissions, if you know why)"
        )
    if folder & 0o002 and not folder & 0o1000:  # world-writable, no sticky bit
        raise KeyFileError(
            f"the {what} {path} is in {path.parent}, which has mode {folder:04o}: anyone may "
            "replace files there; chmod o-w it (or --allow-loose-permissions)"
        )


def write_document(path: Path, document: dict[str, Any], mode: int) -> None:
    """Write atomically, creating the file with ``mode``: a secret is never readable by others."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
        os.chmod(temporary, mode)  # the umask may have narrowed it; never widened past mode
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_document(path: Path, formats: tuple[str, ...], version: int) -> dict[str, Any]:
    """Read a JSON document whose ``format`` is one of ``formats`` at ``version``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise KeyFileError(f"cannot read {path}: {error.strerror}") from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise KeyFileError(
            f"{path} is not valid JSON (line {error.lineno}); is it the right file?"
        ) from error
    if not isinstance(document, dict) or document.get("format") not in formats:
        raise KeyFileError(f"{path} is not a {' or '.join(formats)} file")
    if document.get("version") != version:
        raise KeyFileError(
            f"{path} has format version {document.get('version')!r}; "
            f"this ppinfer reads version {version}"
        )
    return document
