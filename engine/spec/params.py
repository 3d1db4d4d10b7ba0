"""Typed procedure parameters: `--var` strings in, checked Python values out, before any connection."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from engine.errors import UsageError
from engine.spec.model import Param

# Numbers are ASCII digits only (re.ASCII, no int()/float()): Python also reads '١٢', '１２', '1_000'
# and Unicode spaces as numbers, which an operator cannot tell from what was meant.
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE | re.ASCII)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
# Redis's own units (redis.conf): k/m/g are powers of 1000, kb/mb/gb powers of 1024.
_SIZE = re.compile(r"^\s*([0-9]+)\s*(b|k|kb|m|mb|g|gb|t|tb)?\s*$", re.IGNORECASE | re.ASCII)
_INTEGER = re.compile(r"^\s*[+-]?[0-9]+\s*$", re.ASCII)
_NUMBER = re.compile(r"^\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?\s*$", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
    "t": 1000**4,
    "tb": 1024**4,
}
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def _shown(value: Any) -> str:
    """The value quoted, non-ASCII as escapes: '\\u0661\\u0662' says what '١٢' hides."""
    text = str(value)
    return ascii(text) if not text.isascii() else f"'{text}'"


def _ascii_hint(value: Any) -> str:
    text = str(value)
    if not text.isascii() or "_" in text:
        return " (numbers are written with ASCII digits 0-9 only)"
    return ""


def parse_bool(value: Any) -> bool:
    """true/false, yes/no, on/off, 1/0 (a rendered template gives text): the one place that decides."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"'{value}' is not a boolean (true/false)")


def parse_duration(value: Any) -> float:
    """'90s', '5m', '1.5h', '250ms' or a plain number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90s, 5m or 1h")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"'{value}' is not a duration (a non-negative number of seconds)")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{_shown(value)} is not a duration (like 500ms, 90s, 5m, 1h){_ascii_hint(value)}")
    unit = match.group(2).lower() if match.group(2) else None
    return float(match.group(1)) * _DURATION_UNITS[unit]


def parse_count(value: Any) -> int:
    """A whole number of at least 1 (attempts, samples): 5 or '5'; never a bool, a fraction or 0."""
    if isinstance(value, bool):
        raise ValueError(f"'{value}' is not a count (a whole number >= 1)")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"'{value}' is not a count (a whole number >= 1)")
    return value


MAX_DURATION = 7 * 86400.0
"""The longest sleep or timeout (docs/cli.md, "Limits"); a TTL param may be longer."""


def parse_wait(value: Any) -> float:
    """A duration the engine will sleep or wait for: parse_duration, at most MAX_DURATION."""
    seconds = parse_duration(value)
    if seconds > MAX_DURATION:
        raise ValueError(f"{value!r} is longer than {MAX_DURATION / 86400:g} days (the limit)")
    return seconds


def parse_size(value: Any) -> int:
    """'2gb', '512mb', '100kb' or a plain number of bytes -> bytes, with Redis's meaning of the units."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 2gb or 512mb")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"'{value}' is not a size (a non-negative number of bytes)")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{_shown(value)} is not a size (like 512mb, 2gb, or a number of bytes){_ascii_hint(value)}")
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _SIZE_UNITS[unit]


def matches(pattern: str, text: str) -> bool:
    """JSON-Schema-style search, except that a final `$` really means the end: 'acme\\n' is not a tenant.

    Classes are ASCII as in JSON Schema's ECMA-262 regexes: `\\d` is 0-9, not '١٢'.
    """
    try:
        found = re.search(pattern, text, re.ASCII)
    except re.error:  # a pattern that asks for (?u) itself
        found = re.search(pattern, text)
    return found is not None and (not pattern.endswith("$") or pattern.endswith("\\$") or found.end() == len(text))


def convert(param: Param, raw: Any) -> Any:
    """Convert and check one value; ValueError says what is wrong in the operator's terms."""
    kind = param.type
    if kind == "string":
        value: Any = raw if isinstance(raw, str) else str(raw)
    elif kind == "integer":
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(f"'{raw}' is not an integer")
        if isinstance(raw, int | float):
            value = int(raw)
        elif isinstance(raw, str) and _INTEGER.match(raw):
            try:
                value = int(raw.strip())
            except ValueError:  # longer than Python's 4300-digit limit
                raise ValueError(f"'{raw[:20]}...' is not an integer (too long)") from None
        else:
            raise ValueError(f"{_shown(raw)} is not an integer{_ascii_hint(raw)}")
    elif kind == "number":
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and _NUMBER.match(raw):
            value = float(raw.strip())
        else:
            raise ValueError(f"{_shown(raw)} is not a number{_ascii_hint(raw)}")
        if not math.isfinite(value):
            raise ValueError(f"'{raw}' is not a number")
    elif kind == "boolean":
        value = parse_bool(raw)
    elif kind == "duration":
        value = parse_duration(raw)
    elif kind == "size":
        value = parse_size(raw)
    else:  # the schema allows nothing else; this guards hand-built Params
        raise ValueError(f"unknown parameter type '{kind}'")
    if param.pattern is not None and not matches(param.pattern, str(raw)):
        raise ValueError(f"'{raw}' does not match {param.pattern}")
    if param.enum is not None and value not in param.enum and raw not in param.enum:
        raise ValueError(f"'{raw}' is not one of {', '.join(map(str, param.enum))}")
    if param.minimum is not None and isinstance(value, int | float) and value < param.minimum:
        raise ValueError(f"{raw} is below the minimum {param.minimum}")
    if param.maximum is not None and isinstance(value, int | float) and value > param.maximum:
        raise ValueError(f"{raw} is above the maximum {param.maximum}")
    return value


def resolve(
    params: tuple[Param, ...],
    given: Mapping[str, Any],
    *,
    procedure: str,
    interactive_later: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """All params of a procedure from --var values and defaults; every problem reported at once."""
    errors: list[str] = []
    unknown = sorted(set(given) - {p.name for p in params})
    for name in unknown:
        errors.append(f"--var {name}: {procedure} has no parameter '{name}'")
    values: dict[str, Any] = {}
    for param in params:
        if param.name in given:
            raw = given[param.name]
        elif param.default is not None:
            raw = param.default
        elif param.required and param.name not in interactive_later:
            errors.append(f"--var {param.name}: required ({param.description or param.type})")
            continue
        else:
            values[param.name] = None
            continue
        try:
            values[param.name] = convert(param, raw)
        except ValueError as exc:
            shown = "[SECRET]" if param.secret else None
            msg = str(exc) if shown is None else "invalid value (not shown: secret)"
            errors.append(f"--var {param.name}: {msg}")
    if errors:
        raise UsageError(f"invalid parameters for {procedure}:\n  " + "\n  ".join(errors))
    return values


def parse_var_options(pairs: tuple[str, ...]) -> dict[str, str]:
    """`--var NAME=VALUE` pairs; the value may itself contain '='."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--var expects NAME=VALUE, got '{pair}'")
        out[name.strip()] = value
    return out
