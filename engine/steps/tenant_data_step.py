"""`tenant_data:` steps: lossless export of keys to a local file, and restore from one.

- `export` SCANs (COUNT >= 1000) and, per page, pipelines TYPE + PTTL + DUMP over the bytes client,
  streaming each key to the file (engine/backup/keyfile.py). Every type survives (the runbook's
  `xargs mget` returns nil for every hash, list and set). A read: allowed in a dry-run.
- `inspect` checks an export's checksum and counts how many of its keys exist on the target now.
- `import` RESTOREs every key with the TTL it had left at export time. The checksum is verified
  before Redis is touched; existing keys are never overwritten unless `replace: true`
  (RESTORE ... REPLACE, destructive); the count is verified afterwards.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from engine import __version__
from engine.backup import keyfile
from engine.backup.keyfile import KeyFileError, KeyRecord
from engine.errors import ActionFailed, MutationRefused, TargetError, UsageError
from engine.spec.model import Effect
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.adapters.redis import RedisAdapter
    from engine.context import StepContext

SAMPLE = 20
BATCH_KEYS = 1000
BATCH_BYTES = 8 << 20  # a restore pipeline is flushed at 1000 keys or 8 MiB of payload

SCHEMA = {
    "type": "object",
    "description": "Export keys to a local file, inspect such a file, or restore it. Exactly one of: "
    "export, inspect, import.",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "export": {
            "type": "object",
            "additionalProperties": False,
            "required": ["match", "output"],
            "properties": {
                "match": {"type": "string", "description": "SCAN MATCH pattern, e.g. tenant:acme:*"},
                "output": {
                    "type": "string",
                    "description": "File to create (never overwritten), or an existing directory to "
                    "create <pattern>-YYYYMMDD-HHMMSS.keys.jsonl in.",
                },
                "count": {"type": ["integer", "string"], "description": "SCAN COUNT hint, at least 1000."},
            },
            "description": "DUMP + PTTL of every matching key, pipelined per SCAN page -> {path, keys, sha256, ...}.",
        },
        "inspect": {
            "type": "object",
            "additionalProperties": False,
            "required": ["input"],
            "properties": {"input": {"type": "string"}},
            "description": "Verify an export's checksum, count its keys that exist now -> {ok, keys, existing, ...}.",
        },
        "import": {
            "type": "object",
            "additionalProperties": False,
            "required": ["input"],
            "properties": {
                "input": {"type": "string"},
                "replace": {
                    "type": ["boolean", "string"],
                    "default": False,
                    "description": "Overwrite keys that exist (RESTORE ... REPLACE): destructive.",
                },
            },
            "description": "RESTORE every key of an export with its remaining TTL -> {restored, present_after, ...}.",
        },
    },
}


def _op(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    ((name, value),) = body.items()
    return name, value


def _truthy(value: Any) -> bool | None:
    """None when the value is not a boolean (a template not rendered yet, as in `show`)."""
    from engine.spec.params import parse_bool

    try:
        return False if value == "" else parse_bool(value)
    except ValueError:
        return None


def static_effect(body: dict[str, Any]) -> Effect | None:
    op, spec = _op(body)
    if op != "import":
        return Effect.READ
    replace = spec.get("replace", False)
    if isinstance(replace, str) and "{{" in replace:
        return Effect.DESTRUCTIVE  # a param decides at run time: at most destructive (write without replace)
    return Effect.DESTRUCTIVE if _truthy(replace) else Effect.WRITE


def summary(body: dict[str, Any]) -> str:
    op, spec = _op(body)
    if op == "export":
        return f"export {spec['match']} -> {spec['output']} (DUMP + PTTL)"
    if op == "inspect":
        return f"inspect {spec['input']}"
    replace = spec.get("replace", False)
    mode = " (REPLACE)" if replace is True else "" if replace is False else f" (replace: {replace})"
    return f"restore {spec['input']}{mode}"


# -- Redis calls on the bytes client ---------------------------------------------------------------
def _call(adapter: RedisAdapter, fn: Callable[[], Any]) -> Any:
    from engine.adapters.redis import explain_text

    try:
        return fn()
    except MutationRefused:
        raise
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise TargetError(f"{adapter.endpoint.url}: {exc}", advice=explain_text(str(exc))) from None
    except redis.ResponseError as exc:
        raise ActionFailed(f"{type(exc).__name__}: {exc}", advice=explain_text(str(exc))) from None


def _pipeline(adapter: RedisAdapter, calls: list[tuple[Any, ...]]) -> list[Any]:
    raw = adapter.raw_client()

    def run() -> list[Any]:
        pipe = raw.pipeline(transaction=False)
        for argv in calls:
            pipe.execute_command(*argv)
        return pipe.execute(raise_on_error=False)

    return _call(adapter, run)


def _scan_pages(adapter: RedisAdapter, match: str, count: int) -> Iterator[list[bytes]]:
    raw = adapter.raw_client()
    cursor = 0
    while True:
        cursor, page = _call(adapter, lambda c=cursor: raw.scan(c, match=match, count=count))
        if page:
            yield page
        if cursor == 0:
            return


def _text(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")


def _file_errors(fn: Callable[[], Any]) -> Callable[[], Any]:
    """A local file that cannot be written or read, or changed under us, fails the step cleanly."""

    def guarded() -> Any:
        try:
            return fn()
        except KeyFileError as exc:
            raise ActionFailed(str(exc), advice=_CORRUPT_ADVICE) from None
        except OSError as exc:
            raise ActionFailed(f"{exc.filename or 'local file'}: {exc.strerror or exc}") from None

    return guarded


# -- export ----------------------------------------------------------------------------------------
def _output_path(output: str, match: str, run_id: str | None = None) -> Path:
    path = Path(output).expanduser()
    if path.is_dir():
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", match).strip("-.") or "keys"
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run = f"-{re.sub(r'[^A-Za-z0-9_.-]+', '-', run_id)}" if run_id else ""  # two runs in one second differ
        return path / f"{slug}-{stamp}{run}.keys.jsonl"
    return path


def export(adapter: RedisAdapter, match: str, output: Path, count: int, ctx: StepContext) -> dict[str, Any]:
    started = time.monotonic()
    created = datetime.now(UTC)
    header = {
        "source": adapter.endpoint.url,
        "match": match,
        "created": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "created_unix_ms": int(created.timestamp() * 1000),
        "redis_version": adapter.server_info.get("redis_version"),
        "engine_version": __version__,
    }
    seen: set[bytes] = set()  # SCAN may return a key twice; names only, never values
    vanished = duplicates = 0
    writer = keyfile.KeyFileWriter(output, header)
    with writer, ctx.progress(f"export {match}") as progress:
        for page in _scan_pages(adapter, match, count):
            fresh = []
            for key in page:
                if key in seen:
                    duplicates += 1
                else:
                    seen.add(key)
                    fresh.append(key)
            replies = _pipeline(adapter, [c for k in fresh for c in (("TYPE", k), ("PTTL", k), ("DUMP", k))])
            for i, key in enumerate(fresh):
                kind, pttl, payload = replies[3 * i : 3 * i + 3]
                for reply in (kind, pttl, payload):
                    if isinstance(reply, Exception):
                        raise ActionFailed(f"{_text(key)}: {reply}")
                if payload is None or pttl == -2 or kind == b"none":
                    vanished += 1  # expired or deleted between SCAN and DUMP
                    continue
                # PTTL 0 means "expires this millisecond": keep it expiring (RESTORE's 0 means "never")
                ttl = -1 if pttl == -1 else max(int(pttl), 1)
                writer.add(KeyRecord(key=key, type=kind.decode(), pttl=ttl, payload=payload))
            progress.advance(len(page))
        result = writer.commit()
    elapsed = time.monotonic() - started
    return {
        **result,
        "match": match,
        "source": adapter.endpoint.url,
        "redis_version": header["redis_version"],
        "created": header["created"],
        "vanished": vanished,
        "duplicates_skipped": duplicates,
        "seconds": round(elapsed, 3),
        "keys_per_s": round(result["key_count"] / elapsed) if elapsed > 0 else None,
    }


# -- inspect / import ------------------------------------------------------------------------------
def _verify(path: str) -> dict[str, Any]:
    try:
        return keyfile.verify(path)
    except KeyFileError as exc:
        raise ActionFailed(f"{path}: {exc}: nothing restored", advice=_CORRUPT_ADVICE) from None


_CORRUPT_ADVICE = (
    "The export is incomplete or corrupt. Restore from another copy (redis/backup-tenant makes a new one "
    "from a live server), or from a full RDB backup (redis/backup-full, Recovery Procedures)."
)


def _batches(path: str, size: int = BATCH_KEYS) -> Iterator[list[KeyRecord]]:
    batch: list[KeyRecord] = []
    payload = 0
    for record in keyfile.records(path):
        batch.append(record)
        payload += len(record.payload)
        if len(batch) >= size or payload >= BATCH_BYTES:
            yield batch
            batch, payload = [], 0
    if batch:
        yield batch


def existing_keys(adapter: RedisAdapter, path: str) -> tuple[int, list[str]]:
    """How many of the file's keys exist on the target now, and the first few of them."""
    count, sample = 0, []
    for batch in _batches(path):
        replies = _pipeline(adapter, [("EXISTS", r.key) for r in batch])
        for record, reply in zip(batch, replies, strict=True):
            if reply == 1:
                count += 1
                if len(sample) < SAMPLE:
                    sample.append(record.key_text)
    return count, sample


