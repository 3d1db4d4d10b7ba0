"""`prompt:` steps: the operator supplies a value (a backup file, a decision); recorded in the transcript.

The value comes from the named param when it was given (`--var`), else from the terminal; with
neither, the run stops (exit 3) rather than wait for an answer that cannot come.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import StoppedError
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
    "required": ["message", "param"],
    "properties": {
        "message": {"type": "string", "description": "The question shown to the operator."},
        "param": {"type": "string", "description": "The declared param this answers; --var NAME=VALUE pre-answers it."},
    },
}


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    name = body["param"]
    param = ctx.procedure.param(name)

    def execute() -> Any:
        given = ctx.values.get(name)
        if given is not None:
            return given
        if not ctx.operator.interactive:
            raise StoppedError(f"{body['message']}: no terminal; pass --var {name}=VALUE")
        from engine.spec.params import convert

        while True:
            raw = ctx.operator.ask(
                body["message"], secret=bool(param and param.secret), pattern=param.pattern if param else None
            )
            try:
                value = convert(param, raw) if param else raw
            except ValueError as exc:
                ctx.operator.tell(f"  {exc}")
                continue
            if param is not None and param.secret:
                ctx.redactor.add(name, str(value))
            ctx.values[name] = value  # the answer is the param's value from here on, as if given by --var
            return value

    return Action(Effect.READ, "operator", f"ask: {body['message']}", execute)


class PromptKind(StepKind):
    name = "prompt"
    schema = SCHEMA
    description = "Ask the operator for a value."
    samplable = False

    plan = staticmethod(plan)

    def summary(self, body: Any) -> str:
        return f"ask: {body['message']}"

    def prompted_params(self, body: Any) -> frozenset[str]:
        param = body.get("param") if isinstance(body, dict) else None
        return frozenset({param}) if isinstance(param, str) else frozenset()

    def validate(self, body: Any, located: Located, path: tuple[Any, ...], context: CheckContext) -> list[SourceError]:
        wanted = (body or {}).get("param")
        if wanted in context.params:
            return []
        return [located.error((*path, "prompt", "param"), f"prompt answers param '{wanted}', which is not declared")]


register(PromptKind())
