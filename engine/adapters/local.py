"""The operator's machine: files a procedure reads or writes, and the programs it may run, behind one guard.

As the Redis adapter refuses a non-read command at the socket, this refuses a write at the lowest
layer: `LocalFiles(allow_mutation=False)` raises MutationRefused before any byte is written, so a step
kind cannot forget the dry-run. Reads (stat, read, glob) are always allowed; they are bounded by the
caps of engine/fsutil.py (a FIFO, a device or a huge file is refused).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from engine import fsutil
from engine.errors import MutationRefused

# sbin directories are searched too: non-root PATHs often lack them (redis-server, redis-check-rdb)
_EXTRA_DIRS = ("/usr/sbin", "/usr/local/bin", "/usr/bin", "/usr/local/sbin")


def find_program(name: str) -> str | None:
    """Absolute path of an installed program, or None."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _EXTRA_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@dataclass(frozen=True)
class LocalFiles:
    """Local files, with the run's mutation policy: every write checks it here, first."""

    allow_mutation: bool

    def _refuse_in_dry_run(self, what: str) -> None:
        if not self.allow_mutation:
            raise MutationRefused(f"dry-run: refused to write {what}")

    # -- reads ---------------------------------------------------------------------------------
    def stat(self, path: str) -> dict[str, Any]:
        p = Path(path)
        if not p.exists():
            return {"path": path, "exists": False, "size": None, "mtime": None, "age_s": None}
        st = p.stat()
        return {
            "path": path,
            "exists": True,
            "size": st.st_size,
            "mtime": st.st_mtime,
            "age_s": time.time() - st.st_mtime,
        }

    def read_text(self, path: Path, *, max_bytes: int = fsutil.LOCAL_READ_MAX_BYTES) -> str:
        """A regular file's text (raises fsutil.UnsafeFileError for a FIFO, a device, too big, not UTF-8)."""
        return fsutil.read_text(path, max_bytes=max_bytes)

    def glob(self, pattern: str) -> list[str]:
        """Paths matching `pattern` (in its directory), newest first."""
        where = Path(pattern)
        found = sorted(where.parent.glob(where.name), key=lambda p: p.stat().st_mtime, reverse=True)
        return [str(p) for p in found]

    # -- writes (refused in a dry-run) ---------------------------------------------------------
    def write_file(self, path: Path, data: bytes, *, mode: int) -> None:
        """Temp file (O_EXCL | O_NOFOLLOW, unpredictable name) + rename over a regular file, never a link;
        the directory is fsynced, so a rotated password file survives a crash right after the rename."""
        self._refuse_in_dry_run(str(path))
        fsutil.write_file(path, data, mode=mode, replace=True)

    def write_new(self, directory: Path, name: str, fill: Callable[[IO[bytes]], Any]) -> tuple[Path, Any]:
        """A new file `directory/name` that `fill` writes (a downloaded backup): never replaces a file."""
        self._refuse_in_dry_run(str(directory / name))
        from engine.backup.rdb import write_atomically

        return write_atomically(directory, name, fill)
