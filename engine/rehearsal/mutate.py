"""Mutation testing of procedures: plant one realistic bug at a time and see whether a rehearsal notices.

A mutant is the procedure's YAML with one change (a step dropped, a `when` inverted, an expectation
made always true, a changing step labelled `read`, a param default or a command literal changed, a
`confirm` dropped), written to a temporary file and rehearsed against every scenario of the
procedure. It is *killed* when validation rejects it or any scenario stops passing; it *survives*
when every scenario still passes: the scenarios cannot tell the bug from the procedure. A mutant that
loads to the same procedure as the original is *equivalent* and not counted.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.errors import RunbookError

COMMAND_FIELDS = ("command", "script")
_TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_NUMBER = re.compile(r"(?<![\w.-])(\d+)(?![\w.])")
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)?$")


@dataclass(frozen=True)
class Mutant:
    procedure: str
    name: str  # operator:where, e.g. "drop-step:set-ttl"
    description: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    mutant: Mutant
    status: str  # killed | survived | equivalent
    reason: str
    duration_s: float = 0.0


# -- the operators (pure: YAML data in, mutants out) -----------------------------------------------------------
def _steps(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in data.get("steps") or [] if isinstance(s, dict)]


def _kind(step: dict[str, Any]) -> str | None:
    from engine.steps import kinds

    return next((k for k in step if k in kinds()), None)


def drop_step(data: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for i, step in enumerate(_steps(data)):
        out = copy.deepcopy(data)
        del out["steps"][i]
        yield f"drop-step:{step.get('id')}", f"step {step.get('id')} removed", out


def invert_when(data: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for i, step in enumerate(_steps(data)):
        if step.get("when"):
            out = copy.deepcopy(data)
            out["steps"][i]["when"] = f"not ({_expression(step['when'])})"
            yield f"invert-when:{step.get('id')}", f"when of {step.get('id')} inverted", out


def weaken_expect(data: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for i, step in enumerate(_steps(data)):
        for j, expectation in enumerate(step.get("expect") or []):
            if not isinstance(expectation, dict) or str(expectation.get("that")).strip() == "true":
                continue
            if expectation.get("severity") == "info":  # fails nothing (no finding, no exit code): not a verification
                continue
            out = copy.deepcopy(data)
            out["steps"][i]["expect"][j]["that"] = "true"
            yield (
                f"weaken-expect:{step.get('id')}[{j}]",
                f"expectation {j} of {step.get('id')} is always true ({expectation.get('that')!r})",
                out,
            )


def effect_to_read(data: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for i, step in enumerate(_steps(data)):
        if _changes(step):
            out = copy.deepcopy(data)
            out["steps"][i]["effect"] = "read"
            yield f"effect-to-read:{step.get('id')}", f"{step.get('id')} labelled read", out


def change_default(data: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    params = data.get("params") or {}
    items = params.items() if isinstance(params, dict) else ((p.get("name"), p) for p in params)
    for name, spec in items:
        if not isinstance(spec, dict) or "default" not in spec or spec.get("secret"):
            continue
        new = _other_value(spec["default"])
        if new is None:
            continue
        out = copy.deepcopy(data)
        target = (
            out["params"][name]
            if isinstance(out["params"], dict)
            else next(p for p in out["params"] if p.get("name") == name)
        )
        target["default"] = new
        yield f"change-default:{name}", f"default of {name}: {spec['default']!r} -> {new!r}", out


def change_literal(data: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for i, step in enumerate(_steps(data)):
        kind = _kind(step)
        body = step.get(kind) if kind else None
        if not isinstance(body, dict):
            continue
        for field_name in COMMAND_FIELDS:
            value = body.get(field_name)
            new = _mutate_command(value)
            if new is None:
                continue
            out = copy.deepcopy(data)
            out["steps"][i][kind][field_name] = new
            yield f"change-literal:{step.get('id')}", f"a literal in {step.get('id')}'s {field_name} changed", out
            break


def drop_confirm(data: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for i, step in enumerate(_steps(data)):
        if step.get("confirm"):
            out = copy.deepcopy(data)
            del out["steps"][i]["confirm"]
            yield f"drop-confirm:{step.get('id')}", f"confirm of {step.get('id')} removed", out


OPERATORS: dict[str, Callable[[dict[str, Any]], Iterable[tuple[str, str, dict[str, Any]]]]] = {
    "drop-step": drop_step,
    "invert-when": invert_when,
    "weaken-expect": weaken_expect,
    "effect-to-read": effect_to_read,
    "change-default": change_default,
    "change-literal": change_literal,
    "drop-confirm": drop_confirm,
}


def mutants(data: dict[str, Any]) -> list[Mutant]:
    out = []
    for operator in OPERATORS.values():
        for name, description, mutated in operator(data):
            out.append(Mutant(str(data.get("id")), name, description, mutated))
    return out


def sample(found: list[Mutant], per_procedure: int | None) -> list[Mutant]:
    """A deterministic sample: per procedure, the mutants whose hashed name sorts first, every operator kept
    in proportion (the order depends on the name only, so adding a step does not reshuffle the rest)."""
    if per_procedure is None:
        return found
    by_procedure: dict[str, list[Mutant]] = {}
    for m in found:
        by_procedure.setdefault(m.procedure, []).append(m)
    chosen: list[Mutant] = []
    for items in by_procedure.values():
        ranked = sorted(items, key=lambda m: hashlib.sha256(f"{m.procedure}:{m.name}".encode()).hexdigest())
        # round-robin over operators so a small sample still has one of each where it can
        groups: dict[str, list[Mutant]] = {}
        for m in ranked:
            groups.setdefault(m.name.split(":", 1)[0], []).append(m)
        picked: list[Mutant] = []
        names = list(OPERATORS)
        turn = int(hashlib.sha256(items[0].procedure.encode()).hexdigest(), 16) % len(names)
        order = names[turn:] + names[:turn]  # each procedure starts at another operator
        while len(picked) < per_procedure and any(groups.values()):
            for op in order:
                if groups.get(op) and len(picked) < per_procedure:
                    picked.append(groups[op].pop(0))
        chosen.extend(sorted(picked, key=lambda m: m.name))
    return chosen


# -- helpers ----------------------------------------------------------------------------------------------
def _expression(value: str) -> str:
    text = str(value).strip()
    if text.startswith("{{") and text.endswith("}}"):
        return text[2:-2].strip()
    return text


def _changes(step: dict[str, Any]) -> bool:
    """The step changes something, as validate would tell it without a server."""
    from engine.spec.effects import static_effect
    from engine.spec.model import Effect

    kind = _kind(step)
    if kind is None or kind == "call":
        return False
    declared = Effect.parse(step["effect"]) if step.get("effect") else None
    try:
        effect = static_effect(kind, step[kind], declared).effect
    except Exception:
        return False
    return effect is None or effect > Effect.READ


def _other_value(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value * 2 + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match:
            return f"{int(match.group(1)) * 2 + 1}{match.group(2) or ''}"
        if value and not _TEMPLATE.search(value):
            return value + "x"
    return None


def _mutate_command(value: Any) -> Any:
    """The first number outside a template, plus one; else the first plain word after the program, altered."""
    if isinstance(value, str):
        spans = [m.span() for m in _TEMPLATE.finditer(value)]
        for match in _NUMBER.finditer(value):
            if not any(a <= match.start() < b for a, b in spans):
                return value[: match.start()] + str(int(match.group(1)) + 1) + value[match.end() :]
        return None
    if isinstance(value, list) and len(value) > 1:
        for i, item in enumerate(value[1:], start=1):  # a number first: a count, a TTL, a size
            if isinstance(item, int) and not isinstance(item, bool):
                return [*value[:i], item + 1, *value[i + 1 :]]
            if isinstance(item, str) and item.isdigit():
                return [*value[:i], str(int(item) + 1), *value[i + 1 :]]
        for i in range(len(value) - 1, 0, -1):  # else the last plain word: the value being set
            item = value[i]
            if isinstance(item, str) and item and not _TEMPLATE.search(item):
                return [*value[:i], item + "x", *value[i + 1 :]]
    return None


def _normal(procedure: Any) -> Any:
    """A loaded procedure without where it came from: two files that load the same compare equal."""

    def strip(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: strip(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if f.name not in ("file", "sha256", "location", "index")
            }
        if isinstance(value, list | tuple):
            return [strip(v) for v in value]
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        return value

    return strip(procedure)


# -- running them -------------------------------------------------------------------------------------------
def source_of(procedure_id: str, extra: tuple[Path, ...] = ()) -> Path:
    from engine.spec.loader import Catalog

    return Catalog(extra).path_of(procedure_id)


def run_mutant(
    mutant: Mutant,
    original: Any,
    scenarios: list[Any],
    *,
    transcripts_dir: Path,
    extra: tuple[Path, ...] = (),
    original_ref: str | None = None,
) -> Outcome:
    """Validate, then rehearse every scenario until one fails (killed) or all pass (survived)."""
    import time

    from engine.rehearsal.rehearse import rehearse
    from engine.spec.loader import Catalog, load_procedure

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="runbook-mutant-") as tmp:
        path = Path(tmp) / "mutant.yaml"
        path.write_text(yaml.safe_dump(mutant.data, sort_keys=False, allow_unicode=True), encoding="utf-8")
        try:
            loaded = load_procedure(path, known_procedures=Catalog(extra).has)
        except RunbookError as exc:
            first = str(exc).splitlines()[0]
            details = getattr(exc, "details", None) or getattr(exc, "errors", None) or []
            why = str(details[0]) if details else first
            return Outcome(mutant, "killed", f"rejected by validate: {why}", time.monotonic() - started)
        if _normal(loaded) == _normal(original):
            return Outcome(mutant, "equivalent", "loads to the same procedure", time.monotonic() - started)
        for scenario in scenarios:
            result = rehearse(
                scenario,
                transcripts_dir=transcripts_dir,
                procedure_ref=str(path),
                extra_procedures=extra,
                incident=f"mutant-{scenario.name}",
                reference_ref=original_ref or "",  # "": the catalog's procedure of that id
            )
            if not result.passed:
                return Outcome(
                    mutant, "killed", f"{scenario.name}: {result.why_not_passed}", time.monotonic() - started
                )
    names = ", ".join(s.name for s in scenarios)
    return Outcome(mutant, "survived", f"every scenario still passes ({names})", time.monotonic() - started)


def score(outcomes: list[Outcome]) -> tuple[int, int, float]:
    """(killed, counted, percent killed): equivalent mutants are not counted."""
    counted = [o for o in outcomes if o.status != "equivalent"]
    killed = sum(o.status == "killed" for o in counted)
    return killed, len(counted), (100.0 * killed / len(counted)) if counted else 100.0
