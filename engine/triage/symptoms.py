"""The `symptoms:` a procedure declares, and their evaluation against one round of findings (pure).

A symptom is an expression over what a read-only look at the target found (INFO, CONFIG, CLIENT LIST,
SLOWLOG, ...) and over the procedure's own param defaults, so the threshold a procedure acts on and the
threshold that suggests running it are one number. `params` derive the values the procedure would be
run with from what was observed; `alert` is the same symptom in redis_exporter's metrics for Prometheus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from engine.errors import SourceError
from engine.spec import template

SEVERITIES = ("critical", "warning", "info")
SEVERITY_RANK = {"critical": 3, "warning": 2, "info": 1}
# Names a symptom expression sees besides the procedure's params (filled by engine.triage.observe).
FINDINGS = frozenset(
    {
        "reachable",
        "auth_failed",
        "error",
        "info",
        "config",
        "clients",
        "slowlog",
        "latency",
        "acl_log",
        "keys",
        "expires",
        "now",
    }
)

SCHEMA: dict[str, Any] = {
    "type": "array",
    "description": "Symptoms this procedure fixes: `runbook diagnose` ranks procedures by them and "
    "`runbook alerts` turns them into Prometheus rules.",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "summary", "when", "severity", "weight"],
        "properties": {
            "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]*$", "description": "Unique within the procedure."},
            "summary": {"type": "string", "minLength": 1, "description": "The symptom in a few words."},
            "when": {
                "type": "string",
                "description": "Expression over the findings (reachable, info, config, clients, slowlog, latency, "
                "acl_log, keys, expires, now) and the procedure's param defaults; true when the symptom is present.",
            },
            "evidence": {"type": "string", "description": "Template: what was observed, with the values."},
            "severity": {"enum": list(SEVERITIES)},
            "weight": {"type": "integer", "minimum": 1, "maximum": 100, "description": "Ranks matches: higher first."},
            "thresholds_from": {
                "type": "string",
                "description": "Another procedure whose param defaults (thresholds) the expressions may also use.",
            },
            "params": {
                "type": "object",
                "propertyNames": {"pattern": "^[a-z_][a-z0-9_]*$"},
                "additionalProperties": {"type": "string"},
                "description": "Param name -> expression over the findings: the value the next run gets.",
            },
            "alert": {
                "type": "object",
                "additionalProperties": False,
                "required": ["expr"],
                "properties": {
                    "expr": {
                        "type": "string",
                        "description": "PromQL over redis_exporter metrics; {{ param }} allowed.",
                    },
                    "for": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class Alert:
    expr: str
    for_: str = "0s"


@dataclass(frozen=True)
class Symptom:
    id: str
    summary: str
    when: str
    severity: str
    weight: int
    evidence: str = ""
    params: tuple[tuple[str, str], ...] = ()
    thresholds_from: str | None = None
    alert: Alert | None = None


def build(raw: Sequence[Mapping[str, Any]] | None) -> tuple[Symptom, ...]:
    """From schema-valid YAML data."""
    return tuple(
        Symptom(
            id=s["id"],
            summary=s["summary"],
            when=s["when"],
            severity=s["severity"],
            weight=int(s["weight"]),
            evidence=s.get("evidence", ""),
            params=tuple((s.get("params") or {}).items()),
            thresholds_from=s.get("thresholds_from"),
            alert=Alert(s["alert"]["expr"], s["alert"].get("for", "0s")) if s.get("alert") else None,
        )
        for s in raw or ()
    )


def semantic_errors(located: Any, known_procedures: Any = None) -> list[SourceError]:
    """Unknown params and names, bad expression syntax, duplicate ids: pointed at the field."""
    data = located.data
    errors: list[SourceError] = []
    params = set((data.get("params") or {}).keys())
    seen: set[str] = set()
    for i, raw in enumerate(data.get("symptoms") or []):
        where = ("symptoms", i)
        if raw["id"] in seen:
            errors.append(located.error((*where, "id"), f"duplicate symptom id '{raw['id']}'"))
        seen.add(raw["id"])
        thresholds = set(params)
        other = raw.get("thresholds_from")
        if other:
            if known_procedures is not None and not known_procedures(other):
                errors.append(located.error((*where, "thresholds_from"), f"no procedure '{other}'"))
            thresholds |= _param_names_of(other)
        names = thresholds | FINDINGS

        def check(field: tuple[Any, ...], text: str, allowed: set[str], expression: bool) -> None:
            problem = template.check_syntax(text, expression=expression)
            if problem:
                kind = "expression" if expression else "template"
                errors.append(located.error(field, f"{kind} does not parse: {problem}"))
                return
            used = template.expression_variables(text) if expression else template.variables(text)
            for unknown in sorted(used - allowed):
                errors.append(
                    located.error(
                        field, f"undeclared name '{unknown}': not a finding or a param ({', '.join(sorted(allowed))})"
                    )
                )

        check((*where, "when"), raw["when"], names, True)
        if raw.get("evidence"):
            check((*where, "evidence"), raw["evidence"], names, False)
        for name, expression in (raw.get("params") or {}).items():
            if name not in params:
                known = ", ".join(sorted(params)) or "none"
                errors.append(located.error((*where, "params", name), f"unknown param '{name}' (params: {known})"))
            check((*where, "params", name), expression, names, True)
        if raw.get("alert"):  # PromQL: only thresholds can be filled in, findings are not known there
            check((*where, "alert", "expr"), raw["alert"]["expr"], thresholds, False)
    return errors


@cache
def _param_names_of(procedure_id: str) -> frozenset[str]:
    """The params of another shipped procedure, from a cheap read of its file (empty if unknown)."""
    import yaml

    from engine.spec.loader import Catalog, _fast_loader

    entry = Catalog().entries().get(procedure_id)
    if entry is None:
        return frozenset()
    try:
        data = yaml.load(entry.path.read_text(encoding="utf-8"), Loader=_fast_loader())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return frozenset()
    params = data.get("params") if isinstance(data, dict) else None
    return frozenset(params) if isinstance(params, dict) else frozenset()


def param_defaults(procedure: Any) -> dict[str, Any]:
    """A procedure's param defaults, converted to their types: the thresholds symptoms compare with."""
    from engine.spec.params import convert

    out: dict[str, Any] = {}
    for param in procedure.params:
        if param.default is not None:
            try:
                out[param.name] = convert(param, param.default)
            except ValueError:
                continue
    return out


