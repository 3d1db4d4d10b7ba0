"""`runbook show`: a procedure as an operator reads it before running it, effects marked."""

from __future__ import annotations

from typing import Any

from engine import template
from engine.spec.model import Procedure
from engine.spec.params import convert
from engine.spec.validate import static_effect
from engine.steps import get


def describe(procedure: Procedure, variables: dict[str, str]) -> dict[str, Any]:
    """Params are checked as `run` checks them (a bad value is exit 2), but missing ones are allowed."""
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
        effect = static_effect(step.kind, step.action, step.effect) if step.kind != "block" else None
        body = _try_render(step.action, values) if step.kind != "block" else step.action
        steps.append(
            {
                "id": step.id,
                "name": step.name,
                "kind": step.kind,
                "effect": "-"
                if step.kind == "block"
                else str(effect)
                if effect is not None
                else "decided by the server",
                "summary": get(step.kind).summary(body) if isinstance(body, dict | list | str | int | float) else "",
                "when": step.when,
                "confirm": _try_render(step.confirm, values) if step.confirm else None,
                "source": str(step.location),
                "phase": phase,
                "depth": depth,
                **({"foreach": step.foreach} if step.foreach else {}),
                **({"sample": "sampled"} if step.sample else {}),
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


def _flatten(procedure: Procedure) -> list[tuple[Any, str, int]]:
    """Steps in reading order: blocks opened (their steps indented), then the finally steps."""
    out: list[tuple[Any, str, int]] = []

    def walk(steps: Any, phase: str, depth: int) -> None:
        for step in steps:
            out.append((step, phase, depth))
            if step.kind == "block":
                walk(step.action, phase, depth + 1)

    walk(procedure.steps, "steps", 0)
    walk(procedure.finally_steps, "finally", 0)
    return out


def _try_render(value: Any, values: dict[str, Any]) -> Any:
    def walk(item: Any) -> Any:
        if isinstance(item, str):
            try:
                return template.render(item, values)
            except template.TemplateError:
                return item  # names only known at run time stay as written
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        return item

    return walk(value)


_MARK = {"read": "[read]", "write": "[WRITE]", "destructive": "[DESTRUCTIVE]"}


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
        if s["when"]:
            lines.append(f"      when: {s['when']}")
        if s["confirm"]:
            lines.append(f"      confirm: {s['confirm']}")
    return "\n".join(lines)