def _first_keys(path: str) -> list[str]:
    out = []
    for record in keyfile.records(path):
        out.append(record.key_text)
        if len(out) >= SAMPLE:
            break
    return out


def inspect(adapter: RedisAdapter, path: str) -> dict[str, Any]:
    try:
        checked = keyfile.verify(path)
    except KeyFileError as exc:
        return {
            "path": path,
            "ok": False,
            "error": str(exc),
            "key_count": None,
            "existing": None,
            "existing_sample": [],
        }
    header = checked["header"]
    existing, sample = existing_keys(adapter, path)
    return {
        "path": path,
        "ok": True,
        "error": None,
        "key_count": checked["key_count"],
        "types": checked["types"],
        "with_ttl": checked["with_ttl"],
        "bytes": checked["bytes"],
        "sha256": checked["sha256"],
        "source": header.get("source"),
        "match": header.get("match"),
        "created": header.get("created"),
        "age_s": round(time.time() - header["created_unix_ms"] / 1000, 1) if header.get("created_unix_ms") else None,
        "redis_version": header.get("redis_version"),
        "rdb_version": header.get("rdb_version"),
        "target": adapter.endpoint.url,
        "target_redis_version": adapter.server_info.get("redis_version"),
        "existing": existing,
        "existing_sample": sample,
    }


