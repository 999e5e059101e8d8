"""A daemon's process tree from /proc (Linux): CPU time and memory of it and its workers.

A's linear-algebra workers are its grandchildren (a forkserver's children), so figures for
"A" sum the whole tree.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["tree", "tree_cpu", "tree_memory"]


def tree(pid: int) -> set[int]:
    """``pid`` and all its living descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        parents[int(entry.name)] = int(fields[1])
    members, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, of in parents.items() if of == parent and child not in members]
        members.update(children)
        frontier.extend(children)
    return members


def tree_cpu(pid: int) -> float:
    """User+sys seconds of the tree so far, reaped children included."""
    total = 0.0
    for member in tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def tree_memory(pid: int) -> dict[str, int]:
    """Bytes: resident now (VmRSS) and the peak each process reached (VmHWM), summed."""
    rss = hwm = 0
    for member in tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1]) * 1024
    return {"rss_bytes": rss, "peak_rss_bytes": hwm}
