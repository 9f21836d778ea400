"""Processes recorded earlier by pid: whether they still run. A pid is reused once its process
has ended (after a crash, a restart), so a record keeps the process's start time too."""

from __future__ import annotations

import os
from pathlib import Path


def process_start(pid: int) -> str:
    """When process pid started (clock ticks since boot, field 22 of /proc/<pid>/stat); ''
    where unknown (no such process, no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()  # the fields after "pid (comm)", from field 3
    return fields[19] if len(fields) > 19 else ""


def process_alive(pid: int, started: str = "") -> bool:
    """True when process pid exists (another user's counts) and, when `started` (its
    process_start when recorded) is given, is that process: a pid now used by a process that
    started at another time is not. Where the start time cannot be read, the pid decides."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except (OverflowError, OSError):
        return False
    return not started or process_start(pid) in ("", started)
