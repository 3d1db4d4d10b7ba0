"""Checks the schema cannot express: references between steps, names used before they exist, effects.

Every problem becomes a SourceError pointing at the field, so `runbook validate` reads like a compiler.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from engine.errors import SourceError
from engine.spec import template
from engine.spec.kinds import CheckContext, KindInfo, KindTable, table
from engine.spec.model import Effect
from engine.spec.yamlsource import Located, format_path

# Names every template may use besides params and registers.
BUILTINS = frozenset({"target", "run", "service", "paths", "params", "now", "steps", "topology"})
TENANT_PATTERN = "^[A-Za-z0-9_.-]+$"


def semantic_errors(
    located: Located, *, known_procedures: Callable[[str], bool] | None = None, kinds: KindTable | None = None
) -> list[SourceError]:
    """`kinds`: the step kinds to check against (default: the registry the engine installed)."""
    data = located.data
    errors: list[SourceError] = []
    registry = table() if kinds is None else kinds
    params: dict[str, Any] = data.get("params") or {}
    for name, spec in params.items():
        errors.extend(_check_param(located, name, spec))
    nested = frozenset(name for name, kind in registry.items() if kind.nested)
    every = [
        *_walk(data.get("steps") or [], ("steps",), nested),
        *_walk(data.get("finally") or [], ("finally",), nested),
    ]
    ids: dict[str, tuple[Any, ...]] = {}
    for path, step in every:
        if step.get("id") in ids:
            errors.append(
                located.error(
                    (*path, "id"), f"duplicate step id '{step['id']}' (first at {format_path(ids[step['id']])})"
                )
            )
        else:
            ids[step["id"]] = path
    checker = _StepChecker(located, registry, CheckContext(params, known_procedures, every), errors)
    checker.walk(data.get("steps") or [], ("steps",), set(), cleanup=False)
    checker.walk(data.get("finally") or [], ("finally",), set(), cleanup=True)
    return errors


def _walk(
    steps: list[dict[str, Any]], path: tuple[Any, ...], nested: frozenset[str]
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every step with its path, those inside blocks included, in the order they can run."""
    out = []
    for i, step in enumerate(steps):
        out.append(((*path, i), step))
        for name in nested:
            if isinstance(step.get(name), list):
                out.extend(_walk(step[name], (*path, i, name), nested))
    return out


