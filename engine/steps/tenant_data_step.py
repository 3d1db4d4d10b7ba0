"""`tenant_data:` steps: lossless export of keys to a local file, and restore from one.

- `export` SCANs (COUNT from 1000, growing while the pattern is rare on an idle server, short beside
  other clients) and, per 1000 keys found (20 while other clients are active: a pipeline's commands run
  back to back as Redis reads them), pipelines TYPE + PTTL + DUMP over the bytes client, streaming each key to the file
  (engine/backup/keyfile.py). Every type survives (the runbook's `xargs mget` returns nil for every
  hash, list and set). A read: allowed in a dry-run.
- `inspect` checks an export's checksum and counts how many of its keys exist on the target now.
- `import` RESTOREs every key with the TTL it had left at export time. The checksum is verified
  before Redis is touched; existing keys are never overwritten unless `replace: true`
  (RESTORE ... REPLACE, destructive); the count is verified afterwards.

Scope: a restore writes only keys that match the export's own pattern (its header's `match`) and,
when given, the tenant asked for (`tenant`); one record outside either refuses the whole restore
before the gate, and the gate counts every key by tenant (engine/backup/scope.py). The checksum
proves the file is intact, not that it is honest.

Files: the export is written only in a real run (a dry-run reads and counts, and creates nothing);
`output` is an existing directory or a new `*.jsonl` file in an existing one, never an existing file.
Inputs must be regular files within the caps of engine/fsutil.py (a FIFO or /dev/zero is refused).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import __version__
from engine.backup import keyfile, scope
from engine.backup.keyfile import KeyFileError, KeyRecord, OutputExists, UnsafeInput
from engine.errors import ActionFailed, UsageError
from engine.fsutil import UnsafeFileError
from engine.keyspace import pacing
from engine.spec.model import Effect
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.adapters.redis import RedisAdapter
    from engine.run.context import StepContext

SAMPLE = 20
BATCH_KEYS = 1000
BATCH_BYTES = 8 << 20  # a restore pipeline is flushed at 1000 keys or 8 MiB of payload
# ... while other clients are active: about what Redis reads of a client's stream at once when it is
# not holding back (16 KB), so a production request waits for a few keys' RESTOREs at most
BUSY_BATCH_BYTES = 16 << 10
WATCH_EVERY_S = 0.1  # how often a restore reads the servers' command counts (one INFO per node)
EXISTS_KEYS = 10_000  # EXISTS is cheap on both sides: one round trip checks this many keys
BUSY_EXISTS_KEYS = 200  # ... while other clients are active: about 0.1 ms of the server's time

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
                    "description": "An existing directory to create <pattern>-YYYYMMDD-HHMMSS.keys.jsonl in, "
                    "or a new file ending in .jsonl in an existing directory (an existing file is refused).",
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
                "tenant": {
                    "type": "string",
                    "description": "The tenant to restore: every key must match tenant:<tenant>:* (and the "
                    "export's own pattern), else nothing is restored.",
                },
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


# -- Redis calls on the bytes client (the adapter's: one pipeline per node, SCAN on every primary) ---
def _pipeline(adapter: RedisAdapter, calls: list[tuple[Any, ...]]) -> list[Any]:
    """One bytes pipeline per node: on a cluster each key's commands go to its slot's owner (a restore too)."""
    return adapter.pipeline_calls(calls, binary=True)


def _scan_method(adapter: RedisAdapter) -> str | None:
    notes = getattr(adapter, "scan_notes", None)
    return ("method: " + " | ".join(notes)) if notes else None


def _text(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")


def _file_errors(fn: Callable[[], Any]) -> Callable[[], Any]:
    """A local file that cannot be written or read, or changed under us, fails the step cleanly."""

    def guarded() -> Any:
        try:
            return fn()
        except UnsafeInput as exc:
            raise UsageError(str(exc)) from None
        except OutputExists as exc:
            raise ActionFailed(str(exc), advice="Name a new file, or a directory to create one in.") from None
        except KeyFileError as exc:
            raise ActionFailed(str(exc), advice=_CORRUPT_ADVICE) from None
        except UnsafeFileError as exc:  # e.g. an output directory anyone may write to
            raise UsageError(f"{exc.filename} {exc.strerror}") from None
        except OSError as exc:
            raise ActionFailed(f"{exc.filename or 'local file'}: {exc.strerror or exc}") from None

    return guarded


# -- export ----------------------------------------------------------------------------------------
def _output_path(output: str, match: str, run_id: str | None = None) -> Path:
    """Where an export goes, decided before anything runs: a new file in an existing directory."""
    path = Path(output).expanduser()
    if path.is_dir():
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", match).strip("-.") or "keys"
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run = f"-{re.sub(r'[^A-Za-z0-9_.-]+', '-', run_id)}" if run_id else ""  # two runs in one second differ
        return path / f"{slug}-{stamp}{run}.keys.jsonl"
    where = f"tenant_data.export.output: '{output}'"
    if output.endswith(("/", os.sep)):
        raise UsageError(f"{where} names a directory that does not exist: create it first")
    if path.exists() or path.is_symlink():
        kind = "a file" if path.is_file() and not path.is_symlink() else "something that is not a directory"
        raise UsageError(
            f"{where} exists already ({kind}): an export never overwrites a file; "
            "name a new file or an existing directory"
        )
    if not path.parent.is_dir():
        raise UsageError(f"{where}: the directory {path.parent} does not exist: create it first")
    if not path.name.endswith(".jsonl"):
        raise UsageError(
            f"{where} is neither an existing directory nor a file name ending in .jsonl: "
            "to export into a new directory, create it first"
        )
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
    getattr(adapter, "scan_notes", []).clear()  # what this export's SCANs did, for the step's output
    seen: set[bytes] = set()  # SCAN may return a key twice; names only, never values
    vanished = duplicates = 0
    writer = keyfile.KeyFileWriter(output, header, write=ctx.connections.allow_mutation)  # dry-run: no file
    with writer, ctx.progress(f"export {match}") as progress:
        for page in adapter.key_batches(match, count=count):
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
        "dry_run": not result["written"],
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
def verified(path: str, tenant: str | None = None) -> tuple[dict[str, Any], scope.ScopeReport]:
    """The file's checksum and shape (keyfile.verify) and every key counted by tenant and checked against
    the header's pattern (and `tenant`), in one pass over the file. Raises KeyFileError, UnsafeInput."""
    reports: list[scope.ScopeReport] = []

    def watch(header: dict[str, Any]) -> Callable[[bytes], None]:
        reports.append(scope.ScopeReport(tuple(dict.fromkeys(_patterns(header, tenant)))))
        return reports[0].add

    checked = keyfile.verify(path, watch)
    return checked, reports[0]