@dataclass(frozen=True)
class Evidence:
    symptom: str
    summary: str
    evidence: str
    severity: str
    weight: int


@dataclass(frozen=True)
class Match:
    """One procedure the findings point to, with why and the params it would be run with."""

    procedure: str
    title: str
    score: int
    severity: str
    evidence: tuple[Evidence, ...]
    params: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "procedure": self.procedure,
            "title": self.title,
            "score": self.score,
            "severity": self.severity,
            "evidence": [vars(e) for e in self.evidence],
            "params": self.params,
            "notes": list(self.notes),
        }


def evaluate(
    procedures: Sequence[Any], findings: Mapping[str, Any], thresholds: Mapping[str, Mapping[str, Any]]
) -> list[Match]:
    """Every procedure whose symptoms hold, best first (score, then severity, then how many held, then id).

    `thresholds` maps a procedure id to its param defaults (for `thresholds_from`). A symptom whose
    expression fails on these findings (a field this Redis does not report) simply does not hold.
    """
    matches: list[Match] = []
    for procedure in procedures:
        own = param_defaults(procedure)
        held: list[Evidence] = []
        derived: dict[str, Any] = {}
        notes: list[str] = []
        for symptom in procedure.symptoms:
            names = {**(thresholds.get(symptom.thresholds_from, {}) if symptom.thresholds_from else {}), **own}
            names.update(findings)
            try:
                present = bool(template.evaluate(symptom.when, names))
            except template.TemplateError:
                present = False
            if not present:
                continue
            text = ""
            if symptom.evidence:
                try:
                    text = " ".join(str(template.render(symptom.evidence, names)).split())
                except template.TemplateError as exc:
                    text = f"(evidence could not be rendered: {exc})"
            held.append(Evidence(symptom.id, symptom.summary, text, symptom.severity, symptom.weight))
            for name, expression in symptom.params:
                if name in derived:
                    continue
                try:
                    derived[name] = template.evaluate(expression, names)
                except template.TemplateError as exc:
                    notes.append(f"param {name} not derived: {exc}")
        if not held:
            continue
        held.sort(key=lambda e: (-e.weight, -SEVERITY_RANK[e.severity], e.symptom))
        best = held[0]
        matches.append(
            Match(
                procedure=procedure.id,
                title=procedure.title,
                score=best.weight,
                severity=max((e.severity for e in held), key=SEVERITY_RANK.__getitem__),
                evidence=tuple(held),
                params={k: format_param(procedure, k, v) for k, v in derived.items()},
                notes=tuple(notes),
            )
        )
    matches.sort(key=lambda m: (-m.score, -SEVERITY_RANK[m.severity], -len(m.evidence), m.procedure))
    return matches


MIB = 1024 * 1024


def format_param(procedure: Any, name: str, value: Any) -> Any:
    """A derived value as an operator would type it: sizes rounded up to whole mb, numbers without .0."""
    param = procedure.param(name)
    if param is not None and param.type == "size" and isinstance(value, int | float) and not isinstance(value, bool):
        value = int(value)
        return f"{-(-value // MIB)}mb" if value >= MIB else str(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
