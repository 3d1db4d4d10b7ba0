"""What each step kind registers: the declared result shape of every kind and operation.

One table, so docs/procedure-format.md can show every shape (generated: `python -m engine.steps.results
--write`) and a run can check what a kind really returned against what it promises (`check_result`,
switched on by RUNBOOK_CHECK_RESULTS=1 in tests: a kind that drifts from its shape fails them).
Shapes are JSON Schema; only the top level and the listed fields are promised, extra fields may appear.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def _obj(description: str, fields: Mapping[str, Any], required: tuple[str, ...] | None = None) -> dict[str, Any]:
    props = {k: (v if isinstance(v, dict) else {"type": v[0], "description": v[1]}) for k, v in fields.items()}
    return {
        "type": "object",
        "description": description,
        "properties": props,
        "required": list(fields if required is None else required),
    }


def _f(types: str | list[str], description: str = "") -> tuple[str | list[str], str]:
    return (types, description)


NUM = ["number", "null"]
INT = ["integer", "null"]
STR = ["string", "null"]
ANY_JSON = ["object", "array", "string", "number", "boolean", "null"]

TCP = _obj(
    "The probe's outcome.",
    {
        "connected": _f("boolean"),
        "error": _f(STR, "why it failed"),
        "elapsed_ms": _f(NUM),
        "host": _f("string"),
        "port": _f("integer"),
        "reply": _f(STR, "first reply line, when a probe was sent"),
    },
)

# kind -> operation ("" for a kind with one shape) -> schema
RESULTS: dict[str, dict[str, dict[str, Any]]] = {
    "redis": {
        "command": {"type": ANY_JSON, "description": "The server's reply, decoded: text, number, list or map."},
        "info": {
            "type": "object",
            "description": "INFO fields by name (numbers as numbers; `db0` etc. as maps of keys/expires/avg_ttl).",
        },
        "config_get": {"type": "object", "description": "parameter -> value (text), credentials masked."},
        "scan": {"type": "array", "items": {"type": "string"}, "description": "Key names."},
        "keys": {
            "type": "array",
            "description": "One map per key: {key, ttl?, type?, memory?} (the checks asked for).",
            "items": {"type": "object", "required": ["key"]},
        },
        "on": {
            "type": "array",
            "description": "With `on:` (any operation): one row per node, in topology order. A change on several "
            "nodes registers the rows of its runs, one per node.",
            "items": _obj(
                "One node's outcome.",
                {
                    "node": _f("string", "HOST:PORT"),
                    "role": _f("string", "primary | replica"),
                    "outcome": _f(
                        "string",
                        "ok | error (this node; the step fails only when every node errs) "
                        "| predicted (dry-run) | failed | skipped",
                    ),
                    "result": _f(ANY_JSON, "what the operation returns on this node (its own shape)"),
                    "error": _f(STR, "why this node failed"),
                },
            ),
        },
        "keyinfo": {
            "type": "array",
            "description": "One map per key.",
            "items": _obj(
                "A key.",
                {
                    "key": _f("string"),
                    "exists": _f(["boolean", "null"], "null: could not be read (MOVED, NOPERM)"),
                    "type": _f(STR),
                    "ttl": _f(NUM, "seconds, -1 without TTL"),
                    "memory": _f(INT, "bytes"),
                    "length": _f(INT, "items"),
                },
            ),
        },
    },
    "call": {"": {"type": "object", "description": "{procedure, <each register of the called procedure>}."}},
    "checklist": {
        "": {
            "type": "array",
            "description": "One entry per item.",
            "items": _obj("A ticked item.", {"item": _f("string"), "done": _f("boolean"), "by": _f("string")}),
        }
    },
    "compute": {"": {"type": "object", "description": "name -> the value of its expression."}},
    "config_compare": {
        "": _obj(
            "The comparison.",
            {
                "rows": _f("array", "{param, asked, known, current, desired, same, note} per parameter"),
                "differ": _f("array", "rows that differ"),
                "unknown": _f("array", "parameters this server does not have"),
                "same": _f("array", "parameters that already have their value"),
            },
            (),
        )
    },
    "http": {
        "": _obj(
            "The response.",
            {
                "status": _f(INT),
                "ok": _f("boolean"),
                "json": _f(ANY_JSON, "the body parsed, when it is JSON"),
                "text": _f(STR),
                "elapsed_ms": _f(NUM),
            },
            ("status", "ok"),
        )
    },
    "keyspace": {
        "audit_ttl": _obj(
            "Keys without a TTL.",
            {
                "scanned": _f("integer"),
                "without_ttl": _f("integer"),
                "by_tenant": _f("object", "tenant -> count"),
                "sample": _f("array"),
            },
            ("scanned", "without_ttl"),
        ),
        "memory_report": _obj(
            "Memory by type and tenant.",
            {
                "scanned": _f("integer"),
                "total_bytes": _f("integer"),
                "by_type": _f("object", "type -> {keys, bytes}"),
                "by_tenant": _f("object", "tenant -> {keys, bytes}"),
                "biggest": _f("object", "type -> [{key, bytes}], a mapping by type"),
            },
            ("scanned", "total_bytes"),
        ),
        "list": _obj(
            "Keys grouped by tenant.",
            {
                "tenants": _f("object", "tenant -> [{key, type, ttl, memory}]"),
                "count": _f("integer"),
                "truncated": _f("boolean"),
            },
        ),
        "expire_matching": _obj(
            "TTLs set.",
            {
                "matched": _f("integer"),
                "changed": _f("integer"),
                "skipped_had_ttl": _f("integer"),
                "capped": _f("boolean"),
            },
            ("changed",),
        ),
        "delete_matching": _obj("Keys deleted.", {"deleted": _f("integer"), "capped": _f("boolean")}, ("deleted",)),
    },
    "latency": {
        "": _obj(
            "PING round trips in milliseconds.",
            {
                "pings": _f("integer", "round trips measured"),
                "min_ms": _f("number"),
                "avg_ms": _f("number"),
                "max_ms": _f("number"),
                "p50_ms": _f("number"),
                "p90_ms": _f("number"),
                "p99_ms": _f("number"),
                "stddev_ms": _f("number"),
            },
        )
    },
    "local": {
        "read": {"type": ANY_JSON, "description": "The content: text, or parsed (json, yaml, redis-conf)."},
        "stat": _obj(
            "The file.",
            {"path": _f("string"), "exists": _f("boolean"), "size": _f(INT), "mtime": _f(NUM), "age_s": _f(NUM)},
        ),
        "glob": {"type": "array", "items": {"type": "string"}, "description": "Paths, newest first."},
        "write": {"type": "object", "description": "{path, bytes, mode}."},
    },
    "monitor": {
        "": _obj(
            "The sample, summarised.",
            {
                "commands": _f("integer"),
                "seconds": _f("number"),
                "by_command": _f("object"),
                "by_prefix": _f("object"),
                "by_client": _f("object"),
                "sample": _f("array", "the first lines, credentials masked"),
            },
            ("commands",),
        )
    },
    "note": {"": {"type": "string", "description": "The text shown."}},
    "parse": {
        "": {
            "type": ["object", "array"],
            "description": "Depends on `format` (see the parse kind): a map (free, redis-log, check-rdb, check-aof, "
            "redis-conf) or a list of rows (df, ps, ss, netstat).",
        }
    },
    "prompt": {"": {"type": ANY_JSON, "description": "The answer, converted to the param's type."}},
    "rdb": {
        "download": _obj(
            "The file written.",
            {"path": _f("string"), "bytes": _f("integer"), "sha256": _f("string"), "source": _f("string")},
            ("path",),
        ),
        "verify": _obj(
            "The checks.",
            {"ok": _f("boolean"), "error": _f(STR), "keys": _f(INT), "checksum_ok": _f(["boolean", "null"])},
            ("ok",),
        ),
    },
    "redis_auth": {
        "generate": {"description": "A secret value: `{{ <register>.value }}` is the password (redacted everywhere)."},
        "add": _obj("The default user.", {"user": _f("string"), "passwords": _f("integer")}),
        "rotate": _obj("Rotated.", {"requirepass": _f("string"), "sessions_killed": _f("integer")}),
        "check": _obj("The check.", {"accepted": _f("boolean"), "error": _f(STR), "username": _f("string")}),
        "use": _obj("Switched.", {"switched": _f("boolean"), "client_id": _f(["integer", "null"])}, ("switched",)),
        "sessions": _obj(
            "The default user's sessions.",
            {
                "own_id": _f(["integer", "string", "null"]),
                "total": _f("integer"),
                "count": _f("integer"),
                "ids": _f("array"),
                "sessions": _f("array"),
                "clients": _f("array"),
            },
        ),
    },
    "redis_clients": {
        "idle": _obj(
            "Idle clients.",
            {
                "total": _f("integer"),
                "matched": _f("integer"),
                "by_name": _f("object", "client name -> count"),
                "by_host": _f("object", "host -> count"),
                "oldest_idle": _f("integer", "seconds"),
                "clients": _f("array"),
            },
        ),
        "kill_idle": _obj(
            "Killed.",
            {"killed": _f("integer"), "spared": _f("integer"), "gone": _f("integer"), "ids": _f("array")},
        ),
    },
    "redis_report": {
        "slowlog": _obj(
            "SLOWLOG.",
            {
                "entries": _f("array"),
                "by_command": _f("object"),
                "length": _f(INT),
                "threshold_us": _f(INT),
            },
            ("entries",),
        ),
        "clients": _obj(
            "CLIENT LIST, filtered.",
            {"total": _f("integer"), "matched": _f("integer"), "by_cmd": _f("object"), "clients": _f("array")},
        ),
        "commandstats": _obj(
            "Top commands.", {"by_time": _f("array"), "by_calls": _f("array"), "totals": _f("object")}, ()
        ),
        "hash": _obj(
            "A hash, bounded.",
            {"exists": _f("boolean"), "type": _f(STR), "length": _f(INT), "fields": _f(["object", "array"])},
            ("exists",),
        ),
    },
    "restore": {"": {"type": "string", "description": "The server's reply to CONFIG SET (OK)."}},
    "ssh": {
        "": _obj(
            "The command's outcome.",
            {
                "exit_status": _f("integer"),
                "ok": _f("boolean"),
                "stdout": _f("string"),
                "stderr": _f("string"),
                "lines": _f("array", "stdout split into lines"),
            },
        )
    },
    "tcp": {"": TCP},
    "tenant_data": {
        "export": _obj(
            "The export file.",
            {"path": _f("string"), "key_count": _f("integer"), "sha256": _f("string"), "seconds": _f("number")},
            ("path", "key_count"),
        ),
        "inspect": _obj(
            "The file, checked.",
            {"path": _f("string"), "ok": _f("boolean"), "error": _f(STR), "key_count": _f(INT)},
        ),
        "import": _obj(
            "Restored.",
            {
                "path": _f("string"),
                "key_count": _f("integer"),
                "restored": _f("integer"),
                "errors": _f("integer"),
                "present_after": _f("integer"),
                "method": _f("string", "how many RESTORE pipelines went small because other clients were active"),
            },
        ),
    },
    "wait": {"": _obj("Time waited.", {"waited_s": _f("number")})},
    "block": {"": {"type": "object", "description": "Each inner step's register -> its value."}},
}

SAMPLED = _obj(
    "A `sample:` step's series (any kind's result, as `value` of each sample).",
    {
        "samples": _f("array", "[{t: seconds since the first, at: time (engine format), value, error?}]"),
        "readings": _f("array", "the values alone"),
        "count": _f("integer"),
        "errors": _f("integer", "samples that failed (their value is null)"),
        "interrupted": _f("boolean", "Ctrl-C ended the sampling early"),
        "every_s": _f("number"),
        "elapsed_s": _f("number"),
    },
)

STEPS_ENTRY = _obj(
    "`steps.<id>`: every step's outcome beside its result.",
    {
        "outcome": _f("string", "not_run, ok, failed, error, skipped, predicted, refused"),
        "error": _f(STR, "the failure's message"),
        "duration_ms": _f(NUM),
        "result": _f(ANY_JSON, "what `register` holds"),
        "attempts": _f("integer"),
    },
)


def shapes(kind: str) -> Mapping[str, Mapping[str, Any]]:
    """A kind's result shapes: those it declares itself (`StepKind.results`, a plugin's), else the table's."""
    from engine.steps import kinds

    registered = kinds().get(kind)
    own = registered.results if registered is not None else None
    return own if own is not None else RESULTS.get(kind, {})