def restore(adapter: RedisAdapter, path: str, replace: bool, ctx: StepContext) -> dict[str, Any]:
    started = time.monotonic()
    checked = _verify(path)  # again: the file may have changed while the operator was reading the prompt
    total = checked["key_count"]
    if not replace:
        existing, sample = existing_keys(adapter, path)
        if existing:
            raise ActionFailed(
                f"{existing} of the {total} keys in {path} exist already (e.g. {', '.join(sample[:5])}): "
                "nothing restored",
                advice="Run again with replace=true to overwrite them (destructive), or delete them first.",
            )
    restored, errors, error_sample, written_sample = 0, 0, [], []
    suffix = ("REPLACE",) if replace else ()
    with ctx.progress(f"restore {Path(path).name}", total=total) as progress:
        for batch in _batches(path):
            calls = [("RESTORE", r.key, r.pttl if r.pttl > 0 else 0, r.payload, *suffix) for r in batch]
            replies = _pipeline(adapter, calls)
            for record, reply in zip(batch, replies, strict=True):
                if isinstance(reply, Exception):
                    errors += 1
                    if len(error_sample) < 5:
                        error_sample.append(f"{record.key_text}: {reply}")
                else:
                    restored += 1
                    if len(written_sample) < SAMPLE:
                        written_sample.append(record.key_text)
            progress.advance(len(batch))
    present = 0
    for batch in _batches(path):
        present += sum(1 for reply in _pipeline(adapter, [("EXISTS", r.key) for r in batch]) if reply == 1)
    return {
        "path": path,
        "key_count": total,
        "restored": restored,
        "errors": errors,
        "error_sample": error_sample,
        "present_after": present,
        "replace": replace,
        "sample": written_sample,
        "seconds": round(time.monotonic() - started, 3),
    }


