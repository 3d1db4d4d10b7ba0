"""`runbook note`: record what happened outside the engine into the incident's notes file.

The notes file is a transcript (same line format, same hash chain) appended to by each note, so an
alert that fired or a customer message sent sits on the timeline with the same guarantees as a run.
`--at` says when it happened, for the many things written down after the fact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from engine.errors import UsageError
from engine.timeline.incident import notes_path, notes_run_id
from engine.timeline.model import MILESTONES
from engine.transcript.redact import Redactor
from engine.transcript.writer import TranscriptWriter, format_time

FUTURE_SLACK = timedelta(minutes=1)
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_AGO = re.compile(r"-?(\d+)\s*([smhd])(?:\s+ago)?")
_SEVERITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,15}")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_at(text: str, now: datetime) -> datetime:
    """When something happened: RFC 3339 / ISO 8601 (no offset = UTC), `HH:MM[:SS]` today (UTC),
    or an age such as `-15m`, `15m ago`, `2h`. UsageError if unreadable or in the future."""
    value = text.strip()
    moment: datetime | None = None
    if m := _CLOCK.fullmatch(value):
        hour, minute, second = int(m[1]), int(m[2]), int(m[3] or 0)
        try:
            moment = now.astimezone(UTC).replace(hour=hour, minute=minute, second=second, microsecond=0)
        except ValueError:
            moment = None
    elif m := _AGO.fullmatch(value):
        moment = now - timedelta(**{_UNITS[m[2]]: int(m[1])})
    else:
        try:
            moment = datetime.fromisoformat(value.replace(" ", "T", 1) if " " in value else value)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    if moment is None:
        raise UsageError(
            f"--at {text!r}: not a time; use e.g. 2026-11-26T01:40:00Z, '2026-11-26 01:40' (UTC), 01:40 (today, "
            "UTC) or 15m (ago)"
        )
    if moment > now + FUTURE_SLACK:
        raise UsageError(f"--at {text!r} is in the future ({format_time(moment)}); give the full date")
    return moment.astimezone(UTC)


def add_note(
    directory: Path,
    incident: str,
    text: str,
    *,
    operator: str,
    milestone: str | None = None,
    at: datetime | None = None,
    redactor: Redactor | None = None,
    severity: str | None = None,
) -> tuple[Path, Mapping[str, Any]]:
    """Append one `note` event to the incident's notes file; returns the file and the event written."""
    if not text.strip():
        raise UsageError("a note needs some text")
    if milestone is not None and milestone not in MILESTONES:
        raise UsageError(f"--milestone must be one of {', '.join(MILESTONES)}")
    if severity is not None and not _SEVERITY.fullmatch(severity):
        raise UsageError(f"--severity {severity!r}: a short label such as SEV2, P1 or critical (letters, digits, '-')")
    path = notes_path(directory, incident)
    with TranscriptWriter.append_to(path, redactor or Redactor(), run_id=notes_run_id(incident)) as writer:
        event = writer.emit(
            "note",
            text=text,
            milestone=milestone,
            operator=operator,
            at=format_time(at) if at is not None else None,
            incident=incident,
            severity=severity or None,  # None: not written
        )
    return path, event
