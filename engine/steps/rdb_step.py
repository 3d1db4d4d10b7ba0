"""`rdb:` steps: fetch a full RDB over the replication protocol, and check an RDB file.

- `download` asks the server for a full sync (as `redis-cli --rdb` does) and streams the snapshot to
  `<output_dir>/redis-dump-YYYYMMDD-HHMMSS.rdb` (UTC) through a temp file. Nothing in the dataset
  changes, but the server forks to produce the snapshot (copy-on-write memory on a server that may be
  short of it) and, with disk-based replication, rewrites its own dump.rdb. The server flags PSYNC as
  an admin command, not a read, so the engine treats the download as a write: it is confirmed, its
  cost (memory in use, replication mode) is shown first, and a dry-run never sends it (the Redis
  adapter, which owns the replication socket, refuses PSYNC itself).
- `verify` checks the magic, the version, the EOF opcode and the CRC64 natively, asks
  `redis-check-rdb` when it is installed, and with `load: true` loads the file into a throwaway
  redis-server to count its keys (against `expect_keys`, or the live source's key count).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.backup import rdb
from engine.errors import ActionFailed, RunbookError, UsageError
from engine.fsutil import UnsafeFileError
from engine.spec.model import Effect
from engine.spec.params import parse_duration
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.run.context import StepContext

DEFAULT_NAME = "redis-dump-%Y%m%d-%H%M%S.rdb"
LOAD_TIMEOUT = 600.0

SCHEMA = {
    "type": "object",
    "description": "An RDB backup operation. Exactly one of: download, verify.",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "download": {
            "type": "object",
            "additionalProperties": False,
            "required": ["output_dir"],
            "properties": {
                "output_dir": {"type": "string", "description": "Local directory for the file (created if missing)."},
                "name_template": {
                    "type": "string",
                    "description": f"strftime pattern for the file name, UTC (default {DEFAULT_NAME}).",
                },
                "timeout": {
                    "type": ["string", "number"],
                    "description": "Longest wait for any single read from the server (default 60s).",
                },
                "node": {
                    "type": "string",
                    "description": "HOST:PORT of the node of the deployment to stream from (a replica, so the "
                    "primary does not fork); empty or absent: where the target points.",
                },
            },
            "description": "Stream a full RDB from the server (replication protocol) -> {path, bytes, sha256, ...}.",
        },
        "verify": {
            "type": "object",
            "additionalProperties": False,
            "required": ["path"],
            "properties": {
                "path": {"type": "string", "description": "An RDB file, or a directory: its newest *.rdb."},
                "expect_keys": {
                    "type": ["integer", "string", "null"],
                    "description": "Key count the backup must hold (default: the live source's, when loaded).",
                },
                "load": {
                    "type": ["boolean", "string"],
                    "default": False,
                    "description": "Load it into a temporary redis-server and count its keys.",
                },
                "check_rdb": {
                    "type": ["boolean", "string"],
                    "default": True,
                    "description": "Run redis-check-rdb when it is installed.",
                },
            },
            "description": "Magic, version, EOF, CRC64; redis-check-rdb; optional load -> {checksum_ok, keys, ...}.",
        },
    },
}


def _flag(value: Any, name: str) -> bool:
    from engine.spec.params import parse_bool

    try:
        return False if value == "" else parse_bool(value)
    except ValueError as exc:
        raise UsageError(f"rdb.verify.{name}: {exc}") from None


def summary(body: dict[str, Any]) -> str:
    ((op, spec),) = body.items()
    if op == "download":
        return f"download RDB (replication stream) -> {spec['output_dir']}/"
    return f"verify RDB {spec['path']}" + (" + test load" if spec.get("load") not in (None, False) else "")


# -- download --------------------------------------------------------------------------------------
def _file_name(template: str | None) -> str:
    name = datetime.now(UTC).strftime(template or DEFAULT_NAME)
    if not name or "/" in name or name.startswith(".") or "\0" in name:
        raise UsageError(f"rdb.download.name_template: '{template}' does not give a plain file name")
    return name


def _plan_download(spec: dict[str, Any], ctx: StepContext) -> Action:
    from engine.adapters.local import LocalFiles

    adapter: Any = ctx.connections.redis()  # connects and authenticates first: a bad password fails here
    if spec.get("node"):  # a chosen node of the deployment (a replica in sync, so the primary does not fork)
        (node,) = adapter.nodes_for("node", str(spec["node"]))
        adapter = adapter.node_adapter(node.address)
    endpoint = adapter.endpoint
    directory = Path(str(spec["output_dir"])).expanduser()
    name = _file_name(spec.get("name_template"))
    try:
        timeout = parse_duration(spec["timeout"]) if spec.get("timeout") is not None else 60.0
    except ValueError as exc:
        raise UsageError(f"rdb.download.timeout: {exc}") from None

    def measure() -> dict[str, Any]:
        memory = adapter.info("memory")
        diskless = adapter.config_get("repl-diskless-sync").get("repl-diskless-sync")
        return {
            "fork": {
                "used_memory_human": memory.get("used_memory_human"),
                "repl_diskless_sync": diskless,
                "note": "the server forks for the snapshot; copy-on-write memory grows with writes meanwhile",
            }
        }

    def execute() -> dict[str, Any]:
        files = LocalFiles(allow_mutation=ctx.connections.allow_mutation)
        with ctx.progress(f"RDB from {endpoint.host}:{endpoint.port}") as progress:
            try:
                path, result = files.write_new(
                    directory, name, lambda fh: adapter.full_sync(fh, timeout=timeout, on_progress=progress.advance)
                )
            except rdb.RdbError as exc:
                raise ActionFailed(f"RDB download from {endpoint.url} failed: {exc}", advice=_DOWNLOAD_ADVICE) from None
            except UnsafeFileError as exc:
                raise UsageError(f"rdb.download.output_dir: {exc.filename} {exc.strerror}") from None
            except OSError as exc:
                raise ActionFailed(f"cannot write {directory / name}: {exc.strerror or exc}") from None
        return {"path": str(path), **result, "source": endpoint.url}

    return Action(
        adapter.effect_of(["PSYNC", "?", "-1"]),
        endpoint.url,
        f"PSYNC ? -1 (full sync, as redis-cli --rdb) -> {directory / name}",
        execute,
        measure=measure,
        changes=lambda blast, result: [
            {"kind": "file", "path": (result or {}).get("path", str(directory / name)), "action": "written"}
        ],
        predict=lambda blast: {"path": str(directory / name), "predicted": True},
    )


_DOWNLOAD_ADVICE = (
    "The account needs the replication commands (PSYNC, REPLCONF: @admin); a replica-only network "
    "policy or a proxy in front of Redis can also refuse them. Alternatively run redis/backup-snapshot "
    "(BGSAVE) and copy the server's dump.rdb."
)


# -- verify ----------------------------------------------------------------------------------------
def _pick(path: Path) -> Path:
    if path.is_dir():
        regular = [p for p in path.glob("*.rdb") if p.is_file()]  # no dangling link, FIFO or directory
        found = sorted(regular, key=lambda p: p.stat().st_mtime, reverse=True)
        if found:
            return found[0]
        return path / "(no *.rdb file)"
    return path


def _check_rdb_binary() -> str | None:
    from engine.adapters.local import find_program

    return find_program("redis-check-rdb")


def load_and_count(path: Path, timeout: float = LOAD_TIMEOUT) -> dict[str, Any]:
    """Load `path` into a throwaway redis-server (127.0.0.1, free port, no persistence) and count keys."""
    from engine.adapters.scratch_redis import load_and_count as load

    return load(path, timeout)


def _source_keys(ctx: StepContext) -> tuple[int | None, str | None]:
    """The live server's key count over all databases, when the run has a Redis target."""
    if ctx.connections.target.redis is None:
        return None, None
    try:
        keyspace = ctx.connections.redis().info("keyspace")
    except RunbookError as exc:
        return None, str(exc)
    return sum(v.get("keys", 0) for v in keyspace.values() if isinstance(v, dict)), None