def verified_in_scope(path: str, tenant: str | None) -> tuple[dict[str, Any], scope.ScopeReport]:
    """`verified`, or the reason nothing may be restored: UsageError for a file that is not a regular one
    within the caps or one record outside the scope, ActionFailed for a corrupt or incomplete one."""
    try:
        checked, report = verified(path, tenant)
    except UnsafeInput as exc:
        raise UsageError(f"{exc}: nothing restored") from None
    except KeyFileError as exc:
        raise ActionFailed(f"{path}: {exc}: nothing restored", advice=_CORRUPT_ADVICE) from None
    if report.outside:
        raise UsageError(f"{path}: {report.describe_outside()}: nothing restored")
    return checked, report


_CORRUPT_ADVICE = (
    "The export is incomplete or corrupt. Restore from another copy (redis/backup-tenant makes a new one "
    "from a live server), or from a full RDB backup (redis/backup-full, Recovery Procedures)."
)


def _patterns(header: dict[str, Any], tenant: str | None) -> list[str]:
    match = header.get("match")
    if not isinstance(match, str) or not match:
        raise KeyFileError("the header names no match pattern: what the export may hold is unknown")
    return [match] + ([scope.tenant_pattern(tenant)] if tenant else [])


def _present(adapter: RedisAdapter, path: str, others: _Others) -> Iterator[bytes]:
    """The file's keys that exist on the target now (names only): EXISTS, EXISTS_KEYS a round trip, or
    BUSY_EXISTS_KEYS while other clients are active (10,000 EXISTS in one pipeline held Redis for
    milliseconds: production's p99 rose from 1.1 to 3.4-4.4 ms)."""
    chunk: list[bytes] = []
    size = 0
    for key in keyfile.keys(path):
        if not chunk:
            size = others.exists_keys()
        chunk.append(key)
        if len(chunk) >= size:
            yield from _existing(adapter, chunk)
            chunk = []
    yield from _existing(adapter, chunk)


