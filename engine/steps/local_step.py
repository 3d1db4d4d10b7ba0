"""`local:` steps: files on the operator's machine (baselines, backups, a rotated password file).

Writing is a change like any other: it goes through the gate, is refused in a dry-run at the lowest
layer (engine/adapters/local.py, the one door to local files), and its content is never displayed
or transcribed (it may be a secret).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import fsutil
from engine.adapters.local import LocalFiles
from engine.errors import ActionFailed, UsageError
from engine.parsers.redis_config import parse_redis_conf
from engine.spec.model import Effect
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.run.context import StepContext

SCHEMA = {
    "type": "object",
    "description": "A local file operation. Exactly one of: read, stat, glob, write.",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "read": {
            "type": "object",
            "additionalProperties": False,
            "required": ["path"],
            "properties": {
                "path": {"type": "string"},
                "format": {"enum": ["text", "json", "yaml", "redis-conf"], "default": "text"},
            },
            "description": "Read and parse a file -> its content.",
        },
        "stat": {"type": "string", "description": "A path -> {exists, size, mtime, age_s}."},
        "glob": {"type": "string", "description": "A glob pattern -> matching paths, newest first."},
        "write": {
            "type": "object",
            "additionalProperties": False,
            "required": ["path", "content"],
            "properties": {
                "path": {"type": "string"},
                "content": {"type": "string", "description": "Never shown or transcribed."},
                "mode": {"type": "string", "pattern": "^0?[0-7]{3}$", "default": "0600"},
            },
            "description": "Write a file atomically (temp file + rename) with the given mode.",
        },
    },
}


_READER = LocalFiles(allow_mutation=False)  # reads need no permission: the same door, never writing


def _stat(path: str) -> dict[str, Any]:
    return _READER.stat(path)


def _read(spec: dict[str, Any]) -> Any:
    path = Path(spec["path"])
    try:
        text = _READER.read_text(path)
    except fsutil.UnsafeFileError as exc:  # a FIFO, a device, a directory, too big, not UTF-8
        raise UsageError(f"local.read.path: {path}: {exc.strerror}") from None
    except OSError as exc:
        raise ActionFailed(f"cannot read {path}: {exc.strerror}") from None
    fmt = spec.get("format", "text")
    try:
        if fmt == "json":
            return json.loads(text)
        if fmt == "yaml":  # the bounded loader of procedure files: no alias bomb, no 600 levels
            from engine.spec.yamlsource import load_yaml

            return load_yaml(text, str(path)).data
    except UsageError as exc:
        raise ActionFailed(f"{path}: not valid yaml: {'; '.join(str(e) for e in exc.errors)}") from None
    except RecursionError:
        raise ActionFailed(f"{path}: not valid {fmt}: nested too deeply") from None
    except ValueError as exc:
        raise ActionFailed(f"{path}: not valid {fmt}: {exc}") from None
    if fmt == "redis-conf":
        return parse_redis_conf(text)
    return text


def write_file(path: Path, content: str, mode: int, *, allow_mutation: bool) -> dict[str, Any]:
    """Write `path` through the local door with this mutation policy (a dry-run refuses it there)."""
    return _write(LocalFiles(allow_mutation=allow_mutation), path, content, mode)


def _write(files: LocalFiles, path: Path, content: str, mode: int) -> dict[str, Any]:
    """Temp file (O_EXCL | O_NOFOLLOW, unpredictable name) + rename over a regular file, never through a link."""
    data = content.encode("utf-8")
    try:
        files.write_file(path, data, mode=mode)  # refused there in a dry-run
    except fsutil.UnsafeFileError as exc:
        raise UsageError(f"local.write.path: {exc.filename} {exc.strerror}") from None
    except OSError as exc:
        raise ActionFailed(f"cannot write {path}: {exc.strerror or exc}") from None
    return {"path": str(path), "bytes": len(data), "mode": oct(mode)}


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    ((op, spec),) = body.items()
    if op == "read":
        return Action(Effect.READ, "local", f"read {spec['path']}", lambda: _read(spec))
    if op == "stat":
        return Action(Effect.READ, "local", f"stat {spec}", lambda: _stat(spec))
    if op == "glob":
        return Action(Effect.READ, "local", f"glob {spec}", lambda: _READER.glob(spec))
    path, mode = Path(spec["path"]), int(str(spec.get("mode", "0600")), 8)
    return Action(
        Effect.WRITE,
        "local",
        f"write {path} (mode {oct(mode)[2:]}, content not shown)",
        lambda: _write(ctx.connections.local(), path, spec["content"], mode),
        measure=lambda: {"file": _stat(str(path))},
        changes=lambda blast, result: [{"kind": "file", "path": str(path), "action": "written"}],
    )


def _summary(body: dict[str, Any]) -> str:
    ((op, spec),) = body.items()
    return f"{op} {spec['path'] if isinstance(spec, dict) else spec}"


def _static(body: dict[str, Any]) -> Effect:
    return Effect.WRITE if "write" in body else Effect.READ


class LocalKind(StepKind):
    name = "local"
    schema = SCHEMA
    description = "Read, inspect or write files on the operator's machine."

    plan = staticmethod(plan)
    static_effect = staticmethod(_static)
    summary = staticmethod(_summary)


register(LocalKind())
