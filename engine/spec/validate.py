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
from engine.spec.yamlsource import Located, format_path

# Names every template may use besides params and registers.
BUILTINS = frozenset({"target", "run", "service", "paths", "params", "now", "steps", "topology"})
TENANT_PATTERN = "^[A-Za-z0-9_.-]+$"


def semantic_errors(located: Located, *, known_procedures: Callable[[str], bool] | None = None) -> list[SourceError]:
    data = located.data
    errors: list[SourceError] = []
    params: dict[str, Any] = data.get("params") or {}
    for name, spec in params.items():
        errors.extend(_check_param(located, name, spec))
    every = [*_walk(data.get("steps") or [], ("steps",)), *_walk(data.get("finally") or [], ("finally",))]
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
    checker = _StepChecker(located, params, known_procedures, errors, every)
    checker.walk(data.get("steps") or [], ("steps",), set(), cleanup=False)
    checker.walk(data.get("finally") or [], ("finally",), set(), cleanup=True)
    return errors


def _walk(steps: list[dict[str, Any]], path: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every step with its path, those inside blocks included, in the order they can run."""
    out = []
    for i, step in enumerate(steps):
        out.append(((*path, i), step))
        if isinstance(step.get("block"), list):
            out.extend(_walk(step["block"], (*path, i, "block")))
    return out


class _StepChecker:
    """The per-step checks, over a list of steps (the procedure's, a block's, the finally steps)."""

    def __init__(
        self,
        located: Located,
        params: dict[str, Any],
        known_procedures: Callable[[str], bool] | None,
        errors: list[SourceError],
        every: list[tuple[tuple[Any, ...], dict[str, Any]]],
    ):
        from engine.steps import kinds

        self.located, self.params, self.known_procedures, self.errors = located, params, known_procedures, errors
        self.registry = kinds()
        self.every = every
        self.defined: set[str] = set()  # registers of the steps met so far
        self.seen_ids: list[str] = []

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
        kind_name = present[0] if present else None
        register = step.get("register")
        local = outer_local | ({"item", "loop"} if step.get("foreach") else set())
        redis_body = step.get("redis")
        if isinstance(redis_body, dict) and redis_body.get("on") in ("primary", "replicas", "all", "each primary"):
            local = local | {"node", "loop"}  # a change on several nodes runs once per node
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
        if kind_name == "block":
            before = set(self.defined)
            self.walk(step["block"], (*path, "block"), local, cleanup=cleanup)
            inner = {s.get("register") for s in step["block"] if s.get("register")}
            if step.get("foreach"):
                self.defined = before  # each item's registers live in that item's pass only
            else:
                self.defined |= inner
        elif kind_name and registry[kind_name].expressions and isinstance(step[kind_name], dict):
            seen: set[str] = set()
            for key, expression in step[kind_name].items():
                check((*path, kind_name, key), str(expression), available | seen, expression=True)
                seen.add(key)
        elif kind_name:
            check((*path, kind_name), step[kind_name], available)
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
        for field, value, _ in _typed_fields(step):
            if template.is_template(value):
                check(field_path(path, field), value, available)
        errors.extend(typed_field_errors(located, path, step))

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
        if kind_name == "call" and self.known_procedures is not None:
            callee = (step["call"] or {}).get("procedure", "")
            if not template.is_template(callee) and not self.known_procedures(callee):
                errors.append(located.error((*path, "call", "procedure"), f"call '{callee}': no such procedure"))
        if kind_name == "prompt":
            wanted = (step["prompt"] or {}).get("param")
            if wanted not in params:
                errors.append(
                    located.error((*path, "prompt", "param"), f"prompt answers param '{wanted}', which is not declared")
                )
        if kind_name == "restore":
            errors.extend(restore_errors(located, path, step, self.every))
        if step.get("sample") and kind_name:
            errors.extend(sample_errors(located, path, step, kind_name))
        if kind_name and kind_name not in ("block", "restore"):
            errors.extend(_check_effect(located, path, step, kind_name))
        if kind_name == "redis":
            errors.extend(_connection_state_errors(located, path, step["redis"]))
        if register:
            if register in params:
                errors.append(located.error((*path, "register"), f"register '{register}' shadows a param"))
            elif register in BUILTINS:
                errors.append(located.error((*path, "register"), f"register '{register}' shadows a built-in name"))
            self.defined.add(register)
        self.seen_ids.append(step.get("id"))


# -- fields that take numbers, durations and counts (templates allowed) --------------------------------------


def _typed_fields(step: dict[str, Any]) -> list[tuple[tuple[Any, ...], Any, str]]:
    """(field path inside the step, value, 'duration' | 'count') for each such field present."""
    out: list[tuple[tuple[Any, ...], Any, str]] = []
    retry = step.get("retry") if isinstance(step.get("retry"), dict) else {}
    for key, what in (("attempts", "count"), ("interval", "duration"), ("timeout", "duration")):
        if key in retry:
            out.append((("retry", key), retry[key], what))
    sample = step.get("sample") if isinstance(step.get("sample"), dict) else {}
    for key, what in (("every", "duration"), ("for", "duration"), ("count", "count")):
        if key in sample:
            out.append((("sample", key), sample[key], what))
    if "wait" in step:
        out.append((("wait",), step["wait"], "duration"))
    for kind_name, fields in KIND_NUMBER_FIELDS.items():
        body = step.get(kind_name)
        if isinstance(body, dict):
            for key, what in fields.items():
                if body.get(key) is not None:
                    out.append(((kind_name, key), body[key], what))
    return out


# Number-like options of the kinds: a literal is checked by `validate`, a template when it renders.
KIND_NUMBER_FIELDS: dict[str, dict[str, str]] = {
    "ssh": {"timeout": "duration"},
    "http": {"timeout": "duration"},
    "tcp": {"timeout": "duration"},
    "monitor": {"seconds": "duration", "max_commands": "count"},
    "latency": {"count": "count", "every": "duration"},
    "parse": {"within": "duration"},
}


def field_path(path: tuple[Any, ...], field: tuple[Any, ...]) -> tuple[Any, ...]:
    return (*path, *field)


def typed_field_errors(located: Located, path: tuple[Any, ...], step: dict[str, Any]) -> list[SourceError]:
    """A literal that is not the number it must be is an error now; a template is checked when it renders."""
    from engine.spec.params import parse_count, parse_duration

    errors = []
    for field, value, what in _typed_fields(step):
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


def restore_errors(
    located: Located, path: tuple[Any, ...], step: dict[str, Any], every: list[tuple[tuple[Any, ...], dict[str, Any]]]
) -> list[SourceError]:
    """`restore:` names a CONFIG SET step of this procedure (outside the finally steps)."""
    wanted = step["restore"]
    target = next((s for p, s in every if s.get("id") == wanted and p[0] == "steps"), None)
    if target is None:
        return [located.error((*path, "restore"), f"restore '{wanted}': no step with that id among the steps")]
    argv = ((target.get("redis") or {}).get("command") or []) if isinstance(target.get("redis"), dict) else []
    words = [str(a).lower() for a in argv[:2]]
    if words != ["config", "set"]:
        return [located.error((*path, "restore"), f"restore '{wanted}': only a redis CONFIG SET step can be restored")]
    return []


def sample_errors(located: Located, path: tuple[Any, ...], step: dict[str, Any], kind_name: str) -> list[SourceError]:
    """Only reads are sampled: running a change every second is never what the author meant."""
    from engine.spec.effects import static_effect as effect_of

    plain = kind_name not in ("block", "call", "prompt", "checklist")
    effect = effect_of(kind_name, step[kind_name]).effect if plain else None
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


def _check_effect(located: Located, path: tuple[Any, ...], step: dict[str, Any], kind_name: str) -> list[SourceError]:
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
            errors.extend(_unproven_read(located, (*path, kind_name), body, kind.shell_fields))
    if declared is not None and derived is not None and declared < derived:
        errors.append(located.error((*path, "effect"), f"declared '{declared}' but this {kind_name} step is {derived}"))
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


def _connection_state_errors(located: Located, path: tuple[Any, ...], body: Any) -> list[SourceError]:
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
            (*path, "redis", "command", 0),
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
