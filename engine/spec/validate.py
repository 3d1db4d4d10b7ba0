"""Checks the schema cannot express: references between steps, names used before they exist, effects.

Every problem becomes a SourceError pointing at the field, so `runbook validate` reads like a compiler.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from engine import template
from engine.errors import SourceError
from engine.spec.model import Effect
from engine.spec.yamlsource import Located

# Names every template may use besides params and registers.
BUILTINS = frozenset({"target", "run", "service", "paths", "params", "now"})
TENANT_PATTERN = "^[A-Za-z0-9_.-]+$"


def semantic_errors(located: Located, *, known_procedures: Callable[[str], bool] | None = None) -> list[SourceError]:
    from engine.steps import kinds

    data = located.data
    errors: list[SourceError] = []
    params: dict[str, Any] = data.get("params") or {}
    steps: list[dict[str, Any]] = data.get("steps") or []
    registry = kinds()

    for name, spec in params.items():
        errors.extend(_check_param(located, name, spec))

    ids: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.get("id") in ids:
            errors.append(
                located.error(
                    ("steps", i, "id"), f"duplicate step id '{step['id']}' (first at steps[{ids[step['id']]}])"
                )
            )
        else:
            ids[step["id"]] = i

    defined: set[str] = set()
    for i, step in enumerate(steps):
        present = [k for k in step if k in registry]
        if len(present) > 1:
            errors.append(
                located.error(("steps", i, present[1]), f"a step has exactly one action; found {', '.join(present)}")
            )
        kind_name = present[0] if present else None
        register = step.get("register")
        local = {"item", "loop"} if step.get("foreach") else set()
        available = set(params) | defined | BUILTINS | local

        def check(
            field: tuple[Any, ...],
            value: Any,
            names: set[str],
            *,
            expression: bool = False,
            extra: Iterable[str] = (),
            i: int = i,
        ) -> None:
            for sub_path, text in _strings(field, value):
                problem = template.check_syntax(text, expression=expression)
                if problem:
                    errors.append(located.error(sub_path, f"template syntax error: {problem}"))
                    continue
                used = template.expression_variables(text) if expression else template.variables(text)
                for unknown in sorted(used - names - set(extra)):
                    later = " (it is registered by a later step)" if unknown in _later_registers(steps, i) else ""
                    errors.append(
                        located.error(
                            sub_path,
                            f"undeclared name '{unknown}': not a param, an earlier register, or a built-in{later}",
                        )
                    )

        if step.get("when"):
            check(("steps", i, "when"), step["when"], available, expression=True)
        if step.get("foreach"):
            check(("steps", i, "foreach"), step["foreach"], set(params) | defined | BUILTINS, expression=True)
        if kind_name and registry[kind_name].expressions and isinstance(step[kind_name], dict):
            seen: set[str] = set()
            for key, expression in step[kind_name].items():
                check(("steps", i, kind_name, key), str(expression), available | seen, expression=True)
                seen.add(key)
        elif kind_name:
            check(("steps", i, kind_name), step[kind_name], available)
        own = {"result"} | ({register} if register else set())
        for j, expectation in enumerate(step.get("expect") or []):
            check(("steps", i, "expect", j, "that"), expectation.get("that", ""), available | own, expression=True)
            check(("steps", i, "expect", j, "message"), expectation.get("message", ""), available | own)
        if step.get("show"):
            check(("steps", i, "show"), step["show"], available | own)
        if (step.get("retry") or {}).get("until"):
            check(("steps", i, "retry", "until"), step["retry"]["until"], available | own, expression=True)
        if step.get("confirm"):
            check(("steps", i, "confirm"), step["confirm"], available)

        failure = step.get("on_failure")
        if isinstance(failure, dict) and failure.get("goto") not in ids:
            errors.append(
                located.error(("steps", i, "on_failure", "goto"), f"goto '{failure.get('goto')}': no step with that id")
            )
        if step.get("verifies") and step["verifies"] not in [s.get("id") for s in steps[:i]]:
            errors.append(
                located.error(("steps", i, "verifies"), f"verifies '{step['verifies']}': no earlier step with that id")
            )
        if kind_name == "call" and known_procedures is not None:
            callee = (step["call"] or {}).get("procedure", "")
            if not template.is_template(callee) and not known_procedures(callee):
                errors.append(located.error(("steps", i, "call", "procedure"), f"call '{callee}': no such procedure"))
        if kind_name == "prompt":
            wanted = (step["prompt"] or {}).get("param")
            if wanted not in params:
                errors.append(
                    located.error(
                        ("steps", i, "prompt", "param"), f"prompt answers param '{wanted}', which is not declared"
                    )
                )
        if kind_name:
            errors.extend(_check_effect(located, i, step, kind_name))
        if kind_name == "redis":
            errors.extend(_connection_state_errors(located, i, step["redis"]))
        if register:
            if register in params:
                errors.append(located.error(("steps", i, "register"), f"register '{register}' shadows a param"))
            defined.add(register)
    return errors


def _check_param(located: Located, name: str, spec: dict[str, Any]) -> list[SourceError]:
    errors = []
    path = ("params", name)
    if spec.get("pattern"):
        try:
            re.compile(spec["pattern"])
        except re.error as exc:
            errors.append(located.error((*path, "pattern"), f"invalid regular expression: {exc}"))
            return errors
    if "tenant" in name and spec.get("type", "string") == "string" and not spec.get("pattern") and not spec.get("enum"):
        errors.append(
            located.error(
                path,
                f"a tenant param must restrict its value: pattern: '{TENANT_PATTERN}' "
                "(glob and shell characters must never reach a key pattern or a shell)",
            )
        )
    if spec.get("default") is not None:
        from engine.spec.model import Param
        from engine.spec.params import convert

        try:
            convert(
                Param(
                    name=name,
                    type=spec.get("type", "string"),
                    pattern=spec.get("pattern"),
                    enum=tuple(spec["enum"]) if spec.get("enum") else None,
                    minimum=spec.get("minimum"),
                    maximum=spec.get("maximum"),
                ),
                spec["default"],
            )
        except ValueError as exc:
            errors.append(located.error((*path, "default"), f"default: {exc}"))
    if spec.get("required") and spec.get("default") is not None:
        errors.append(located.error((*path, "required"), "a required param cannot have a default"))
    return errors


def _check_effect(located: Located, i: int, step: dict[str, Any], kind_name: str) -> list[SourceError]:
    from engine.steps import get

    kind = get(kind_name)
    body = step[kind_name]
    from engine.spec.effects import static_effect as effect_of

    derived = effect_of(kind_name, body).effect  # None: a rendered value decides it (maybe a change)
    declared = Effect.parse(step["effect"]) if step.get("effect") else None
    errors = []
    if kind.effect_declared:  # ssh: the author says what a shell command does; a `read` must be proven
        derived = declared if declared is not None else Effect.DESTRUCTIVE
        if declared is Effect.READ:
            errors.extend(_unproven_read(located, ("steps", i, kind_name), body, kind.shell_fields))
    if declared is not None and derived is not None and declared < derived:
        errors.append(
            located.error(("steps", i, "effect"), f"declared '{declared}' but this {kind_name} step is {derived}")
        )
    effective = max(e for e in (declared, derived, Effect.READ) if e is not None)
    if derived is None and declared is None:
        effective = Effect.DESTRUCTIVE  # unknown until run time: the format asks for a confirm text
    if effective is not Effect.READ and not step.get("confirm"):
        what = (
            f"a {effective} step"
            if derived is not None or declared is not None
            else ("a step whose effect a rendered value decides (it may change something)")
        )
        errors.append(
            located.error(
                ("steps", i),
                f"{what} needs a 'confirm' text: the question the operator answers before it runs",
            )
        )
    return errors


def _unproven_read(located: Located, path: tuple[Any, ...], body: Any, fields: frozenset[str]) -> list[SourceError]:
    """Each shell field of a step labelled `read` must be proven read-only (run time checks again, rendered)."""
    from engine.adapters.shell_effects import classify_template

    errors = []
    for name in sorted(fields):
        text = body.get(name) if isinstance(body, dict) else None
        verdict = classify_template(text) if isinstance(text, str) else None
        if verdict is not None and not verdict:
            errors.append(located.error((*path, name), f"effect: read, but {verdict.reason}"))
    return errors


def _connection_state_errors(located: Located, i: int, body: Any) -> list[SourceError]:
    """SELECT, MULTI, CLIENT REPLY, ...: the engine owns the connection; a step never changes it."""
    command = body.get("command") if isinstance(body, dict) else None
    if not command:
        return []
    from engine.adapters.redis_effects import connection_state_command

    literal = []
    for arg in command[:2]:
        if template.is_template(str(arg)):
            break
        literal.append(str(arg))
    found = connection_state_command(literal) if literal else None
    if found is None:
        return []
    return [
        located.error(
            ("steps", i, "redis", "command", 0),
            f"{found} is not a step command: it changes the connection's own state (database, user, protocol, "
            "reply mode, transaction or subscriptions), which the engine owns; for another database, use a "
            "target whose URL names it (redis://host:port/N)",
        )
    ]


_TABLE: dict[str, Any] = {}


def _table() -> dict[str, Any]:
    if not _TABLE:
        from engine.adapters.redis_effects import bundled_table

        _TABLE.update(bundled_table())
    return _TABLE


def _strings(path: tuple[Any, ...], value: Any) -> Iterable[tuple[tuple[Any, ...], str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings((*path, i), item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings((*path, key), item)


def _later_registers(steps: list[dict[str, Any]], index: int) -> set[str]:
    return {s["register"] for s in steps[index + 1 :] if s.get("register")}
