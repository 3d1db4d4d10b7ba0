"""`call:` steps: run another procedure with params, inside this run (same gate, same transcript)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.spec import template
from engine.spec.model import Effect
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.errors import SourceError
    from engine.run.context import StepContext
    from engine.spec.kinds import CheckContext
    from engine.spec.yamlsource import Located

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["procedure"],
    "properties": {
        "procedure": {"type": "string", "description": "Id of the procedure to run, e.g. redis/verify-checklist."},
        "params": {"type": "object", "description": "Its params (templates allowed)."},
    },
}


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    # The call itself changes nothing: each step of the callee goes through the gate on its own.
    return Action(
        Effect.READ,
        "procedure",
        f"call {body['procedure']}",
        lambda: ctx.call_procedure(body["procedure"], dict(body.get("params") or {})),
    )


class CallKind(StepKind):
    name = "call"
    schema = SCHEMA
    description = "Run another procedure as part of this one."
    samplable = False

    plan = staticmethod(plan)

    def summary(self, body: Any) -> str:
        return f"call {body['procedure']}"

    def called_procedures(self, body: Any) -> tuple[str, ...]:
        callee = body.get("procedure") if isinstance(body, dict) else None
        return (callee,) if isinstance(callee, str) else ()

    def validate(self, body: Any, located: Located, path: tuple[Any, ...], context: CheckContext) -> list[SourceError]:
        """A literal callee must be a procedure of the catalog (when the catalog is known)."""
        callee = (body or {}).get("procedure", "")
        if context.known_procedures is None or template.is_template(callee) or context.known_procedures(callee):
            return []
        return [located.error((*path, "call", "procedure"), f"call '{callee}': no such procedure")]


register(CallKind())
