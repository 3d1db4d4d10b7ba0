"""`block:` steps: a group of steps run as one, so foreach, when, retry and on_failure apply to all of them.

The runner walks the inner steps itself (they are steps, with their own gates and records); this
module only declares the body's shape and what `show` prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.run.context import StepContext

SCHEMA = {
    "type": "array",
    "minItems": 1,
    "items": {"$ref": "#/$defs/step"},
    "description": "Steps run in order as one step; the registered result maps each inner register to its value.",
}


def plan(body: Any, ctx: StepContext) -> Action:  # pragma: no cover - the runner never plans a block
    raise UsageError(f"{ctx.step.location}: a block is walked by the runner, not planned")


class BlockKind(StepKind):
    name = "block"
    schema = SCHEMA
    description = "A group of steps run as one (with foreach, when, retry, on_failure)."
    nested = True
    samplable = False
    needs_confirm = False

    plan = staticmethod(plan)

    def summary(self, body: Any) -> str:
        return f"block of {len(body)} steps"


register(BlockKind())
