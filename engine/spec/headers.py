"""The id, title and section of every procedure file in a catalog, remembered between runs.

Finding `redis/health-check` means knowing every file's id, and parsing every file costs a short run
about 40 ms. What each file said is kept in the user's cache (engine/user_cache.py) with the file's
size, mtime, ctime and inode; a file whose stat differs, or any file under another engine, is parsed
again. What is found here only says where to look: `Catalog.load` reads and checks the file itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine import user_cache

Header = tuple[str, str, str]  # id, title, section


def read_headers(files: Iterable[Path], roots: Iterable[Path]) -> dict[Path, Header]:
    """Each file's (id, title, section); files that are too big, unreadable or have no string id are left out."""
    from engine.spec.validated import engine_fingerprint

    memo_path = _memo_path(roots)
    engine = engine_fingerprint()
    memo: Any = user_cache.read_json(memo_path) if engine and memo_path is not None else None
    known: dict[str, Any] = memo["files"] if _usable(memo, engine) else {}
    fresh: dict[str, Any] = {}
    out: dict[Path, Header] = {}
    for path in files:
        try:
            info = path.stat()
        except OSError:
            continue
        key = os.path.abspath(path)
        stamp = [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]
        remembered = known.get(key)
        if isinstance(remembered, list) and len(remembered) == 2 and remembered[0] == stamp and _valid(remembered[1]):
            header = tuple(remembered[1]) if remembered[1] is not None else None
        else:
            header = _parse(path, info.st_size)
        fresh[key] = [stamp, list(header) if header is not None else None]
        if header is not None:
            out[path] = header
    if engine and memo_path is not None and fresh != known:
        user_cache.write_json(memo_path, {"engine": engine, "files": fresh})
    return out


def _parse(path: Path, size: int) -> Header | None:
    """A cheap parse (libyaml when available); a file over the limits is reported by `validate` or the load."""
    import yaml

    from engine.spec.yamlsource import MAX_YAML_BYTES

    if size > MAX_YAML_BYTES:
        return None
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        return None
    title, section = data.get("title"), data.get("section")  # never str() an alias bomb
    return data["id"], title if isinstance(title, str) else "", section if isinstance(section, str) else ""


def _memo_path(roots: Iterable[Path]) -> Path | None:
    """One memo per set of catalog roots (the shipped catalog alone is the common one); None: no cache."""
    cache_root = user_cache.root()
    if cache_root is None:
        return None
    named = "\0".join(os.path.abspath(root) for root in roots)
    digest = hashlib.sha256(named.encode("utf-8", "surrogateescape")).hexdigest()
    return cache_root / "catalog" / f"{digest}.json"


def _usable(memo: Any, engine: str) -> bool:
    return isinstance(memo, dict) and memo.get("engine") == engine and isinstance(memo.get("files"), dict)


def _valid(header: Any) -> bool:
    return header is None or (isinstance(header, list) and len(header) == 3 and all(isinstance(v, str) for v in header))
