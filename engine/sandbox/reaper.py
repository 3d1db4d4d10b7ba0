"""Sandbox processes whose owner died without stopping them (SIGKILL, the OOM killer, a lost CI job).

Every sandbox directory holds `runbook.owner`: the pid and start time of the process that made it. The
first sandbox start in any later process empties the directories whose owner is gone: it kills the
processes their pidfiles name (only a process whose working directory or command line is that
directory, so a reused pid is never hit) and removes the directory. A directory without the file, or
whose owner still runs (another test worker, another rehearsal), is left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

OWNER_FILE = "runbook.owner"
PREFIXES = ("runbook-redis-", "runbook-sshd-")

_reaped_in_this_process = False


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot): a pid and this never repeat together."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def mark_owner(directory: Path) -> None:
    """Record this process as the owner of `directory`."""
    with contextlib.suppress(OSError):
        (directory / OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid()) or '?'}\n")


def _owner_gone(directory: Path) -> bool:
    try:
        pid_text, _, started = (directory / OWNER_FILE).read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return False  # no (readable) owner file: not ours to judge
    now = _start_time(pid)
    return now is None or now != started


def _belongs_to(pid: int, directory: Path) -> bool:
    """The process runs in `directory` (redis-server chdirs to its `dir`) or names it (sshd -f DIR/...)."""
    with contextlib.suppress(OSError):
        if Path(os.readlink(f"/proc/{pid}/cwd")) == directory:
            return True
    try:
        return str(directory).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def reap_orphans(tmp: Path | None = None) -> list[int]:
    """Kill what dead owners left behind under `tmp`; returns the pids killed."""
    root = Path(tmp or tempfile.gettempdir())
    killed: list[int] = []
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(PREFIXES)]
    except OSError:
        return killed
    for directory in candidates:
        if directory.is_symlink() or not directory.is_dir() or directory.stat().st_uid != os.getuid():
            continue
        if not _owner_gone(directory):
            continue
        for pidfile in directory.glob("*.pid"):
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            if pid > 1 and _belongs_to(pid, directory.resolve()):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
        shutil.rmtree(directory, ignore_errors=True)
    return killed


def reap_once() -> None:
    """reap_orphans, the first time a process starts a sandbox (cheap: one directory listing)."""
    global _reaped_in_this_process
    if not _reaped_in_this_process:
        _reaped_in_this_process = True
        reap_orphans()
