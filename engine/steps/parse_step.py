"""`parse:` steps: turn text a host command printed into data (no I/O; the text comes from an earlier step).

- id: memory
  effect: read
  ssh: {run: "free -b"}
  register: free_out
- id: memory-data
  parse: {format: free, text: "{{ free_out.stdout }}"}
  register: mem
  expect: [{that: "mem.available_pct > 10", message: ...}]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.parsers import host, redis_config, redis_host
from engine.spec.model import Effect
from engine.spec.params import parse_duration
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.run.context import StepContext

_FORMATS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "free": ("`free -b` -> {mem: {total, used, free, available, ...}, swap, available_pct}", host.parse_free),
    "free-kib": ("`free` / `free -k` (KiB columns) -> as free, in bytes", host.parse_free_kib),
    "df": ("`df -P` (any block size) -> [{filesystem, size, used, available, use_pct, mount}]", host.parse_df),
    "ps": ("`ps -eo pid,user,rss,args` -> [{pid, user, rss_kib, rss, args}]", host.parse_ps),
    "ss": ("`ss -ltnp` or `netstat -tlnp` -> [{address, host, port, pid, process}]", host.parse_listening),
    "netstat": ("same as ss (the header tells them apart)", host.parse_listening),
    "check-rdb": ("`redis-check-rdb` -> {ok, key_count, loadable_keys, error, ...}", redis_host.parse_check_rdb),
    "check-aof": ("`redis-check-aof` -> {ok, multipart, files, invalid, fixed, problems}", redis_host.parse_check_aof),
    "redis-log": (
        "Redis log lines -> {entries, errors, warnings, problems, counts} (see now/within)",
        redis_host.parse_redis_log,
    ),
    "redis-conf": (
        "redis.conf text (`cat /etc/redis/redis.conf` over ssh) -> {directive: value}",
        redis_config.parse_redis_conf,
    ),
}

SCHEMA = {
    "type": "object",
    "description": "Parse command output into data. Formats: "
    + "; ".join(f"{name}: {text}" for name, (text, _) in _FORMATS.items()),
    "additionalProperties": False,
    "required": ["format", "text"],
    "properties": {
        "format": {"enum": list(_FORMATS)},
        "text": {"type": "string", "description": "The text, usually {{ <register>.stdout }}."},
        "now": {
            "type": "string",
            "description": "redis-log: the clock the window ends at: the host's (date '+%Y-%m-%d %H:%M:%S' "
            "run on the host) or the engine's `{{ now }}` (UTC: right when the host logs in UTC).",
        },
        "within": {
            "type": ["string", "number"],
            "description": "redis-log: keep only lines from this long before `now` (5m, 300).",
        },
    },
}


def _parse(body: dict[str, Any]) -> Any:
    fmt, text = body["format"], body.get("text")
    text = "" if text is None else str(text)
    if fmt == "redis-log":
        within = body.get("within")
        try:
            return redis_host.parse_redis_log(
                text,
                now=str(body["now"]) if body.get("now") is not None else None,
                within=parse_duration(within) if within is not None else None,
            )
        except ValueError as exc:
            raise UsageError(f"parse redis-log: {exc}") from None
    if fmt not in _FORMATS:  # the schema already says so; a hand-built body still gets a clear message
        raise UsageError(f"parse: unknown format '{fmt}' (known: {', '.join(_FORMATS)})")
    return _FORMATS[fmt][1](text)


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    return Action(Effect.READ, "local", f"parse {body['format']}", lambda: _parse(body))


class ParseKind(StepKind):
    name = "parse"
    schema = SCHEMA
    description = "Turn host command output (free, df, ps, ss, Redis log, redis-check-*) into data."
    number_fields = {"within": "duration"}

    plan = staticmethod(plan)

    def summary(self, body: Any) -> str:
        return f"parse {body.get('format')}"


register(ParseKind())