class _StepChecker:
    """The per-step checks, over a list of steps (the procedure's, a block's, the finally steps)."""

    def __init__(self, located: Located, registry: KindTable, context: CheckContext, errors: list[SourceError]):
        self.located, self.registry, self.context, self.errors = located, registry, context, errors
        self.params = context.params
        self.every = context.every
        self.defined: set[str] = set()  # registers of the steps met so far
        self.seen_ids: list[str | None] = []

    def walk(self, steps: list[dict[str, Any]], path: tuple[Any, ...], local: set[str], *, cleanup: bool) -> None:
        for i, step in enumerate(steps):
            self.step((*path, i), step, steps, i, local, cleanup=cleanup)

    def later_registers(self, path: tuple[Any, ...]) -> set[str]:
        index = next(n for n, (p, _) in enumerate(self.every) if p == path)
        return {s["register"] for _, s in self.every[index + 1 :] if s.get("register")}

    def step(
        self,
        path: tuple[Any, ...],
        step: dict[str, Any],
        siblings: list[dict[str, Any]],
        i: int,
        outer_local: set[str],
        *,
        cleanup: bool,
    ) -> None:
        located, errors, registry, params = self.located, self.errors, self.registry, self.params
        present = [k for k in step if k in registry]
        if len(present) > 1:
            errors.append(
                located.error((*path, present[1]), f"a step has exactly one action; found {', '.join(present)}")
            )
        kind = registry[present[0]] if present else None
        kind_name = kind.name if kind is not None else ""
        body: Any = step[kind_name] if kind is not None else None
        register = step.get("register")
        local = outer_local | ({"item", "loop"} if step.get("foreach") else set())
        if kind is not None:
            local = local | kind.scope_names(body)  # e.g. a change on several nodes: `node`
        available = set(params) | self.defined | BUILTINS | local

        def check(
            field: tuple[Any, ...],
            value: Any,
            names: set[str],
            *,
            expression: bool = False,
            extra: Iterable[str] = (),
        ) -> None:
            for sub_path, text in _strings(field, value):
                problem = template.check_syntax(text, expression=expression)
                if problem:
                    errors.append(located.error(sub_path, f"template syntax error: {problem}"))
                    continue
                used = template.expression_variables(text) if expression else template.variables(text)
                for unknown in sorted(used - names - set(extra)):
                    later = " (it is registered by a later step)" if unknown in self.later_registers(path) else ""
                    errors.append(
                        located.error(
                            sub_path,
                            f"undeclared name '{unknown}': not a param, an earlier register, or a built-in{later}",
                        )
                    )

        if step.get("when"):
            check((*path, "when"), step["when"], available, expression=True)
        if step.get("foreach"):
            check(
                (*path, "foreach"),
                step["foreach"],
                set(params) | self.defined | BUILTINS | outer_local,
                expression=True,
            )
        if kind is not None and kind.nested:
            before = set(self.defined)
            self.walk(body, (*path, kind_name), local, cleanup=cleanup)
            inner = {s.get("register") for s in body if s.get("register")}
            if step.get("foreach"):
                self.defined = before  # each item's registers live in that item's pass only
            else:
                self.defined |= inner
        elif kind is not None and kind.expressions and isinstance(body, dict):
            seen: set[str] = set()
            for key, expression in body.items():
                check((*path, kind_name, key), str(expression), available | seen, expression=True)
                seen.add(key)
        elif kind is not None:
            check((*path, kind_name), body, available)
        own = {"result"} | ({register} if register else set())
        for j, expectation in enumerate(step.get("expect") or []):
            check((*path, "expect", j, "that"), expectation.get("that", ""), available | own, expression=True)
            check((*path, "expect", j, "message"), expectation.get("message", ""), available | own)
        if step.get("show"):
            check((*path, "show"), step["show"], available | own)
        for j, figure in enumerate(step.get("impact") or []):
            check((*path, "impact", j, "value"), figure.get("value", ""), available | own, expression=True)
            if figure.get("when"):
                check((*path, "impact", j, "when"), figure["when"], available | own, expression=True)
        for j, follow in enumerate(step.get("follow_up") or []):
            check((*path, "follow_up", j, "text"), follow.get("text", ""), available | own)
            if follow.get("when"):
                check((*path, "follow_up", j, "when"), follow["when"], available | own, expression=True)
        if (step.get("retry") or {}).get("until"):
            check((*path, "retry", "until"), step["retry"]["until"], available | own, expression=True)
        if step.get("confirm"):
            check((*path, "confirm"), step["confirm"], available)
        for field, value, _ in _typed_fields(step, kind):
            if template.is_template(value):
                check(field_path(path, field), value, available)
        errors.extend(typed_field_errors(located, path, step, kind))

        failure = step.get("on_failure")
        if isinstance(failure, dict):
            if cleanup:
                errors.append(located.error((*path, "on_failure"), "a finally step cannot goto: every cleanup runs"))
            elif failure.get("goto") not in [s.get("id") for s in siblings]:
                errors.append(
                    located.error(
                        (*path, "on_failure", "goto"),
                        f"goto '{failure.get('goto')}': no step with that id in the same list of steps",
                    )
                )
        if step.get("verifies") and step["verifies"] not in self.seen_ids:
            errors.append(
                located.error((*path, "verifies"), f"verifies '{step['verifies']}': no earlier step with that id")
            )
        if kind is not None:
            errors.extend(kind.validate(body, located, path, self.context))
        if step.get("sample") and kind is not None:
            errors.extend(sample_errors(located, path, step, kind))
        if kind is not None and kind.needs_confirm and not kind.nested:
            errors.extend(_check_effect(located, path, step, kind))
        if register:
            if register in params:
                errors.append(located.error((*path, "register"), f"register '{register}' shadows a param"))
            elif register in BUILTINS:
                errors.append(located.error((*path, "register"), f"register '{register}' shadows a built-in name"))
            self.defined.add(register)
        self.seen_ids.append(step.get("id"))


# -- fields that take numbers, durations and counts (templates allowed) --------------------------------------


