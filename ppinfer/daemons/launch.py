"""Start a ppinfer daemon as a child process and wait for its banner.

The demo, the benchmarks and the tests run B and A as real processes this way: the
banner line ('... listening on HOST:PORT', plain or JSON) gives the address, and
A's 'admin (GetStats) on HOST:PORT' line its admin listener.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from ppinfer.errors import PPInferError

__all__ = ["Daemon", "start_daemon"]


class Daemon:
    """A ppinfer server in its own process, stopped with SIGTERM."""

    def __init__(
        self, process: subprocess.Popen[str], address: str, log_path: Path, admin: str = ""
    ) -> None:
        self.process = process
        self.address = address
        self.log_path = log_path
        #: A's admin listener (GetStats), when it was started with --admin-listen
        self.admin = admin

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _lines(stream: IO[str], sink: queue.Queue[str]) -> None:
    for line in stream:
        sink.put(line)


def _announcement(line: str) -> tuple[str, str]:
    """A daemon's stdout line as (message, its last word: the address), text or JSON."""
    line = line.strip()
    if line.startswith("{"):
        try:
            record = json.loads(line)
            return str(record.get("message", "")), str(record.get("address", ""))
        except json.JSONDecodeError:
            pass
    return line, line.rsplit(" ", 1)[-1]


def start_daemon(arguments: list[str], log_path: Path, timeout: float = 120.0) -> Daemon:
    """Run ``ppinfer ARGUMENTS`` and wait for its 'listening on HOST:PORT' line."""
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ppinfer", *arguments],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + timeout
    admin = ""
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        message, address = _announcement(line)
        if message.startswith("admin (GetStats) on "):
            admin = address
        if " listening on " in message:
            return Daemon(process, address, log_path, admin)
    Daemon(process, "", log_path).stop()
    raise PPInferError(
        f"'ppinfer {arguments[0]}' did not start: {log_path.read_text().strip()[-2000:]}"
    )