def _restore_failed(result: dict[str, Any]) -> str | None:
    if result["errors"]:
        return (
            f"{result['errors']} of {result['key_count']} keys were not restored: {'; '.join(result['error_sample'])}"
        )
    if result["present_after"] < result["key_count"]:
        return f"only {result['present_after']} of {result['key_count']} restored keys exist afterwards"
    return None


# -- plan ------------------------------------------------------------------------------------------
def _count(value: Any) -> int:
    if value is None:
        return 1000
    try:
        return max(int(value), 1000)
    except (TypeError, ValueError):
        raise UsageError(f"tenant_data.export.count: expected a whole number, got '{value}'") from None


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    op, spec = _op(body)
    adapter: RedisAdapter = ctx.connections.redis()
    where = adapter.endpoint.url
    if op == "export":
        match = str(spec["match"])
        output = _output_path(str(spec["output"]), match, (ctx.values.get("run") or {}).get("id"))
        count = _count(spec.get("count"))
        return Action(
            Effect.READ,
            where,
            f"SCAN MATCH {match} COUNT {count} | TYPE + PTTL + DUMP -> {output}",
            _file_errors(lambda: export(adapter, match, output, count, ctx)),
        )
    path = str(spec["input"])
    if op == "inspect":
        command = f"verify {path}; EXISTS for each of its keys"
        return Action(Effect.READ, where, command, _file_errors(lambda: inspect(adapter, path)))
    replace = _truthy(spec.get("replace", False))
    if replace is None:
        raise UsageError(f"tenant_data.import.replace: expected true or false, got '{spec.get('replace')}'")
    checked = _file_errors(lambda: _verify(path))()  # a corrupt file stops here: before the gate, before Redis
    header = checked["header"]

    def measure() -> dict[str, Any]:
        # in the gate's vocabulary: count + sample + bytes print as a line, the rest as JSON (existing first)
        existing, sample = existing_keys(adapter, path)
        return {
            "count": checked["key_count"],
            "sample": _first_keys(path),
            "bytes": checked["bytes"],
            "existing": existing,
            "existing_sample": sample[:5],
            "replace": replace,
            "file": path,
            "source": header.get("source"),
            "exported": header.get("created"),
            "types": checked["types"],
        }

    def changes(blast: dict[str, Any] | None, result: Any) -> list[dict[str, Any]]:
        blast = blast or {}
        count = result["restored"] if isinstance(result, dict) else blast.get("count")
        keys = result["sample"] if isinstance(result, dict) else blast.get("sample", [])
        change = {"kind": "keys_written", "count": count, "keys": keys, "command": "RESTORE"}
        if replace:
            change.update(command="RESTORE REPLACE", replaced=blast.get("existing"))
        return [change]

    verb = "RESTORE ... REPLACE" if replace else "RESTORE"
    return Action(
        Effect.DESTRUCTIVE if replace else Effect.WRITE,
        where,
        f"{verb} {checked['key_count']} keys from {path} (sha256 {checked['sha256'][:12]}, exported "
        f"{header.get('created')} from {header.get('source')}) with their remaining TTLs",
        _file_errors(lambda: restore(adapter, path, replace, ctx)),
        measure=_file_errors(measure),
        changes=changes,
        predict=lambda blast: {"restored": (blast or {}).get("count"), "predicted": True},
        failed=_restore_failed,
    )


register(
    StepKind(
        name="tenant_data",
        schema=SCHEMA,
        plan=plan,
        static_effect=static_effect,
        summary=summary,
        description="Lossless key export (DUMP + PTTL) to a checksummed local file, and its restore.",
    )
)
