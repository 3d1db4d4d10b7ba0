"""`runbook transcript verify`: is this transcript whole, untampered and well-formed?

Combines the reader's structural checks (JSON, gap-free seq, hash chain, one run id) with the JSON
Schema of every event. A run that was cut off (no run.ended, or a half-written last line) is a
warning, not a failure: that is what a crash looks like, and nothing that happened was lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from engine.transcript.reader import Problem, read_transcript

SCHEMA_NAME = "transcript-event.schema.json"


@dataclass(frozen=True)
class VerifyReport:
    """The verdict on one transcript; `problems` are ordered by line, first bad line first."""

    ok: bool
    problems: list[Problem]
    warnings: list[str]
    events: int
    path: Path | None = None
    signing: str = "unsigned"

    def render(self) -> str:
        """Human-readable lines for the CLI: the verdict, then each problem and warning."""
        name = str(self.path) if self.path is not None else "transcript"
        if self.ok:
            head = f"{name}: ok ({self.events} events, hash chain intact; {self.signing})"
        else:
            first = self.problems[0] if self.problems else None
            head = f"{name}: {len(self.problems)} problem(s); first bad line: {first.line if first else '?'}"
        out = [head]
        out.extend(f"  {p}" for p in self.problems)
        out.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(out)


def verify_transcript(path: Path | str, allowed_signers: Any = None) -> VerifyReport:
    """Check `path` line by line. FileNotFoundError if it does not exist.

    Signatures are always checked against the key they name; `allowed_signers` (an AllowedSigners)
    also demands that every approval and the run's end are signed by someone it lists.
    """
    path = Path(path)
    transcript = read_transcript(path)
    problems = list(transcript.problems)
    warnings: list[str] = []

    validator = _validator()
    for number, event in zip(transcript.lines, transcript.events, strict=True):
        seq = event.get("seq") if isinstance(event.get("seq"), int) else None
        kind = event.get("type")
        label = f"{kind}: " if isinstance(kind, str) else ""
        for error in sorted(validator.iter_errors(event), key=lambda e: [str(p) for p in e.absolute_path]):
            where = _json_path(error.absolute_path)
            at = f"{where}: " if where != "$" else ""
            problems.append(Problem(number, seq, f"schema: {label}{at}{error.message}"))

    signing = "unsigned"
    if (transcript.events and any("signature" in e for e in transcript.events)) or allowed_signers is not None:
        from engine.transcript.signatures import check_signatures

        signed = check_signatures(transcript.lines, transcript.events, allowed_signers)
        problems.extend(Problem(line, None, message) for line, message in signed.problems)
        warnings.extend(signed.warnings)
        signing = signed.summary()

    if not transcript.events and not transcript.problems:
        problems.append(Problem(1, None, "no events: the transcript is empty"))
    problems.sort(key=lambda p: p.line)

    if transcript.tail is not None:
        warnings.append(f"{transcript.tail}; the run was cut off")
    if transcript.events and not transcript.ended:
        last_line, last = transcript.lines[-1], transcript.events[-1]
        if not all(e.get("type") == "note" for e in transcript.events):  # a notes file never ends
            warnings.append(
                f"no run.ended: the run was cut off after line {last_line} (seq {last.get('seq')}, "
                f"{last.get('type')} at {last.get('time')})"
            )
    only_notes = all(e.get("type") == "note" for e in transcript.events)
    if transcript.events and transcript.header is None and not only_notes:
        warnings.append("no run.started header on line 1: the start of the run is missing")
    monos = [e.get("mono_ns") for e in transcript.events]
    for i in range(1, len(monos)):
        a, b = monos[i - 1], monos[i]
        if isinstance(a, int) and isinstance(b, int) and b < a:
            warnings.append(f"line {transcript.lines[i]}: mono_ns goes backwards ({a} -> {b})")
            break

    return VerifyReport(
        ok=not problems,
        problems=problems,
        warnings=warnings,
        events=len(transcript.events),
        path=path,
        signing=signing,
    )


def _json_path(parts: Any) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _schema_path(name: str) -> Path:
    try:
        from engine.resources import schema_path
    except ImportError:
        return Path(__file__).resolve().parents[2] / "schemas" / name
    return Path(schema_path(name))


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator  # lazy: `runbook --help` must not import jsonschema

    schema = json.loads(_schema_path(SCHEMA_NAME).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)
