"""`monitor:` steps: a bounded MONITOR sample, summarised (by command, key prefix, client) instead of streamed.

The runbook's `redis-cli monitor` runs until someone presses Ctrl-C and prints every argument of every
command, passwords included. Here the sample always stops at whichever bound comes first, `seconds` or
`max_commands`, on a connection of its own that is closed at the end, and only counts plus the first
lines (credential arguments masked, long values cut) are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.parsers.redis_text import key_positions, parse_monitor_line, summarise_monitor
from engine.spec.model import Effect
from engine.spec.params import parse_duration
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.adapters.redis import RedisAdapter
    from engine.run.context import StepContext

MAX_SECONDS = 300.0
MAX_COMMANDS = 1_000_000

SCHEMA = {
    "type": "object",
    "description": "A bounded MONITOR sample -> {commands, seconds, by_command, by_prefix, by_client, sample}. "
    "Stops at whichever bound comes first.",
    "additionalProperties": False,
    "required": ["seconds", "max_commands"],
    "properties": {
        "seconds": {
            "type": ["string", "number"],
            "description": f"Longest sample (a duration: 5s, 500ms), at most {MAX_SECONDS:g}s.",
        },
        "max_commands": {
            "type": ["integer", "string"],
            "description": f"Stop after this many commands (1..{MAX_COMMANDS}).",
        },
    },
}


def _bounds(body: dict[str, Any]) -> tuple[float, int]:
    try:
        seconds = parse_duration(body["seconds"])
        count = int(body["max_commands"])
    except (TypeError, ValueError) as exc:
        raise UsageError(f"monitor: {exc}") from None
    if not 0 < seconds <= MAX_SECONDS:
        raise UsageError(f"monitor: seconds must be in (0, {MAX_SECONDS:g}], got {seconds:g}")
    if not 1 <= count <= MAX_COMMANDS:
        raise UsageError(f"monitor: max_commands must be in [1, {MAX_COMMANDS}], got {count}")
    return seconds, count


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    seconds, limit = _bounds(body)
    adapter = ctx.connections.redis()

    def execute() -> dict[str, Any]:
        entries, elapsed, stopped_by = _sample(adapter, ctx, seconds, limit)
        names = sorted({e.argv[0].lower() for e in entries})
        positions = key_positions(adapter.call(["COMMAND", "INFO", *names])) if names else {}
        return summarise_monitor(
            entries, seconds=elapsed, positions=positions, redact=ctx.redactor.argv, stopped_by=stopped_by
        )

    return Action(Effect.READ, adapter.endpoint.url, f"MONITOR for at most {seconds:g}s / {limit} commands", execute)


def _sample(adapter: RedisAdapter, ctx: StepContext, seconds: float, limit: int) -> tuple[list[Any], float, str]:
    """Read MONITOR lines until `limit` lines or `seconds` passed (the adapter closes the connection)."""
    with ctx.progress(f"MONITOR (up to {seconds:g}s / {limit} commands)") as progress:
        sample = adapter.monitor(seconds, limit, parse=parse_monitor_line, on_entry=progress.advance)
    return list(sample.entries), sample.seconds, sample.stopped_by


def _summary(body: dict[str, Any]) -> str:
    try:
        seconds = f"{parse_duration(body['seconds']):g}s"
    except (TypeError, ValueError):
        seconds = str(body.get("seconds"))  # a template not rendered yet
    return f"MONITOR for at most {seconds} / {body.get('max_commands')} commands"


class MonitorKind(StepKind):
    name = "monitor"
    schema = SCHEMA
    description = "A bounded MONITOR sample, summarised."
    number_fields = {"seconds": "duration", "max_commands": "count"}

    plan = staticmethod(plan)
    summary = staticmethod(_summary)


register(MonitorKind())
