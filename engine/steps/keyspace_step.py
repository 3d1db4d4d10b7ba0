"""`keyspace:` steps: keyspace-wide analysis and pattern changes, streamed over SCAN pages.

Exactly one operation per step:

- `audit_ttl: {match, sample}` -> {scanned, without_ttl, by_tenant, sample} (read)
- `memory_report: {match, top}` -> {scanned, total_bytes, by_type, by_tenant, biggest} (read)
- `list: {match, checks, limit}` -> {tenants: {t: [{key, type, ttl, memory}]}, count, truncated} (read)
- `expire_matching: {match, ttl, max_keys, only_without_ttl}` -> {matched, changed, skipped_had_ttl, capped} (write)
- `delete_matching: {match, max_keys, allow_broad}` -> {deleted, capped} (destructive)

Every operation walks SCAN (COUNT >= 1000) with one pipeline per page and keeps only aggregates, so a
keyspace of any size costs one round trip per thousand keys and bounded memory. Keys that vanish
between SCAN and their check are skipped. Tenants are the field after `tenant:`; other keys count
under "(none)". The logic lives in engine.keyspace; this module only wires it to the runner.

The cap (`max_keys`) refuses: when the read-only measurement finds more keys to change than
`max_keys`, nothing is changed and the step errors.

A pattern change acts on exactly the keys its measurement found (at most `max_keys`, kept in memory):
what the operator approved is what is changed, and the keyspace is scanned once, not twice. A key that
starts matching after the measurement is left alone (the procedure's verification step sees it); a
measured key that vanished meanwhile is simply not counted (UNLINK/EXPIRE answer 0 for it).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from engine.errors import ActionFailed, UsageError
from engine.keyspace import operations, pacing, read_from, server_side, small_pages
from engine.keyspace.aggregate import normalise_checks
from engine.keyspace.pages import MIN_COUNT, scan_pages
from engine.keyspace.patterns import broad_pattern_reason
from engine.spec.model import Effect
from engine.steps import Action, Done, Measured, StepKind, register

if TYPE_CHECKING:
    from engine.adapters.redis import RedisAdapter
    from engine.run.context import StepContext

_NUMBER = {"type": ["integer", "string"]}
_FLAG = {"type": ["boolean", "string"]}
_MATCH = {"type": "string", "minLength": 1, "description": "SCAN MATCH glob, e.g. tenant:*:wm:*"}
_COUNT = {**_NUMBER, "description": f"SCAN COUNT hint (at least {MIN_COUNT}, the default)."}
_SERVER_SIDE = {
    "enum": ["auto", "always", "never"],
    "description": "auto (default): count inside Redis in short read-only Lua batches (EVAL_RO) when the "
    "server allows scripts, unless the network is fast and other clients are busy on the server (then "
    "pipelined from here, which interleaves with their requests: on the server's own host with a core idle, "
    "in small pages, each SCAN COUNT 10 sent with the previous page's checks in one pipeline); always: the "
    "scripts whenever allowed; never: always pipelined from here, 1,000 keys a page.",
}
_READ_FROM = {
    "enum": list(read_from.MODES),
    "description": "auto (default): on a replica in sync with the target primary when it has one (the primary's "
    "clients are spared the scan), else the target; target: where the target points; replica: an in-sync "
    "replica or the step fails. A Cluster's shards are read on their primaries.",
}


def _op_schema(description: str, required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "required": required,
        "properties": {"match": _MATCH, "count": _COUNT, **properties},
    }


SCHEMA = {
    "type": "object",
    "description": "A keyspace-wide operation over SCAN pages (pipelined, streamed, with progress). "
    "Exactly one of: audit_ttl, memory_report, list, expire_matching, delete_matching.",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "audit_ttl": _op_schema(
            "Keys without a TTL -> {scanned, without_ttl, by_tenant, sample}.",
            ["match"],
            sample={**_NUMBER, "description": "How many key names to keep as a sample (default 20)."},
            server_side=_SERVER_SIDE,
            read_from=_READ_FROM,
        ),
        "memory_report": _op_schema(
            "TYPE + MEMORY USAGE of every matching key, one pass -> "
            "{scanned, total_bytes, by_type, by_tenant, biggest: {type: [{key, bytes, tenant, length, ttl}]}}.",
            ["match"],
            top={**_NUMBER, "description": "Biggest keys kept per type (default 10)."},
            server_side=_SERVER_SIDE,
            read_from=_READ_FROM,
        ),
        "list": _op_schema(
            "Matching keys grouped by tenant -> {tenants: {t: [{key, type, ttl, memory}]}, count, truncated}.",
            ["match"],
            checks={
                "type": "array",
                "items": {"enum": ["type", "ttl", "memory"]},
                "uniqueItems": True,
                "description": "Per-key checks (default all three).",
            },
            limit={**_NUMBER, "description": "Stop after this many keys (default 10000); truncated says so."},
        ),
        "expire_matching": _op_schema(
            "WRITE: set a TTL on matching keys, a pipeline per page (EXPIRE ... NX when only_without_ttl). "
            "Refused when more than max_keys would change -> {matched, changed, skipped_had_ttl, capped}.",
            ["match", "ttl", "max_keys"],
            ttl={"type": ["integer", "number", "string"], "description": "Seconds, or a duration (90s, 1h)."},
            max_keys={**_NUMBER, "description": "Most keys it may change; more matching: refused, nothing changed."},
            only_without_ttl={**_FLAG, "description": "Leave keys that already expire alone (default true)."},
            sample={**_NUMBER, "description": "Key names kept as a sample in the blast radius (default 20)."},
        ),
        "delete_matching": _op_schema(
            "DESTRUCTIVE: SCAN + UNLINK matching keys, a page per pipeline -> {deleted, capped}. Refused when "
            "more than max_keys match, and for patterns without a literal prefix or spanning tenants "
            "unless allow_broad.",
            ["match", "max_keys"],
            max_keys={**_NUMBER, "description": "Most keys it may delete; more matching: refused, nothing changed."},
            allow_broad={
                **_FLAG,
                "description": "Allow '*', patterns without a literal prefix and 'tenant:*' (default false).",
            },
            sample={**_NUMBER, "description": "Key names kept as a sample in the blast radius (default 20)."},
        ),
    },
}

_READS = {"audit_ttl", "memory_report", "list"}
_LABELS = {
    "audit_ttl": "TTL audit",
    "memory_report": "memory report",
    "list": "listing",
    "expire_matching": "set TTL",
    "delete_matching": "delete",
}


def _op(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    ((name, spec),) = body.items()
    return name, dict(spec or {})


def static_effect(body: dict[str, Any]) -> Effect:
    op, _ = _op(body)
    if op == "expire_matching":
        return Effect.WRITE
    if op == "delete_matching":
        return Effect.DESTRUCTIVE
    return Effect.READ


def summary(body: dict[str, Any]) -> str:
    op, spec = _op(body)
    match = shlex.quote(str(spec.get("match", "")))
    count = max(_int_or(spec.get("count"), MIN_COUNT), MIN_COUNT)
    scan = f"SCAN MATCH {match} COUNT {count}"
    if op == "audit_ttl":
        return f"{scan} | TTL per key, a pipeline per page: keys without TTL"
    if op == "memory_report":
        return f"{scan} | TYPE + MEMORY USAGE per key, a pipeline per page"
    if op == "list":
        checks = spec.get("checks") or ["type", "ttl", "memory"]
        return f"{scan} | {' + '.join(str(c).upper() for c in checks)} per key, by tenant"
    if op == "expire_matching":
        nx = " NX" if spec.get("only_without_ttl") in (None, True, "true", "True") else ""
        ttl = spec.get("ttl")
        ttl = int(ttl) if isinstance(ttl, float) and ttl.is_integer() else ttl
        return f"{scan} | EXPIRE key {ttl}{nx} per key, a pipeline per page (max {spec.get('max_keys')})"
    return f"{scan} | UNLINK per key, a pipeline per page (max {spec.get('max_keys')})"


# -- value helpers ---------------------------------------------------------------------------------
def _int_or(value: Any, default: int) -> int:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else default
    except (TypeError, ValueError):
        return default


def _int(spec: dict[str, Any], name: str, default: int | None = None, minimum: int = 0) -> int:
    value = spec.get(name, default)
    if value is None:
        raise UsageError(f"keyspace: '{name}' is required")
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise UsageError(f"keyspace: '{name}' must be a whole number, got {value!r}")
    try:
        number = int(str(value).strip()) if not isinstance(value, int | float) else int(value)
    except ValueError:
        raise UsageError(f"keyspace: '{name}' must be a whole number, got {value!r}") from None
    if number < minimum:
        raise UsageError(f"keyspace: '{name}' must be at least {minimum}, got {number}")
    return number


def _flag(value: Any, default: bool) -> bool:
    from engine.spec.params import parse_bool

    if value is None:
        return default
    try:
        return parse_bool(value)
    except ValueError as exc:
        raise UsageError(f"keyspace: {exc}") from None


def _seconds(value: Any) -> int:
    from engine.spec.params import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise UsageError(f"keyspace: ttl: {exc}") from None
    if seconds < 1 or not float(seconds).is_integer():
        raise UsageError(f"keyspace: ttl must be a whole number of seconds >= 1, got {value!r}")
    return int(seconds)


def _nx_supported(adapter: RedisAdapter) -> bool:
    """EXPIRE ... NX exists from Redis 7.0."""
    version = str(adapter.server_info.get("redis_version", "0"))
    try:
        return int(version.split(".")[0]) >= 7
    except ValueError:
        return False


# -- planning --------------------------------------------------------------------------------------
def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    op, spec = _op(body)
    match = str(spec.get("match") or "")
    if not match:
        raise UsageError("keyspace: 'match' is required")
    count = _int(spec, "count", MIN_COUNT, minimum=1)
    if op == "delete_matching" and not _flag(spec.get("allow_broad"), False):
        reason = broad_pattern_reason(match)
        if reason:
            raise UsageError(
                f"keyspace: delete_matching refused: {reason}. Scope the pattern to one tenant "
                "(tenant:<name>:*) or a literal prefix, or set allow_broad: true in the procedure."
            )
    adapter = ctx.connections.redis()
    where = adapter.endpoint.url
    pages, scanning = _scanner(ctx, adapter, op, match, count)
    command = summary(body)
    if op in ("audit_ttl", "memory_report"):
        mode = str(spec.get("read_from", "auto"))

        def reader() -> _Reading:
            try:
                node, why, alone = adapter.reader(mode)
            except read_from.ReadFromError as exc:
                raise ActionFailed(str(exc)) from None
            if node is adapter:
                return _Reading(node, pages, scanning, f"on the target ({why})")
            on = f"on replica {node.endpoint.host}:{node.endpoint.port}, {why}"
            if alone:
                on += "; no client uses it but its primary's replication stream, so it is paced as an idle server"
            return _Reading(node, *_scanner(ctx, node, op, match, count), on, alone)

        return _plan_analysis(op, spec, reader, where, command)
    if op == "list":
        try:
            checks = normalise_checks(spec.get("checks"))
        except ValueError as exc:
            raise UsageError(f"keyspace: list: {exc}") from None
        limit = _int(spec, "limit", 10_000, minimum=1)
        return Action(
            Effect.READ,
            where,
            command,
            lambda: scanning(
                lambda bar: operations.list_keys(adapter, pages(), checks=checks, limit=limit, progress=bar)
            ),
        )
    if op == "expire_matching":
        return _plan_expire(spec, adapter, where, command, pages, scanning, match)
    return _plan_delete(spec, adapter, where, command, pages, scanning, match)


@dataclass(frozen=True)
class _Reading:
    """The node an analysis reads (`read_from`), its scan and progress line, and why that node."""

    adapter: RedisAdapter
    pages: Callable[[], Any]
    scanning: Callable[..., Any]
    on: str
    stream_only: bool = False  # a replica no client uses: its other commands are its primary's stream


def _scanner(ctx: StepContext, adapter: RedisAdapter, op: str, match: str, count: int) -> tuple[Any, Any]:
    """`pages()` of the scan on `adapter`, and `scanning(fn)`, which runs `fn(progress)` under a progress line:
    keys matched so far / keys in the database (DBSIZE, summed over a cluster's primaries)."""
    label = f"{_LABELS[op]} {match}"

    def pages() -> Any:
        return scan_pages(adapter, match, count)

    def scanning(fn: Any, what: str = label) -> Any:
        total = adapter.key_count()
        shown = what if match == "*" else f"{what} (matched/keys in db)"
        with ctx.progress(shown, total=total) as bar:
            return fn(bar)

    return pages, scanning


def _plan_analysis(
    op: str,
    spec: dict[str, Any],
    reader: Callable[[], _Reading],
    where: str,
    command: str,
) -> Action:
    """TTL audit and memory report: inside Redis in short Lua batches when allowed, else pipelined from here
    (in small pages beside other clients on the server's own host, pacing.choose_path); on the node `reader`
    picks when the step runs (`read_from`)."""
    mode = str(spec.get("server_side", "auto"))
    method: dict[str, str] = {}

    def execute() -> dict[str, Any]:
        reading = reader()
        adapter, scanning, on = reading.adapter, reading.scanning, reading.on
        shards = len(adapter.scan_nodes())  # a cluster's primaries, at the time of the scan
        each = f", on each of the {shards} primaries in parallel, merged" if shards > 1 else ""
        choice, probe = _path(adapter, mode, reading.stream_only)
        audit: Callable[..., dict[str, Any]]
        report: Callable[..., dict[str, Any]]
        if choice.path == "server-side":
            pacer = server_side.Pacer() if op == "audit_ttl" else server_side.Pacer(ceiling=server_side.MEMORY_BATCH)
            pacer.probed, pacer.stream_only = probe, reading.stream_only
            audit, report = partial(server_side.audit_ttl, pacer=pacer), partial(server_side.memory_report, pacer=pacer)

            def described() -> str:
                return (
                    f"server-side (scripts allowed; {choice.reason}): read-only Lua batches (EVAL_RO) paced to "
                    f"what the server is doing{each}: {pacer.summary()}; {on}"
                )
        elif choice.path == "small-pages":
            walked = small_pages.Walked()
            audit, report = (
                partial(small_pages.audit_ttl, walked=walked),
                partial(small_pages.memory_report, walked=walked),
            )

            def described() -> str:
                return f"small pages ({choice.reason}){each}: {walked.summary()}; {on}"
        else:
            audit = partial(_over_pages, operations.audit_ttl, reading.pages)
            report = partial(_over_pages, operations.memory_report, reading.pages)

            def described() -> str:
                parallel = f"; pages from each of the {shards} primaries in parallel" if shards > 1 else ""
                return f"client-side ({choice.reason}): SCAN pages, one pipeline per page{parallel}; {on}"

        try:
            if op == "audit_ttl":
                sample = _int(spec, "sample", 20)
                return scanning(lambda bar: audit(adapter, spec["match"], sample=sample, progress=bar))
            top = _int(spec, "top", 10)
            return scanning(lambda bar: report(adapter, spec["match"], top=top, progress=bar))
        finally:
            method["used"] = described()

    return Action(Effect.READ, where, command, execute, output=lambda result: f"method: {method.get('used')}")


def _over_pages(
    operation: Callable[..., Any], pages: Callable[[], Any], adapter: RedisAdapter, _match: str, **kw: Any
) -> Any:
    """A client-side operation (operations.py) called as the other paths' are: over the step's SCAN pages."""
    return operation(adapter, pages(), **kw)


def _path(adapter: RedisAdapter, mode: str, stream_only: bool) -> tuple[pacing.Choice, pacing.Activity | None]:
    """Which path an analysis takes (`server_side`: auto | always | never), and what the server was seen
    doing when it was chosen (the scripts' pacing starts from it)."""
    if mode == "never":
        return pacing.Choice("client-side", "server_side: never"), None
    probe = adapter.activity()  # the round trip, and what other clients are doing
    if stream_only:
        probe = probe.stream_only()
    choice = pacing.choose_path(probe)
    # whether scripts are allowed is asked (one EVAL_RO per node) only where they would run
    if (mode == "always" or choice.path == "server-side") and not server_side.available(adapter):
        return pacing.Choice("client-side", "scripts refused by the server"), probe
    if mode == "always" and choice.path != "server-side":
        return pacing.Choice("server-side", f"server_side: always ({choice.reason})"), probe
    return choice, probe


def _pattern_changes(kind: str, measured: Measured | None, **extra: Any) -> list[dict[str, Any]]:
    """The change record a dry-run predicts from the measurement (nothing when the cap would refuse it)."""
    blast: Mapping[str, Any] = measured or {}
    if blast.get("over_cap") or not blast.get("count", 0):
        return []
    return [{"kind": kind, "count": blast["count"], "keys": blast.get("sample", []), **extra}]


def _applied_changes(kind: str, counted: str, applied: operations.Applied, **extra: Any) -> list[dict[str, Any]]:
    """The change record of what a pattern operation really did: the keys it changed, sampled."""
    count = applied.result[counted]
    if not count:
        return []
    change = {"kind": kind, "count": count, "keys": applied.sample, **extra}
    if applied.result.get("capped"):
        change["capped"] = True
    return [change]


def _refusal(count: int, max_keys: int, what: str) -> str:
    return (
        f"{count} keys would {what}, more than max_keys={max_keys}: refused, nothing changed. "
        "Narrow the pattern, or raise max_keys after checking the sample"
    )


def _plan_expire(
    spec: dict[str, Any], adapter: RedisAdapter, where: str, command: str, pages: Any, scanning: Any, match: str
) -> Action:
    ttl = _seconds(spec.get("ttl"))
    max_keys = _int(spec, "max_keys", minimum=1)
    only_without_ttl = _flag(spec.get("only_without_ttl"), True)
    sample = _int(spec, "sample", 20)

    def measure() -> Measured:
        keys: list[str] = []
        found = scanning(
            lambda bar: operations.measure_expire(
                adapter,
                pages(),
                only_without_ttl=only_without_ttl,
                sample=sample,
                progress=bar,
                collect=keys,
                collect_max=max_keys,
            ),
            f"measuring {match}",
        )
        blast = {
            "match": match,
            "count": found["count"],
            "matched": found["matched"],
            "had_ttl": found["had_ttl"],
            "sample": found["sample"],
            "ttl_new": ttl,
            "only_without_ttl": only_without_ttl,
            "max_keys": max_keys,
            "over_cap": found["count"] > max_keys,
        }
        return Measured(blast, tuple(keys))

    def apply(measured: Measured) -> Done:
        if measured["over_cap"]:
            raise ActionFailed(_refusal(measured["count"], max_keys, "get a TTL"))
        applied = scanning(
            lambda bar: operations.expire_matching(
                adapter,
                operations.in_pages(list(measured.approved)),
                ttl=ttl,
                max_keys=max_keys,
                only_without_ttl=only_without_ttl,
                nx=_nx_supported(adapter),
                sample=sample,
                progress=bar,
            )
        )
        # acted on the measured keys only: those that already had a TTL were counted by the measurement
        result = {
            **applied.result,
            "matched": measured["matched"],
            "skipped_had_ttl": measured["had_ttl"] + applied.result["skipped_had_ttl"],
        }
        return Done(result, _applied_changes("ttl_set", "changed", applied, ttl_after=ttl, match=match))

    def predict(measured: Measured | None) -> dict[str, Any]:
        blast: Mapping[str, Any] = measured or {}
        if blast.get("over_cap"):
            return {"matched": blast.get("matched", 0), "changed": 0, "skipped_had_ttl": 0, "capped": False}
        return {
            "matched": blast.get("matched", 0),
            "changed": blast.get("count", 0),
            "skipped_had_ttl": blast.get("had_ttl", 0),
            "capped": False,
        }

    return _pattern_action(
        Effect.WRITE,
        where,
        command,
        measure,
        apply,
        predict,
        lambda measured: _pattern_changes("ttl_set", measured, ttl_after=ttl, match=match),
    )


def _plan_delete(
    spec: dict[str, Any], adapter: RedisAdapter, where: str, command: str, pages: Any, scanning: Any, match: str
) -> Action:
    max_keys = _int(spec, "max_keys", minimum=1)
    sample = _int(spec, "sample", 20)

    def measure() -> Measured:
        keys: list[str] = []
        found = scanning(
            lambda bar: operations.measure_delete(
                adapter, pages(), sample=sample, progress=bar, collect=keys, collect_max=max_keys
            ),
            f"measuring {match}",
        )
        blast = {
            "match": match,
            "count": found["count"],
            "bytes": found["bytes"],
            "sample": found["sample"],
            "max_keys": max_keys,
            "over_cap": found["count"] > max_keys,
        }
        return Measured(blast, tuple(keys))

    def apply(measured: Measured) -> Done:
        if measured["over_cap"]:
            raise ActionFailed(_refusal(measured["count"], max_keys, "be deleted"))
        applied = scanning(
            lambda bar: operations.delete_matching(
                adapter, operations.in_pages(list(measured.approved)), max_keys=max_keys, sample=sample, progress=bar
            )
        )
        extra = {"match": match, "bytes_measured": measured.get("bytes")}
        return Done(applied.result, _applied_changes("keys_removed", "deleted", applied, **extra))

    def predict(measured: Measured | None) -> dict[str, Any]:
        blast: Mapping[str, Any] = measured or {}
        return {"deleted": 0 if blast.get("over_cap") else blast.get("count", 0), "capped": False}

    return _pattern_action(
        Effect.DESTRUCTIVE,
        where,
        command,
        measure,
        apply,
        predict,
        lambda measured: _pattern_changes(
            "keys_removed", measured, match=match, bytes_measured=measured.get("bytes") if measured else None
        ),
    )


def _pattern_action(
    effect: Effect,
    where: str,
    command: str,
    measure: Callable[[], Measured],
    apply: Callable[[Measured], Done],
    predict: Callable[[Measured | None], Any],
    predicted_changes: Callable[[Measured | None], list[dict[str, Any]]],
) -> Action:
    """Measure (the keys, capped), then act on exactly the keys measured and approved."""

    return Action(
        effect,
        where,
        command,
        lambda: apply(measure()).result,  # not measured before (a read of it?): measure now, act on that
        measure=measure,
        changes=lambda measured, result: predicted_changes(measured),  # a dry-run's; `apply` says what it did
        predict=predict,
        apply=apply,
    )


class KeyspaceKind(StepKind):
    name = "keyspace"
    schema = SCHEMA
    description = (
        "Keyspace-wide analysis (TTL audit, memory report, listing) and pattern changes "
        "(TTL by pattern, delete by pattern), streamed over SCAN pages with one pipeline per page."
    )

    def plan(self, body: Any, ctx: StepContext) -> Action:
        return plan(body, ctx)

    def static_effect(self, body: Any) -> Effect | None:
        return static_effect(body)

    def summary(self, body: Any) -> str:
        return summary(body)


register(KeyspaceKind())
