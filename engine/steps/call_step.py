"""`call:` steps: run another procedure with params, inside this run (same gate, same transcript)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.spec.model import Effect
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.context import StepContext

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


register(
    StepKind(
        name="call",
        schema=SCHEMA,
        plan=plan,
        summary=lambda b: f"call {b['procedure']}",
        description="Run another procedure as part of this one.",
    )
)
