"""`restore: <step id>`: put back the config values a CONFIG SET step of this run changed.

The values are the ones measured just before that step ran (its blast radius), so a cleanup restores
"what it was", not what the author guessed it was. Usually a `finally:` step; when the step it
restores was approved in this run, that approval covers the restore (the transcript says so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.spec.model import Effect
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.context import StepContext

SCHEMA = {
    "type": "string",
    "pattern": "^[a-z0-9][a-z0-9_-]*$",
    "description": "Id of a `redis: {command: [CONFIG, SET, ...]}` step whose old values to put back.",
}


def restore_argv(blast: dict[str, Any] | None) -> list[str]:
    """CONFIG SET with every value as it was measured before the change."""
    config = (blast or {}).get("config") or {}
    argv = ["CONFIG", "SET"]
    for name, change in config.items():
        before = change.get("current")
        if before is None:
            raise UsageError(f"restore: the old value of '{name}' was not measured (unknown parameter?)")
        if isinstance(before, str) and before.startswith("[SECRET:"):
            raise UsageError(f"restore: '{name}' holds a credential; it is never restored from a measurement")
        argv += [name, str(before)]
    if len(argv) == 2:
        raise UsageError("restore: the step changed no config parameter")
    return argv


def plan(body: str, ctx: StepContext) -> Action:
    from engine.steps.redis_step import _plan_command

    blast = ctx.recorded_change(body)
    argv = restore_argv(blast)
    adapter = ctx.connections.redis()
    action = _plan_command(argv, adapter, ctx, adapter.endpoint.url)
    return Action(
        max(action.effect, Effect.WRITE),
        action.where,
        action.command,
        action.execute,
        measure=action.measure,
        changes=action.changes,
        predict=action.predict,
    )


register(
    StepKind(
        name="restore",
        schema=SCHEMA,
        plan=plan,
        static_effect=lambda body: Effect.WRITE,
        summary=lambda body: f"put back the config '{body}' changed",
        description="Put back the config values a CONFIG SET step of this run changed (measured before it ran).",
    )
)
