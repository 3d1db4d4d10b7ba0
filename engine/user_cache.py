"""The user's cache directory: small JSON files that save a short run work it did before.

Every use is an optimisation: reads and writes never raise, and anything odd (a missing, corrupt,
oversized or foreign file, an unwritable directory, one that others can write to) is a miss, after
which the caller does the work again. Files are written atomically (a temporary file renamed into
place), so a reader never sees half of one; each area keeps only its newest few hundred files.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

MAX_FILES = 512
"""A write beyond this many files in an area prunes the oldest down to KEEP_FILES."""
KEEP_FILES = 384
MAX_BYTES = 4 * 1024 * 1024
"""A cache file larger than this is not read (ours are a few hundred bytes to a few KiB)."""


def root() -> Path | None:
    """$XDG_CACHE_HOME/runbook, or ~/.cache/runbook (an XDG_CACHE_HOME that is not absolute is ignored,
    as the XDG spec says); None, and no cache, when there is no home to put it in."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    if os.path.isabs(base):
        return Path(base) / "runbook"
    home = os.path.expanduser("~")
    return Path(home) / ".cache" / "runbook" if os.path.isabs(home) and home != "/" else None


def trusted(directory: Path) -> bool:
    """Ours and writable by us alone: an entry someone else could plant must never be believed."""
    try:
        info = os.stat(directory)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022


def read_json(path: Path) -> Any:
    """The file's JSON, or None when it is missing, unreadable, too big, corrupt or in a foreign directory."""
    if not trusted(path.parent):
        return None
    try:
        with open(path, "rb") as source:
            raw = source.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            return None
        return json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return None


def write_json(path: Path, data: Any) -> None:
    """Replace the file atomically with `data` as JSON; silently nothing when that cannot be done."""
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not trusted(directory):
            return
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out)
            os.replace(temporary, path)
        except BaseException:
            _remove(temporary)
            raise
        _prune(directory)
    except (OSError, ValueError, TypeError):
        pass


def _prune(directory: Path) -> None:
    with os.scandir(directory) as found:
        files = [entry for entry in found if entry.name.endswith(".json") and not entry.name.startswith(".")]
    if len(files) <= MAX_FILES:
        return
    files.sort(key=_mtime)
    for entry in files[: len(files) - KEEP_FILES]:
        _remove(entry.path)


def _mtime(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat().st_mtime
    except OSError:
        return 0.0


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
