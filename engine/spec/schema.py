"""The procedure JSON Schema, composed from the step-kind registry, and schema errors made readable.

schemas/procedure.schema.json is generated from here (`python -m engine.spec.schema --write`) so the
file editors and docs use and the registry can never disagree; a test fails when they do.
"""

from __future__ import annotations

import difflib
import json
from functools import cache
from typing import Any

from engine.errors import SourceError
from engine.resources import schema_path
from engine.spec.kinds import KindTable, table
from engine.spec.yamlsource import Located, format_path

SCHEMA_ID = "https://runbook.dev/schemas/procedure.schema.json"
DURATION = {
    "type": ["string", "number"],
    "format": "duration",
    "description": "A duration: 500ms, 90s, 5m, 1h, or seconds (at most 7 days), or a template rendering to one.",
}
COUNT = {
    "type": ["integer", "string"],
    "minimum": 1,
    "description": "A whole number >= 1, or a template rendering to one.",
}
STEP_FIELDS: dict[str, Any] = {
    "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$", "description": "Unique within the procedure."},
    "name": {"type": "string", "minLength": 1, "description": "What the step does, for humans."},
    "when": {"type": "string", "description": "Expression; the step runs only when it is true."},
    "register": {
        "type": "string",
        "pattern": "^[a-z_][a-z0-9_]*$",
        "description": "Name under which later steps see this step's result.",
    },
    "expect": {"type": "array", "items": {"$ref": "#/$defs/expectation"}},
    "retry": {"$ref": "#/$defs/retry"},
    "on_failure": {"$ref": "#/$defs/on_failure"},
    "foreach": {"type": "string", "description": "Expression giving a list; the step runs once per `item`."},
    "effect": {
        "enum": ["read", "write", "destructive"],
        "description": "Declared effect; the engine uses the stronger of this and what it derives.",
    },
    "confirm": {"type": "string", "description": "The question the gate shows before a non-read step."},
    "verifies": {
        "type": "string",
        "description": "Id of the change step this step checks; in a dry-run "
        "its expectations are reported as predicted.",
    },
    "secret": {"type": "boolean", "description": "The registered result is a secret: redacted everywhere."},
    "precondition": {
        "type": "boolean",
        "description": "A read that `runbook continue` runs again before the resume point (so a resumed run "
        "decides on today's state); other finished steps are reused from the transcript.",
    },
    "show": {
        "type": "string",
        "description": "A line for the operator once the step ran (template over "
        "`result` and registers); kept in the transcript as `summary`.",
    },
    "sample": {"$ref": "#/$defs/sample"},
    "impact": {
        "type": "array",
        "items": {"$ref": "#/$defs/impact"},
        "description": "What this step measures as the incident's impact; the post-mortem's Impact section.",
    },
    "follow_up": {
        "type": "array",
        "items": {"$ref": "#/$defs/follow_up"},
        "description": "What the operator must do after this step ran; the post-mortem's Action items.",
    },
}


