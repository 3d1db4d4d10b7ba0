"""`note:` steps: an instruction to the operator ("notify affected tenants"), shown and recorded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.spec.model import Effect
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.run.context import StepContext

SCHEMA = {"type": "string", "description": "Text shown to the operator and kept in the transcript."}


def plan(body: Any, ctx: StepContext) -> Action:
    def execute() -> str:
        ctx.operator.tell(f"  NOTE: {body}")
        return str(body)

    return Action(Effect.READ, "operator", f"note: {body}", execute)


class NoteKind(StepKind):
    name = "note"
    schema = SCHEMA
    description = "Tell the operator something; no answer needed."

    plan = staticmethod(plan)

    def summary(self, body: Any) -> str:
        return f"note: {body}"


register(NoteKind())
