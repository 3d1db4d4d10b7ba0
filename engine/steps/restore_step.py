"""`restore: <step id>`: put back the config values a CONFIG SET step of this run changed.

The values are the ones measured just before that step ran (its blast radius), so a cleanup restores
"what it was", not what the author guessed it was. Usually a `finally:` step; when the step it
restores was approved in this run, that approval covers the restore (the transcript says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.spec.model import Effect
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.errors import SourceError
    from engine.run.context import StepContext
    from engine.spec.kinds import CheckContext
    from engine.spec.yamlsource import Located

SCHEMA = {
    "type": "string",
    "pattern": "^[a-z0-9][a-z0-9_-]*$",
    "description": "Id of a `redis: {command: [CONFIG, SET, ...]}` step whose old values to put back.",
}


def restore_argv(blast: Mapping[str, Any] | None) -> list[str]:
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
        apply=action.apply,
    )


class RestoreKind(StepKind):
    name = "restore"
    reverts = True
    schema = SCHEMA
    description = "Put back the config values a CONFIG SET step of this run changed (measured before it ran)."
    needs_confirm = False

    plan = staticmethod(plan)

    def static_effect(self, body: Any) -> Effect | None:
        return Effect.WRITE

    def summary(self, body: Any) -> str:
        return f"put back the config '{body}' changed"

    def validate(self, body: Any, located: Located, path: tuple[Any, ...], context: CheckContext) -> list[SourceError]:
        """`restore:` names a CONFIG SET step of this procedure (outside the finally steps)."""
        target = next((s for p, s in context.every if s.get("id") == body and p[0] == "steps"), None)
        if target is None:
            return [located.error((*path, "restore"), f"restore '{body}': no step with that id among the steps")]
        redis = target.get("redis")
        argv = (redis.get("command") or []) if isinstance(redis, dict) else []
        if [str(a).lower() for a in argv[:2]] != ["config", "set"]:
            return [
                located.error((*path, "restore"), f"restore '{body}': only a redis CONFIG SET step can be restored")
            ]
        return []


register(RestoreKind())