def build_procedure_schema(kinds: KindTable | None = None) -> dict[str, Any]:
    """The schema for `kinds` (default: every registered kind): schemas/procedure.schema.json is this."""
    from engine.triage.symptoms import SCHEMA as SYMPTOMS

    registered = table() if kinds is None else kinds
    step_props = dict(STEP_FIELDS)
    defs: dict[str, Any] = {}
    for name, kind in sorted(registered.items()):
        defs[f"action_{name}"] = {**kind.schema, "description": kind.schema.get("description", kind.description)}
        step_props[name] = {"$ref": f"#/$defs/action_{name}"}
    defs.update(
        {
            "step": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "name"],
                "properties": step_props,
                "anyOf": [{"required": [name]} for name in sorted(registered)],
            },
            "param": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type"],
                "properties": {
                    "type": {"enum": ["string", "integer", "number", "boolean", "duration", "size"]},
                    "description": {"type": "string"},
                    "default": {"type": ["string", "number", "boolean"]},
                    "required": {"type": "boolean"},
                    "pattern": {"type": "string", "format": "regex"},
                    "enum": {"type": "array", "minItems": 1},
                    "secret": {"type": "boolean"},
                    "minimum": {"type": "number"},
                    "maximum": {"type": "number"},
                },
            },
            "expectation": {
                "type": "object",
                "additionalProperties": False,
                "required": ["that", "message"],
                "properties": {
                    "that": {"type": "string", "description": "Expression over `result` and earlier registers."},
                    "severity": {"enum": ["critical", "warning", "info"], "default": "critical"},
                    "message": {"type": "string", "description": "The runbook's advice when this does not hold."},
                },
            },
            "impact": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "value", "unit"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "description": "e.g. writes refused"},
                    "value": {"type": "string", "description": "Expression over `result` and registers: the figure."},
                    "unit": {"type": "string", "minLength": 1, "description": "e.g. commands, keys, % of maxmemory"},
                    "when": {"type": "string", "description": "Expression; the figure is recorded only when true."},
                },
            },
            "follow_up": {
                "type": "object",
                "additionalProperties": False,
                "required": ["kind", "text"],
                "properties": {
                    "kind": {"enum": ["prevent", "detect", "mitigate"]},
                    "text": {"type": "string", "minLength": 1, "description": "Template over `result` and registers."},
                    "when": {"type": "string", "description": "Expression; the follow-up is recorded only when true."},
                },
            },
            "retry": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "until": {"type": "string"},
                    "attempts": COUNT,
                    "interval": DURATION,
                    "timeout": DURATION,
                },
            },
            "sample": {
                "type": "object",
                "additionalProperties": False,
                "description": "Run a read step `every` D `for` T (or `count` N times); the result is the series.",
                "properties": {"every": DURATION, "for": DURATION, "count": COUNT},
                "oneOf": [{"required": ["for"]}, {"required": ["count"]}],
            },
            "on_failure": {
                "oneOf": [
                    {"enum": ["abort", "continue"]},
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["goto"],
                        "properties": {"goto": {"type": "string"}},
                    },
                ],
            },
        }
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "runbook procedure",
        "description": "One runbook procedure: typed params and steps, each step exactly one action.",
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "title", "section", "description", "steps"],
        "properties": {
            "id": {"type": "string", "pattern": "^[a-z0-9-]+(/[a-z0-9-]+)+$", "description": "e.g. redis/wm-clear"},
            "title": {"type": "string", "minLength": 1},
            "section": {"type": "string", "minLength": 1, "description": "The runbook section implemented."},
            "description": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "requires": {"type": "array", "uniqueItems": True, "items": {"enum": ["redis", "ssh", "http"]}},
            "params": {
                "type": "object",
                "propertyNames": {"pattern": "^[a-z_][a-z0-9_]*$"},
                "additionalProperties": {"$ref": "#/$defs/param"},
            },
            "steps": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/step"}},
            "finally": {
                "type": "array",
                "items": {"$ref": "#/$defs/step"},
                "description": "Cleanup steps, run in order after the steps however they ended "
                "(success, failure, refusal, Ctrl-C); each gated like any other step.",
            },
            "symptoms": SYMPTOMS,
        },
        "$defs": defs,
    }


@cache
def load_schema(name: str) -> dict[str, Any]:
    return json.loads(schema_path(name).read_text(encoding="utf-8"))


def _procedure_schema() -> dict[str, Any]:
    """The schema on disk; composed from the registry when a kind was registered beyond it (a plugin)."""
    on_disk = load_schema("procedure.schema.json")
    known = on_disk.get("$defs", {}).get("step", {}).get("properties", {})
    if all(name in known for name in table()):
        return on_disk
    return build_procedure_schema()