def _existing(adapter: RedisAdapter, keys: list[bytes]) -> Iterator[bytes]:
    replies = _pipeline(adapter, [("EXISTS", key) for key in keys])
    return (key for key, reply in zip(keys, replies, strict=True) if reply == 1)


def existing_keys(
    adapter: RedisAdapter, path: str, others: _Others | None = None
) -> tuple[int, list[str], dict[str, int]]:
    """How many of the file's keys exist on the target now, the first few, and all of them by tenant."""
    from engine.keyspace.aggregate import tenant_of

    count, sample, by_tenant = 0, list[str](), dict[str, int]()
    for key in _present(adapter, path, others or _Others(adapter)):
        text = _text(key)
        count += 1
        tenant = tenant_of(text)
        by_tenant[tenant] = by_tenant.get(tenant, 0) + 1
        if len(sample) < SAMPLE:
            sample.append(text)
    return count, sample, by_tenant


def _first_keys(path: str) -> list[str]:
    out = []
    for key in keyfile.keys(path):
        out.append(_text(key))
        if len(out) >= SAMPLE:
            break
    return out


def inspect(adapter: RedisAdapter, path: str) -> dict[str, Any]:
    try:
        checked, report = verified(path)
        if report.outside:
            raise KeyFileError(f"not an honest export: {report.describe_outside()}")
    except UnsafeInput as exc:
        raise UsageError(str(exc)) from None
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
    existing, sample, _ = existing_keys(adapter, path)
    return {
        "path": path,
        "ok": True,
        "error": None,
        "key_count": checked["key_count"],
        "types": checked["types"],
        "by_tenant": report.by_tenant,
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


def restore(adapter: RedisAdapter, path: str, replace: bool, tenant: str | None, ctx: StepContext) -> dict[str, Any]:
    started = time.monotonic()
    # again: the file may have changed while the operator was reading the prompt
    checked, report = verified_in_scope(path, tenant)
    allowed = report.compiled  # the header's pattern (and the tenant's), checked again batch by batch below
    total = checked["key_count"]
    others = _Others(adapter)
    if not replace:
        existing, sample, _ = existing_keys(adapter, path, others)
        if existing:
            raise ActionFailed(
                f"{existing} of the {total} keys in {path} exist already (e.g. {', '.join(sample[:5])}): "
                "nothing restored",
                advice="Run again with replace=true to overwrite them (destructive), or delete them first.",
            )
    restored, errors, error_sample, written_sample = 0, 0, list[str](), list[str]()
    suffix = ("REPLACE",) if replace else ()
    with ctx.progress(f"restore {Path(path).name}", total=total) as progress:
        for batch in _batches(keyfile.records(path), others.limits):
            for record in batch:  # the file swapped under us since the check: stop before sending
                if not all(regex.fullmatch(record.key) for regex in allowed):
                    raise ActionFailed(f"{path} changed during the restore: {record.key_text} is outside its scope")
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
    present = sum(1 for _ in _present(adapter, path, others))
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
        "method": others.summary(),
    }


