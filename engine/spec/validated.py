"""Which procedure files passed validation, so a run does not check an unchanged file again.

Validating costs more than the rest of a short run's start-up (jsonschema, every step kind, every
template compiled), and an operator in an incident runs many short procedures. An entry says: these
exact bytes (sha256), under this name, passed with this engine (its version and code) and this schema,
using these step kinds, given these answers about other procedures (`call` and `thresholds_from`
targets) and these params of the procedures its symptoms take thresholds from. Anything different, a
corrupt or foreign entry, an unwritable or shared directory: validate again. Only passes are recorded,
so the cache can save work, never let a bad file through.

Where: $XDG_CACHE_HOME/runbook/validated (default ~/.cache/runbook/validated), one small JSON file per
entry, written atomically (a temporary file renamed into place), pruned to the newest few hundred.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from engine import user_cache

FORMAT = 1
"""Bumped when an entry's shape or meaning changes: older entries are then ignored."""

KnownProcedures = Callable[[str], bool]
StepPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Passed:
    """What is remembered of a file that passed: its step kinds, and (when JSON holds it exactly) its
    parsed YAML with the line of each step, so a run needs neither the YAML parser nor the checks."""

    kinds: frozenset[str]
    data: Any = None
    lines: dict[StepPath, int | None] | None = None
    depends: dict[str, list[str]] | None = None  # procedure id -> the params its checks read of it


def default_dir() -> Path | None:
    """$XDG_CACHE_HOME/runbook/validated, or ~/.cache/runbook/validated (None: no cache)."""
    root = user_cache.root()
    return root / "validated" if root is not None else None


@cache
def engine_fingerprint() -> str:
    """The engine's version and the name, size and mtime of each of its files ("" when unreadable).

    The version alone would not do in a checkout, where the code (and what it checks) changes while
    the version stays the same; stat-ing ~150 files costs about a millisecond.
    """
    from engine import __version__

    return fingerprint(Path(__file__).resolve().parent.parent, __version__)


def fingerprint(package: Path, version: str) -> str:
    """`version` + a digest of the relative path, size and mtime of every file under `package` (modules and
    data such as the Redis command table; bytecode left out)."""
    found: list[str] = []

    def walk(directory: str) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        walk(entry.path)
                elif not entry.name.endswith((".pyc", ".pyo")):
                    info = entry.stat()
                    found.append(f"{os.path.relpath(entry.path, package)}:{info.st_size}:{info.st_mtime_ns}")

    try:
        walk(str(package))
    except OSError:
        return ""  # no fingerprint: the cache is not used
    digest = hashlib.sha256("\n".join(sorted(found)).encode()).hexdigest()
    return f"{version}+{digest}"


@cache
def schema_fingerprint() -> str:
    """sha256 of the procedure schema file the validation checks against."""
    from engine.resources import schema_path

    try:
        return hashlib.sha256(schema_path("procedure.schema.json").read_bytes()).hexdigest()
    except OSError:
        return ""


class Recorder:
    """Wraps `known_procedures` during a validation and keeps every question asked with its answer."""

    def __init__(self, known: KnownProcedures):
        self.known = known
        self.answers: dict[str, bool] = {}

    def __call__(self, procedure_id: str) -> bool:
        answer = bool(self.known(procedure_id))
        self.answers[procedure_id] = answer
        return answer


class ValidationCache:
    """Lookups and stores never raise: any problem is a miss, or a store that did not happen."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory if directory is not None else default_dir()  # None: nothing is cached

    def lookup(self, name: str, sha256: str, known: KnownProcedures | None) -> Passed | None:
        """What is remembered, if these bytes passed before under the same conditions; else None."""
        key = self._key(name, sha256, known is not None)
        if key is None or self.directory is None:
            return None
        data = user_cache.read_json(self.directory / f"{key}.json")
        if not isinstance(data, dict) or data.get("key") != key or data.get("sha256") != sha256:
            return None
        kinds, answers = data.get("kinds"), data.get("answers")
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            return None
        if not isinstance(answers, dict) or not all(isinstance(v, bool) for v in answers.values()):
            return None
        if answers and known is None:
            return None
        if not all(_kind_available(kind) for kind in kinds):  # e.g. one a test registered in another process
            return None
        if known is not None and any(bool(known(str(pid))) != answer for pid, answer in answers.items()):
            return None  # a called procedure appeared or went away since: its checks must run again
        depends = data.get("depends", {})
        if not isinstance(depends, dict) or not all(
            isinstance(v, list) and all(isinstance(p, str) for p in v) for v in depends.values()
        ):
            return None
        return Passed(frozenset(kinds), *_source(data.get("source")), depends=depends)

    def store(
        self,
        name: str,
        sha256: str,
        kinds: Iterable[str],
        answers: dict[str, bool] | None,
        *,
        known: bool,
        data: Any = None,
        lines: dict[StepPath, int | None] | None = None,
        depends: dict[str, list[str]] | None = None,
    ) -> None:
        """Record a pass (nothing happens when the directory cannot be written).

        `data` and `lines` are kept only when JSON gives them back exactly (string keys, no dates, ...)."""
        key = self._key(name, sha256, known)
        if key is None or self.directory is None:
            return
        entry: dict[str, Any] = {
            "key": key,
            "sha256": sha256,
            "name": name,
            "kinds": sorted(set(kinds)),
            "answers": answers or {},
            "depends": depends or {},
        }
        if lines is not None and json_exact(data) and all(json_exact(list(path)) for path in lines):
            entry["source"] = {"data": data, "lines": [[list(path), line] for path, line in lines.items()]}
        user_cache.write_json(self.directory / f"{key}.json", entry)

    def _key(self, name: str, sha256: str, known: bool) -> str | None:
        engine, schema = engine_fingerprint(), schema_fingerprint()
        if not engine or not schema:
            return None
        material = "\0".join([str(FORMAT), engine, schema, name, sha256, "known" if known else "alone"])
        return hashlib.sha256(material.encode("utf-8", "surrogateescape")).hexdigest()


def json_exact(value: Any) -> bool:
    """True when JSON gives `value` back equal and of the same types (dicts with string keys, lists, finite
    floats, ints, strings, booleans, None): the only data the cache hands back instead of a parse."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(json_exact(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and json_exact(v) for k, v in value.items())
    return False


def _source(raw: Any) -> tuple[Any, dict[StepPath, int | None] | None]:
    """The remembered data and step lines, or (None, None) when there are none or they look wrong."""
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict) or not isinstance(raw.get("lines"), list):
        return None, None
    lines: dict[StepPath, int | None] = {}
    for item in raw["lines"]:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], list)):
            return None, None
        path, line = item
        if not all(isinstance(p, (str, int)) for p in path) or not (line is None or isinstance(line, int)):
            return None, None
        lines[tuple(path)] = line
    return raw["data"], lines


def _kind_available(name: str) -> bool:
    from engine.spec.kinds import lookup

    try:
        lookup(name)
    except KeyError:
        return False
    return True
