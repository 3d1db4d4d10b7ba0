"""`runbook show`: a procedure as an operator reads it before running it, effects marked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import RunbookError
from engine.spec import template
from engine.spec.effects import StaticEffect, static_effect
from engine.spec.model import Effect, Procedure
from engine.spec.params import convert
from engine.steps import get

RUN_TIME = "decided at run time"


def describe(
    procedure: Procedure, variables: dict[str, str], load: Callable[[str], Procedure] | None = None
) -> dict[str, Any]:
    """Params are checked as `run` checks them (a bad value is exit 2), but missing ones are allowed.

    With `load`, a `call` step is marked with the strongest effect among the callee's steps (each is
    still gated on its own when it runs): a call of redis/restore-rdb is not a read.
    """
    from engine.spec.params import resolve

    resolve(
        procedure.params,
        variables,
        procedure=procedure.id,
        interactive_later=frozenset(p.name for p in procedure.params),
    )
    values: dict[str, Any] = {}
    for param in procedure.params:
        raw = variables.get(param.name, param.default)
        if raw is not None:
            try:
                values[param.name] = convert(param, raw)
            except ValueError:
                values[param.name] = raw
    shown = {
        p.name: f"[SECRET:{p.name}]" if p.secret and p.name in values else values.get(p.name)
        for p in procedure.params
        if p.name in values
    }
    values = {**values, **shown}  # what is rendered for display never holds a secret
    steps = []
    for step, phase, depth in _flatten(procedure):
        errors: list[str] = []
        effect: StaticEffect | None = None
        kind = get(step.kind)
        callees: tuple[str, ...] = ()
        if kind.nested:
            body = step.action
        else:
            body = _try_render(step.action, values, errors)
            callees = kind.called_procedures(body)
            if callees and load is not None:
                effect = effect_of_calls(kind.called_procedures(step.action), load, frozenset({procedure.id}))
            else:
                effect = static_effect(step.kind, step.action, step.effect, rendered=body)
        confirm = _try_render(step.confirm, values, errors) if step.confirm else None
        for field in ("show", "when"):
            if getattr(step, field):
                _try_render(getattr(step, field), values, errors, expression=field == "when")
        steps.append(
            {
                "id": step.id,
                "name": step.name,
                "kind": step.kind,
                "effect": "-" if effect is None else str(effect.effect) if effect.effect is not None else RUN_TIME,
                # decided at run time: what it is with the values given, when those tell it (else null)
                "effect_for_values": str(effect.for_values) if effect and effect.for_values is not None else None,
                "summary": kind.summary(body) if isinstance(body, dict | list | str | int | float) else "",
                "when": step.when,
                "confirm": confirm,
                "source": str(step.location),
                "template_errors": errors,
                "phase": phase,
                "depth": depth,
                **({"foreach": step.foreach} if step.foreach else {}),
                **({"sample": "sampled"} if step.sample else {}),
                **({"calls": list(callees)} if callees else {}),  # procedures it runs (a call step)
            }
        )
    return {
        "id": procedure.id,
        "title": procedure.title,
        "section": procedure.section,
        "description": procedure.description.strip(),
        "file": procedure.file,
        "requires": list(procedure.requires),
        "params": [
            {
                "name": p.name,
                "type": p.type,
                "required": p.required,
                "default": p.default,
                "pattern": p.pattern,
                "secret": p.secret,
                "description": p.description,
                "value": "[SECRET]" if p.secret and p.name in values else values.get(p.name),
            }
            for p in procedure.params
        ],
        "steps": steps,
    }


def effect_of_calls(
    callees: tuple[str, ...], load: Callable[[str], Procedure], calling: frozenset[str]
) -> StaticEffect:
    """The strongest effect a step running procedures can have: their steps (and theirs), as `validate` reads them."""
    strongest = Effect.READ
    for callee_id in callees:
        if template.is_template(callee_id) or callee_id in calling:
            return StaticEffect(None)  # the callee is named at run time (or calls itself: the runner stops that)
        try:
            callee = load(callee_id)
        except RunbookError:
            return StaticEffect(None)
        for inner in callee.all_steps():
            kind = get(inner.kind)
            if kind.nested:
                continue  # its steps are in all_steps() too
            inner_callees = kind.called_procedures(inner.action)
            if inner_callees:
                found = effect_of_calls(inner_callees, load, calling | {callee_id})
            else:
                found = static_effect(inner.kind, inner.action, inner.effect)
            if found.effect is None:
                return StaticEffect(None)  # the call's params may decide it
            strongest = max(strongest, found.effect)
    return StaticEffect(strongest)


def _flatten(procedure: Procedure) -> list[tuple[Any, str, int]]:
    """Steps in reading order: blocks opened (their steps indented), then the finally steps."""
    out: list[tuple[Any, str, int]] = []

    def walk(steps: Any, phase: str, depth: int) -> None:
        for step in steps:
            out.append((step, phase, depth))
            if get(step.kind).nested:
                walk(step.action, phase, depth + 1)

    walk(procedure.steps, "steps", 0)
    walk(procedure.finally_steps, "finally", 0)
    return out


def _try_render(value: Any, values: dict[str, Any], errors: list[str], *, expression: bool = False) -> Any:
    """Render what the values given can render; a name known only at run time stays as written.

    A template whose every name is known here and still fails is broken: it goes to `errors`.
    """

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            names = template.expression_variables(item) if expression else template.variables(item)
            try:
                return template.evaluate(item, values) if expression else template.render(item, values)
            except template.TemplateError as exc:
                if not names - set(values):
                    errors.append(f"{item.strip()[:80]}: {exc}")
                return item  # names only known at run time stay as written
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        return item

    return walk(value)


_MARK = {
    "read": "[read]",
    "write": "[WRITE]",
    "destructive": "[DESTRUCTIVE]",
    RUN_TIME: f"[{RUN_TIME}]",
    "-": "[block]",
}


def render_text(data: dict[str, Any]) -> str:
    lines = [f"{data['id']}: {data['title']}", f"  runbook section: {data['section']}", f"  file: {data['file']}"]
    if data["description"]:
        lines.append(f"  {data['description']}")
    if data["requires"]:
        lines.append(f"  requires: {', '.join(data['requires'])}")
    if data["params"]:
        lines.append("params:")
        for p in data["params"]:
            flags = ", ".join(x for x in ("required" if p["required"] else "", "secret" if p["secret"] else "") if x)
            default = f" (default {p['default']})" if p["default"] is not None else ""
            value = f" = {p['value']}" if p["value"] is not None else ""
            lines.append(
                f"  {p['name']}: {p['type']}{default}{' [' + flags + ']' if flags else ''}{value}  {p['description']}"
            )
    lines.append("steps:")
    for i, s in enumerate(data["steps"], 1):
        if s.get("phase") == "finally" and (i == 1 or data["steps"][i - 2].get("phase") != "finally"):
            lines.append("finally (always runs, however the steps end):")
        mark = _MARK.get(s["effect"], f"[{s['effect']}]")
        indent = "    " * s.get("depth", 0)
        lines.append(f"  {i:>2}. {indent}{mark:<14} {s['id']}: {s['name']}")
        if s["summary"]:
            lines.append(f"      {s['summary']}")
        if s.get("calls") and s["effect"] != "read":
            lines.append("      (the strongest effect among its steps; each is gated on its own when it runs)")
        if s["effect"] == RUN_TIME:
            known = _MARK[s["effect_for_values"]] if s["effect_for_values"] else "known only at run time"
            lines.append(f"      effect: depends on rendered values, decided when the step runs; here: {known}")
        for error in s["template_errors"]:
            lines.append(f"      template error: {error}")
        if s["when"]:
            lines.append(f"      when: {s['when']}")
        if s["confirm"]:
            lines.append(f"      confirm: {s['confirm']}")
    return "\n".join(lines)
