"""`redis_report:` steps: Redis diagnostics redis-py hands over raw, as clean data (reads only).

- `slowlog: N`: SLOWLOG GET N -> entries {id, time, duration_ms, command, args, client} (arguments
  redacted) and totals per command; plus the slowlog's length and threshold.
- `clients: {flags, idle_min, limit}`: CLIENT LIST parsed and filtered (flags 'b' = blocked).
- `commandstats: N`: INFO commandstats -> the top N commands by time spent and by calls.
- `hash: {key, fields, value_chars}`: a bounded look at a hash (HSCAN, values cut), so a large or
  sensitive working memory is shown, and transcribed, only as far as an operator needs to read it.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.parsers.redis_text import (
    parse_client_list,
    parse_slowlog,
    slowlog_by_command,
    summarise_clients,
    top_commandstats,
)
from engine.spec.model import Effect
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.adapters.redis import RedisAdapter
    from engine.run.context import StepContext

COUNT = {"type": ["integer", "string"]}
SCHEMA = {
    "type": "object",
    "description": "Redis diagnostics as data. Exactly one of: slowlog, clients, commandstats, hash.",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "slowlog": {**COUNT, "description": "SLOWLOG GET this many -> {entries, by_command, length, threshold_us}."},
        "clients": {
            "type": "object",
            "additionalProperties": False,
            "description": "CLIENT LIST -> {total, matched, by_cmd, clients}, filtered.",
            "properties": {
                "flags": {"type": "string", "description": "Every flag letter must be set: b blocked, P pubsub, ..."},
                "idle_min": {**COUNT, "description": "Only clients idle at least this many seconds."},
                "limit": {**COUNT, "description": "Keep at most this many client rows (default 100)."},
            },
        },
        "commandstats": {**COUNT, "description": "INFO commandstats -> top N {by_time, by_calls, totals}."},
        "hash": {
            "type": "object",
            "additionalProperties": False,
            "required": ["key"],
            "description": "A hash's fields, bounded (HSCAN) with values cut -> {exists, type, length, fields}.",
            "properties": {
                "key": {"type": "string"},
                "fields": {**COUNT, "description": "Show at most this many fields (default 50)."},
                "value_chars": {**COUNT, "description": "Cut values longer than this (default 80)."},
            },
        },
    },
}


def _int(value: Any, default: int, name: str, minimum: int = 1, maximum: int = 100_000) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"redis_report: {name} must be a whole number, got '{value}'") from None
    if not minimum <= number <= maximum:
        raise UsageError(f"redis_report: {name} must be in [{minimum}, {maximum}], got {number}")
    return number


def summary(body: dict[str, Any]) -> str:
    ((op, value),) = body.items()
    if op == "slowlog":
        return f"SLOWLOG GET {value}"
    if op == "clients":
        flags = (value or {}).get("flags")
        return "CLIENT LIST" + (f" (flags {flags})" if flags else "")
    if op == "commandstats":
        return f"INFO commandstats (top {value})"
    return f"HSCAN {value.get('key')} (bounded)"


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    ((op, value),) = body.items()
    adapter = ctx.connections.redis()
    if op == "slowlog":
        count = _int(value, 10, "slowlog")
        run = partial(_slowlog, adapter, ctx, count)
    elif op == "clients":
        spec = value or {}
        flags = spec.get("flags") or None
        idle = _int(spec.get("idle_min"), 0, "idle_min", minimum=0, maximum=10**9) if "idle_min" in spec else None
        limit = _int(spec.get("limit"), 100, "limit")
        run = partial(_clients, adapter, flags, idle, limit)
    elif op == "commandstats":
        top = _int(value, 10, "commandstats")
        run = partial(_commandstats, adapter, top)
    else:
        key = str(value["key"])
        fields = _int(value.get("fields"), 50, "fields")
        chars = _int(value.get("value_chars"), 80, "value_chars")
        run = partial(_hash, adapter, key, fields, chars)
    return Action(Effect.READ, adapter.endpoint.url, summary(body), run)


def _clients(adapter: RedisAdapter, flags: str | None, idle: int | None, limit: int) -> dict[str, Any]:
    return summarise_clients(
        parse_client_list(adapter.call(["CLIENT", "LIST"])), flags=flags, idle_min=idle, limit=limit
    )


def _commandstats(adapter: RedisAdapter, top: int) -> dict[str, Any]:
    return top_commandstats(adapter.info("commandstats"), top)


def _slowlog(adapter: RedisAdapter, ctx: StepContext, count: int) -> dict[str, Any]:
    entries = parse_slowlog(adapter.call(["SLOWLOG", "GET", count]), ctx.redactor.argv)
    length = adapter.call(["SLOWLOG", "LEN"])
    config = adapter.config_get("slowlog-*")
    threshold = config.get("slowlog-log-slower-than")
    return {
        "entries": entries,
        "shown": len(entries),
        "length": int(length),
        "threshold_us": int(threshold) if threshold is not None else None,
        "max_len": int(config["slowlog-max-len"]) if "slowlog-max-len" in config else None,
        "by_command": slowlog_by_command(entries),
    }


def _cut(value: Any, chars: int) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= chars else f"{text[:chars]}... ({len(text)} chars)"


def _hash(adapter: RedisAdapter, key: str, fields: int, chars: int) -> dict[str, Any]:
    kind, length = adapter.pipeline_calls([["TYPE", key], ["HLEN", key]])
    out: dict[str, Any] = {"key": key, "exists": kind != "none", "type": None if kind == "none" else kind}
    if kind != "hash":
        return {**out, "length": None, "fields": {}, "shown": 0, "cut": 0}
    page: dict[str, Any] = {}
    cursor: Any = 0
    while True:  # HSCAN until enough fields; a small (listpack) hash comes back whole in one call
        cursor, found = adapter.call(["HSCAN", key, cursor, "COUNT", max(fields, 10)])
        items = found.items() if isinstance(found, dict) else zip(found[::2], found[1::2], strict=False)
        for name, val in items:
            if len(page) < fields:
                page[str(name)] = val
        if str(cursor) == "0" or len(page) >= fields:
            break
    cut = sum(1 for v in page.values() if len(str(v)) > chars)
    return {
        **out,
        "length": int(length),
        "shown": len(page),
        "cut": cut,
        "fields": {name: _cut(val, chars) for name, val in sorted(page.items())},
    }


class RedisReportKind(StepKind):
    name = "redis_report"
    schema = SCHEMA
    description = "Redis diagnostics (SLOWLOG, CLIENT LIST, commandstats, a bounded hash) as clean data."

    def plan(self, body: Any, ctx: StepContext) -> Action:
        return plan(body, ctx)

    def summary(self, body: Any) -> str:
        return summary(body)


register(RedisReportKind())