def operation(kind: str, body: Any) -> str:
    """Which of a kind's shapes applies: the body's operation key, or "" for single-shape kinds."""
    shapes_ = shapes(kind)
    if "" in shapes_:
        return ""
    if isinstance(body, Mapping):
        if "on" in body and "on" in shapes_:
            return "on"
        for key in body:
            if key in shapes_:
                return key
    return ""


def shape_of(kind: str, body: Any) -> Mapping[str, Any] | None:
    return shapes(kind).get(operation(kind, body))


def mismatch(schema: Mapping[str, Any], value: Any) -> str | None:
    """Why `value` does not have the declared shape (top level and listed fields), or None."""
    import jsonschema

    checked = {k: v for k, v in schema.items() if k != "description"}
    try:
        jsonschema.validate(value, checked, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return f"{where or 'result'}: {exc.message[:200]}"
    return None


def checking() -> bool:
    return os.environ.get("RUNBOOK_CHECK_RESULTS") == "1"


def check_result(kind: str, body: Any, result: Any, *, sampled: bool = False) -> str | None:
    """The declared shape against what a kind returned (None: it matches, or nothing is declared)."""
    if sampled:
        problem = mismatch(SAMPLED, result)
        if problem:
            return problem
        schema = shape_of(kind, body)
        for sample in result.get("samples", []):
            if schema is not None and "error" not in sample:
                problem = mismatch(schema, sample.get("value"))
                if problem:
                    return f"sample: {problem}"
        return None
    schema = shape_of(kind, body)
    return mismatch(schema, result) if schema is not None else None


# -- docs --------------------------------------------------------------------------------------------------

BEGIN = "<!-- result shapes: generated by `python -m engine.steps.results --write`; do not edit -->"
END = "<!-- end of result shapes -->"


def _type_text(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type", "any")
    return " or ".join(kind) if isinstance(kind, list) else str(kind)


def render_markdown() -> str:
    from engine.steps import kinds

    lines = [BEGIN, ""]
    for name in sorted(kinds()):
        for op, schema in shapes(name).items():
            title = f"`{name}`" + (f" `{op}`" if op else "")
            lines.append(f"- {title} -> **{_type_text(schema)}**: {schema.get('description', '')}")
            items = schema.get("items") if isinstance(schema.get("items"), Mapping) else None
            props = schema.get("properties") or (items or {}).get("properties") or {}
            required = set(schema.get("required") or (items or {}).get("required") or [])
            for field, spec in props.items():
                mark = "" if field in required else " (may be absent)"
                text = f": {spec['description']}" if spec.get("description") else ""
                lines.append(f"  - `{field}` {_type_text(spec)}{mark}{text}")
    for title, schema in (("a sampled step (`sample:`)", SAMPLED), ("`steps.<id>`", STEPS_ENTRY)):
        lines.append(f"- {title} -> **object**: {schema['description']}")
        for field, spec in schema["properties"].items():
            lines.append(f"  - `{field}` {_type_text(spec)}: {spec.get('description', '')}".rstrip(": "))
    lines += ["", END]
    return "\n".join(lines)


def docs_path() -> Any:
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "docs" / "procedure-format.md"


def updated_docs(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + render_markdown() + text[end:]


def main() -> None:  # pragma: no cover - maintenance entry point
    import sys

    path = docs_path()
    text = updated_docs(path.read_text(encoding="utf-8"))
    if "--write" in sys.argv:
        path.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(render_markdown() + "\n")


if __name__ == "__main__":
    main()