def verify(spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    path = _pick(Path(str(spec["path"])).expanduser())
    load = _flag(spec.get("load", False), "load")
    expect = spec.get("expect_keys")
    if expect in ("", None):
        expect = None
    else:
        try:
            expect = int(expect)
        except (TypeError, ValueError):
            raise UsageError(f"rdb.verify.expect_keys: expected a whole number, got '{expect}'") from None
    try:
        with ctx.progress(f"CRC64 {path.name}") as progress:
            out = rdb.verify_file(path, on_progress=progress.advance)
    except UnsafeFileError as exc:
        raise UsageError(f"rdb.verify.path: {exc.filename}: {exc.strerror}") from None
    except OSError as exc:
        raise ActionFailed(f"cannot read {path}: {exc.strerror or exc}") from None
    problems: list[str] = out["problems"]
    check: dict[str, Any] = {"available": None, "ok": None}
    loaded: dict[str, Any] | None = None
    if out["exists"]:
        if _flag(spec.get("check_rdb", True), "check_rdb"):
            check = rdb.run_check_rdb(path, binary=_check_rdb_binary())
            if check.get("ok") is False:
                problems.append(f"redis-check-rdb: {check.get('error')}")
        if load:
            loaded = load_and_count(path)
            if not loaded["ok"]:
                problems.append(f"test load failed: {loaded['error']}")
    keys, keys_from = None, None
    if loaded and loaded["ok"]:
        keys, keys_from = loaded["keys"], "loaded"
    elif check.get("keys") is not None:
        keys, keys_from = check["keys"] - (check.get("already_expired") or 0), "redis-check-rdb"
    source_keys, source_error = (None, None)
    compare_with = expect
    if expect is None and load:
        source_keys, source_error = _source_keys(ctx)
        compare_with = source_keys
    keys_match = None if keys is None or compare_with is None else keys == compare_with
    out.update(
        check_rdb=check,
        load=loaded,
        keys=keys,
        keys_from=keys_from,
        keyspace=(loaded or {}).get("keyspace"),
        expect_keys=expect,
        source_keys=source_keys,
        source_error=source_error,
        keys_match=keys_match,
    )
    out["ok"] = not problems
    return out


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    ((op, spec),) = body.items()
    if op == "download":
        return _plan_download(spec, ctx)
    return Action(Effect.READ, "local", summary(body), lambda: verify(spec, ctx))


def _static_effect(body: dict[str, Any]) -> Effect:
    return Effect.WRITE if "download" in body else Effect.READ


class RdbKind(StepKind):
    name = "rdb"
    schema = SCHEMA
    description = "Download a full RDB over the replication protocol, or verify an RDB file."

    def plan(self, body: Any, ctx: StepContext) -> Action:
        return plan(body, ctx)

    def static_effect(self, body: Any) -> Effect | None:
        return _static_effect(body)

    def summary(self, body: Any) -> str:
        return summary(body)


register(RdbKind())
