"""`compute:` steps: derive values from earlier results (rates, percentages, gradings) without I/O.

Each entry is an expression; later entries see earlier ones. The result is the mapping of names to
values, so one step can compute several figures and expectations can grade them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.spec import template
from engine.spec.model import Effect
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.run.context import StepContext

SCHEMA = {
    "type": "object",
    "minProperties": 1,
    "propertyNames": {"pattern": "^[a-z_][a-z0-9_]*$"},
    "additionalProperties": {"type": ["string", "number", "boolean"]},
    "description": "name: expression pairs, evaluated in order (no {{ }} needed); result is the mapping.",
}


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    def execute() -> dict[str, Any]:
        scope = dict(ctx.values)
        out: dict[str, Any] = {}
        for name, expression in body.items():
            try:
                value = template.evaluate(expression, scope) if isinstance(expression, str) else expression
            except template.TemplateError as exc:
                raise UsageError(f"{ctx.step.location}: compute.{name}: {exc}") from None
            out[name] = scope[name] = value
        return out

    return Action(Effect.READ, "local", "compute " + ", ".join(body), execute)


class ComputeKind(StepKind):
    name = "compute"
    schema = SCHEMA
    description = "Derive values from earlier results."
    expressions = True

    plan = staticmethod(plan)

    def summary(self, body: Any) -> str:
        return "compute " + ", ".join(body)


register(ComputeKind())
