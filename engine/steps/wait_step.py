"""`wait:` steps: let time pass (rate sampling, settling after a restart). Reads nothing, changes nothing."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from engine.spec.model import Effect
from engine.spec.params import parse_wait
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.run.context import StepContext

SCHEMA = {"type": ["string", "number"], "format": "duration", "description": "How long to wait: 5s, 250ms, 1m."}


def plan(body: Any, ctx: StepContext) -> Action:
    seconds = parse_wait(body)  # a rendered '10**14d' is refused, not slept on

    def execute() -> dict[str, float]:
        time.sleep(seconds)
        return {"waited_s": seconds}

    return Action(Effect.READ, "local", f"wait {seconds:g}s", execute)


class WaitKind(StepKind):
    name = "wait"
    schema = SCHEMA
    description = "Sleep for a duration."

    plan = staticmethod(plan)

    def summary(self, body: Any) -> str:
        return f"wait {body}"

    def typed_fields(self, body: Any) -> list[tuple[tuple[Any, ...], Any, str]]:
        return [((self.name,), body, "duration")]  # the body itself is the duration


register(WaitKind())
