"""`config_compare:` steps: the server's configuration against wanted values, compared as Redis means them.

One CONFIG GET * (a read), then per wanted setting: the name to use on this server (the listpack name
on Redis 7 when a ziplist name was asked), the current and wanted values, and whether they are the same
once sizes, units, case, `save` schedules and client-output-buffer-limit classes are normalised.
Credentials are compared but never returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.parsers.redis_config import compare
from engine.spec.model import Effect
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.run.context import StepContext

SCHEMA = {
    "type": "object",
    "description": "CONFIG GET * compared with wanted values -> {rows, differ, unknown, same}. "
    "Each row: {param, asked, known, current, desired, same, note}.",
    "additionalProperties": False,
    "required": ["desired"],
    "properties": {
        "desired": {
            "type": ["object", "string"],
            "description": "parameter: wanted value, or an expression giving such a mapping (a baseline).",
        },
    },
}


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    desired = body["desired"]
    if not isinstance(desired, Mapping):
        raise UsageError(f"config_compare: desired must be a mapping of parameter: value, got {type(desired).__name__}")
    adapter = ctx.connections.redis()

    def execute() -> dict[str, Any]:
        rows = compare(adapter.config_get("*"), desired)
        return {
            "rows": rows,
            "differ": [r for r in rows if r["known"] and not r["same"]],
            "unknown": [r["asked"] for r in rows if not r["known"]],
            "same": [r["param"] for r in rows if r["same"]],
        }

    names = ", ".join(str(k) for k in desired) if len(desired) <= 6 else f"{len(desired)} parameters"
    return Action(Effect.READ, adapter.endpoint.url, f"CONFIG GET * (compare {names})", execute)


def _summary(body: dict[str, Any]) -> str:
    desired = body.get("desired")
    if isinstance(desired, Mapping):
        return "compare config: " + ", ".join(str(k) for k in desired)
    return f"compare config with {desired}"


class ConfigCompareKind(StepKind):
    name = "config_compare"
    schema = SCHEMA
    description = "Compare the server's configuration with wanted values (normalised)."

    plan = staticmethod(plan)
    summary = staticmethod(_summary)


register(ConfigCompareKind())
