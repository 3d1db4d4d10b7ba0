"""`checklist:` steps: things only a human can do, each ticked and recorded (with --yes: by flag)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import StoppedError
from engine.spec.model import Effect
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.run.context import StepContext

SCHEMA = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "string"},
    "description": "Items the operator confirms one by one.",
}


def plan(body: list[str], ctx: StepContext) -> Action:
    def execute() -> list[dict[str, Any]]:
        ticked = []
        for item in body:
            if ctx.operator.assume_yes:
                ticked.append({"item": item, "done": True, "by": "flag"})
                continue
            if not ctx.operator.interactive:
                raise StoppedError(f"checklist item '{item}': no terminal to tick it on and no --yes")
            done = ctx.operator.confirm(f"  [ ] {item} - done?")
            ticked.append({"item": item, "done": done, "by": ctx.operator.name})
            if not done:  # the operator says it is not done: the procedure stops here, as for a refusal
                raise StoppedError(f"checklist item not done: {item}")
        return ticked

    return Action(Effect.READ, "operator", "checklist: " + "; ".join(body), execute)


class ChecklistKind(StepKind):
    name = "checklist"
    schema = SCHEMA
    description = "Operator-ticked items."
    samplable = False

    plan = staticmethod(plan)

    def summary(self, body: Any) -> str:
        return f"checklist ({len(body)} items)"


register(ChecklistKind())