class _Others:
    """Whether other clients use the target while a restore writes to it, and so how big its pipelines are.

    Why: a pipeline's commands run back to back as Redis reads them, and Redis reads as much of a client's
    stream as has arrived: beside production traffic (1,000 requests/s) a restore of 500,000 keys in
    pipelines of 1,000 raised their p99 from 1.1 to 3.5 ms (docs/performance.md). While other clients are
    active (pacing.Watch, from the servers' command counts read at most every WATCH_EVERY_S) a pipeline
    carries BUSY_BATCH_KEYS (redis.py) keys and at most BUSY_BATCH_BYTES of payload, as the export's do; alone on the
    server, BATCH_KEYS and BATCH_BYTES."""

    def __init__(self, adapter: RedisAdapter, clock: Callable[[], float] = time.monotonic) -> None:
        """The first reading; the second comes WATCH_EVERY_S later, before the first pipeline: two round trips
        in all, where a scan's probe (RedisAdapter.activity) is nine, which a tenant export's check step
        would add to the export's round trips."""
        from engine.adapters.redis import BUSY_BATCH_KEYS

        self.adapter, self.clock = adapter, clock
        self.small = (BUSY_BATCH_KEYS, BUSY_BATCH_BYTES)
        self.watch = pacing.Watch(busy=True)  # until the second reading says otherwise
        self.read_at = clock()
        self.seen, self.ours = adapter.command_counts()
        self.pipelines = self.busy_pipelines = 0

    def active(self) -> bool:
        """Are other clients active? (read again once the last reading is WATCH_EVERY_S old)"""
        now = self.clock()
        if not self.watch.readings and now - self.read_at < WATCH_EVERY_S:  # the first answer: watch first
            time.sleep(WATCH_EVERY_S - (now - self.read_at))
            now = self.clock()
        if now - self.read_at >= WATCH_EVERY_S:
            seen, ours = self.adapter.command_counts()
            others = pacing.others_between(self.seen, seen, ours - self.ours)
            self.watch = pacing.heard(self.watch, others, now - self.read_at)
            self.read_at, self.seen, self.ours = now, seen, ours
        return self.watch.busy

    def limits(self) -> tuple[int, int]:
        """The next RESTORE pipeline's most keys and bytes of payload."""
        self.pipelines += 1
        if self.active():
            self.busy_pipelines += 1
            return self.small
        return BATCH_KEYS, BATCH_BYTES

    def exists_keys(self) -> int:
        """The next EXISTS pipeline's most keys."""
        return BUSY_EXISTS_KEYS if self.active() else EXISTS_KEYS

    def summary(self) -> str:
        return (
            f"method: {self.pipelines} RESTORE pipelines, {self.busy_pipelines} of them while other clients were "
            f"active (up to {self.watch.peak_rate:.0f} commands/s from them: at most {self.small[0]} keys and "
            f"{self.small[1] >> 10} KiB each), the rest at most {BATCH_KEYS} keys and {BATCH_BYTES >> 20} MiB"
        )


def _batches(records: Iterator[KeyRecord], limits: Callable[[], tuple[int, int]]) -> Iterator[list[KeyRecord]]:
    """`records` in pipelines of at most `limits()` keys and bytes of payload, asked once for each one."""
    batch: list[KeyRecord] = []
    payload = most_keys = most_bytes = 0
    for record in records:
        if not batch:
            most_keys, most_bytes = limits()
        batch.append(record)
        payload += len(record.payload)
        if len(batch) >= most_keys or payload >= most_bytes:
            yield batch
            batch, payload = [], 0
    if batch:
        yield batch


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
            # how the SCANs were paced, and why (engine/keyspace/pacing.py)
            output=lambda result: _scan_method(adapter),
        )
    path = str(spec["input"])
    if op == "inspect":
        command = f"verify {path}; EXISTS for each of its keys"
        return Action(Effect.READ, where, command, _file_errors(lambda: inspect(adapter, path)))
    replace = _truthy(spec.get("replace", False))
    if replace is None:
        raise UsageError(f"tenant_data.import.replace: expected true or false, got '{spec.get('replace')}'")
    tenant = str(spec["tenant"]) if spec.get("tenant") not in (None, "") else None
    # a corrupt file, or one key outside the export's pattern or the tenant, stops here: before the gate
    checked, report = _file_errors(lambda: verified_in_scope(path, tenant))()
    header = checked["header"]

    def measure() -> dict[str, Any]:
        # in the gate's vocabulary: count + sample + bytes print as a line, the rest as JSON (by tenant first)
        existing, sample, existing_by_tenant = existing_keys(adapter, path)
        return {
            "count": checked["key_count"],
            "sample": _first_keys(path),
            "bytes": checked["bytes"],
            "by_tenant": report.by_tenant,
            "existing": existing,
            "existing_by_tenant": existing_by_tenant,
            "existing_sample": sample[:5],
            "scope": list(report.patterns),
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
        _file_errors(lambda: restore(adapter, path, replace, tenant, ctx)),
        output=lambda result: result.get("method") if isinstance(result, dict) else None,
        measure=_file_errors(measure),
        changes=changes,
        predict=lambda blast: {"restored": (blast or {}).get("count"), "predicted": True},
        failed=_restore_failed,
    )


class TenantDataKind(StepKind):
    name = "tenant_data"
    schema = SCHEMA
    description = "Lossless key export (DUMP + PTTL) to a checksummed local file, and its restore."

    def plan(self, body: Any, ctx: StepContext) -> Action:
        return plan(body, ctx)

    def static_effect(self, body: Any) -> Effect | None:
        return static_effect(body)

    def summary(self, body: Any) -> str:
        return summary(body)


register(TenantDataKind())