def _typed_fields(step: dict[str, Any], kind: KindInfo | None) -> list[tuple[tuple[Any, ...], Any, str]]:
    """(field path inside the step, value, 'duration' | 'count') for each such field present."""
    out: list[tuple[tuple[Any, ...], Any, str]] = []
    retry: dict[str, Any] = step["retry"] if isinstance(step.get("retry"), dict) else {}
    for key, what in (("attempts", "count"), ("interval", "duration"), ("timeout", "duration")):
        if key in retry:
            out.append((("retry", key), retry[key], what))
    sample: dict[str, Any] = step["sample"] if isinstance(step.get("sample"), dict) else {}
    for key, what in (("every", "duration"), ("for", "duration"), ("count", "count")):
        if key in sample:
            out.append((("sample", key), sample[key], what))
    if kind is not None:  # the kind's own number-like options: a literal is checked now, a template when rendered
        out.extend(kind.typed_fields(step[kind.name]))
    return out


def field_path(path: tuple[Any, ...], field: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*path, *field)


def typed_field_errors(
    located: Located, path: tuple[Any, ...], step: dict[str, Any], kind: KindInfo | None
) -> list[SourceError]:
    """A literal that is not the number it must be is an error now; a template is checked when it renders."""
    from engine.spec.params import parse_count, parse_duration

    errors = []
    for field, value, what in _typed_fields(step, kind):
        if template.is_template(value):
            continue
        try:
            (parse_count if what == "count" else parse_duration)(value)
        except ValueError as exc:
            expected = "integer" if what == "count" else "duration"
            got = f"{_json_type(value)} {value!r}"
            errors.append(located.error(field_path(path, field), f"expected {expected}, got {got}: {exc}"))
    return errors


def _json_type(value: Any) -> str:
    return {str: "string", bool: "boolean", int: "integer", float: "number"}.get(type(value), type(value).__name__)


def sample_errors(located: Located, path: tuple[Any, ...], step: dict[str, Any], kind: KindInfo) -> list[SourceError]:
    """Only reads are sampled: running a change every second is never what the author meant."""
    from engine.spec.effects import effect_of_kind

    kind_name = kind.name
    plain = kind.samplable and not kind.nested
    effect = effect_of_kind(kind, step[kind_name]).effect if plain else None
    if not plain or (effect is not None and effect is not Effect.READ):
        return [
            located.error((*path, "sample"), f"sample: a {kind_name} step that is not a plain read cannot be sampled")
        ]
    if step.get("retry"):
        return [
            located.error((*path, "sample"), "sample and retry do not go together: sample already repeats the step")
        ]
    sample = step["sample"]
    every = sample.get("every", 1)
    if "for" in sample and not template.is_template(every):
        from engine.spec.params import parse_duration

        try:
            zero = parse_duration(every) <= 0
        except ValueError:
            zero = False  # reported by typed_field_errors
        if zero:
            return [located.error((*path, "sample", "every"), "sample: `every` must be more than 0 with `for`")]
    return []


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


def _check_effect(located: Located, path: tuple[Any, ...], step: dict[str, Any], kind: KindInfo) -> list[SourceError]:
    from engine.spec.effects import effect_of_kind

    kind_name = kind.name
    body = step[kind_name]
    derived = effect_of_kind(kind, body).effect  # None: a rendered value decides it (maybe a change)
    declared = Effect.parse(step["effect"]) if step.get("effect") else None
    errors = []
    if kind.effect_declared:  # ssh: the author says what a shell command does; a `read` must be proven
        derived = declared if declared is not None else Effect.DESTRUCTIVE
        if declared is Effect.READ:
            errors.extend(_unproven_read(located, (*path, kind_name), body, kind.shell_fields))
    if declared is not None and derived is not None and declared < derived:
        errors.append(located.error((*path, "effect"), f"declared '{declared}' but this {kind_name} step is {derived}"))
    floor = kind.minimum_effect(body) if derived is None and not kind.effect_declared else None
    if declared is not None and floor is not None and declared < floor:
        errors.append(
            located.error(
                (*path, "effect"),
                f"declared '{declared}' but this {kind_name} step is at least a {floor}, whatever its values render to",
            )
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
                path,
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


def _strings(path: tuple[Any, ...], value: Any) -> Iterable[tuple[tuple[Any, ...], str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings((*path, i), item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings((*path, key), item)