def validate_against(name: str, located: Located) -> list[SourceError]:
    """Schema errors as SourceErrors, pointing at the offending key or value, sorted by position."""
    import jsonschema

    schema = _procedure_schema() if name == "procedure.schema.json" else load_schema(name)
    validator = jsonschema.Draft202012Validator(schema, format_checker=_format_checker())
    errors: list[SourceError] = []
    for error in validator.iter_errors(located.data):
        errors.extend(_readable(error, located, schema))
    unknown_at = {e.path for e in errors if e.message.startswith("unknown ")}
    errors = [e for e in errors if not (e.path in unknown_at and e.message.startswith("exactly one of"))]
    unique = {(e.line, e.column, e.path, e.message): e for e in errors}
    return sorted(unique.values(), key=lambda e: (e.line or 0, e.column or 0, e.path))


@cache
def _format_checker() -> Any:
    import jsonschema

    checker = jsonschema.FormatChecker()
    checker.checks("duration", raises=ValueError)(_is_duration)
    return checker


def _is_duration(value: Any) -> bool:
    """A literal duration that parses and is at most MAX_DURATION; a template is checked when rendered."""
    from engine.spec.params import parse_wait

    if isinstance(value, str) and "{{" in value:
        return True
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return True  # the type check reports it
    parse_wait(value)  # ValueError when not a duration or longer than 7 days
    return True


def _readable(error: Any, located: Located, schema: dict[str, Any]) -> list[SourceError]:
    path = tuple(error.absolute_path)
    kind = error.validator
    instance = error.instance
    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = set(error.schema.get("properties", {}))
        in_action = len(path) >= 3 and path[0] == "steps" and isinstance(path[-1], str)
        word = "option" if in_action else "field"
        out = []
        for key in sorted(set(instance) - allowed):
            hint = difflib.get_close_matches(key, sorted(allowed), n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            line, col = located.position((*path, key))
            out.append(SourceError(located.file, line, col, format_path(path), f"unknown {word} '{key}'{suggestion}"))
        return out
    if kind == "required":
        missing = [r for r in error.validator_value if isinstance(instance, dict) and r not in instance]
        return [located.error(path, f"missing required field '{m}'") for m in missing]
    if kind == "anyOf" and path and path[0] == "steps" and len(path) == 2:
        alternatives = schema.get("$defs", {}).get("step", {}).get("anyOf", [])
        actions = sorted(a["required"][0] for a in alternatives if a.get("required"))
        return [located.error(path, "a step needs one action: " + ", ".join(actions))]
    if kind == "oneOf" and path and path[-1] == "sample":
        return [located.error(path, "sample needs exactly one of 'for' (a duration) or 'count' (a number)")]
    if kind == "oneOf" and path and path[-1] == "on_failure":
        return [located.error(path, "on_failure must be abort, continue, or {goto: <step id>}")]
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return [located.error(path, f"expected {expected}, got {_json_type(instance)} {instance!r}"[:200])]
    if kind == "enum":
        return [located.error(path, f"{instance!r} is not one of: {', '.join(map(str, error.validator_value))}")]
    if kind == "pattern":
        return [located.error(path, f"{instance!r} does not match {error.validator_value}")]
    if kind == "format" and error.validator_value == "duration":
        cause = error.cause
        return [located.error(path, str(cause) if cause else f"{instance!r} is not a duration")]
    alternatives = error.validator_value if kind == "anyOf" and isinstance(error.validator_value, list) else None
    if alternatives and all(set(a) == {"required"} and len(a["required"]) == 1 for a in alternatives):
        names = " or ".join(f"'{a['required'][0]}'" for a in alternatives)
        return [located.error(path, f"missing required field {names}")]
    if kind == "oneOf" and len(path) == 3 and path[0] == "steps" and "operations" in error.schema:
        return [located.error(path, f"exactly one of: {', '.join(error.schema['operations'])}")]
    if kind in ("maxProperties", "minProperties") and len(path) == 3 and path[0] == "steps":
        options = ", ".join(error.schema.get("properties", {}))
        return [located.error(path, f"exactly one of: {options}")]
    return [located.error(path, error.message[:300])]


def _json_type(value: Any) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def main() -> None:  # pragma: no cover - maintenance entry point
    import sys

    text = json.dumps(build_procedure_schema(), indent=2) + "\n"
    if "--write" in sys.argv:
        schema_path("procedure.schema.json").write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
