"""Read a transcript back, tolerating whatever a crash or an editor left in it.

The reader never raises on content (only on a missing file): it keeps every event it can parse and
describes the rest as `Problem`s, so the timeline can still render a damaged transcript and
`verify` can say exactly which line is wrong. Lines are split on b"\\n" only (never `splitlines`,
which also splits on U+2028 inside strings), and the chain is recomputed from the raw bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a transcript, at a 1-based line (and the event's seq when known)."""

    line: int
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (seq {self.seq})" if self.seq is not None else "")
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Transcript:
    """The parsed events of one transcript file and what is wrong with it."""

    path: Path
    events: list[dict[str, Any]]
    problems: list[Problem]
    ended: bool
    cut_off: bool
    chain_ok: bool
    run_id: str | None
    header: dict[str, Any] | None
    lines: list[int] = field(default_factory=list)
    """The 1-based line number of each event in `events`."""
    tail: Problem | None = None
    """The half-written last line (no newline) a writer that died mid-write leaves; not in `problems`."""
    line_count: int = 0
    """Complete lines in the file."""


def read_transcript(path: Path | str) -> Transcript:
    """Parse `path` (FileNotFoundError if missing); damage is reported, never raised."""
    path = Path(path)
    data = path.read_bytes()
    raw_lines = data.split(b"\n")
    partial = raw_lines.pop()  # b"" when the file ends with a newline (or is empty)

    events: list[dict[str, Any]] = []
    lines: list[int] = []
    problems: list[Problem] = []
    chain_ok = True
    run_id: str | None = None
    expected_seq = 0
    prev_raw: bytes | None = None
    ended_at: int | None = None
    last_unparsable = False

    for number, raw in enumerate(raw_lines, start=1):
        event, error = _parse(raw)
        previous_raw, prev_raw = prev_raw, raw
        last_unparsable = event is None
        if event is None:
            problems.append(Problem(number, None, error))
            continue
        seq = event.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            seq = None
        here: list[str] = []

        # seq: gap-free from 0
        gap = False
        if seq is None:
            here.append("seq is missing or not an integer")
        elif seq != expected_seq:
            if seq > expected_seq:
                missing = seq - expected_seq
                gap = True
                jump = f"jumps from {expected_seq - 1} to {seq}" if expected_seq else f"starts at {seq}"
                here.append(f"seq gap: seq {jump}: {missing} event(s) missing before this line")
            else:
                here.append(f"seq goes back: expected {expected_seq}, got {seq} (line repeated or reordered)")
        if seq is not None:
            expected_seq = seq + 1

        # hash chain
        prev = event.get("prev_sha256", "<missing>")
        if previous_raw is None:
            if prev is not None:
                chain_ok = False
                here.append("prev_sha256 should be null on the first line: earlier lines were removed")
        else:
            want = hashlib.sha256(previous_raw).hexdigest()
            if prev != want:
                chain_ok = False
                if prev == "<missing>":
                    here.append("prev_sha256 is missing")
                elif gap:
                    here.append(f"prev_sha256 does not match line {number - 1}: lines were removed before this line")
                else:
                    here.append(
                        f"prev_sha256 does not match line {number - 1}: line {number - 1} was changed or removed"
                    )

        # one run per file
        rid = event.get("run_id")
        if run_id is None and isinstance(rid, str) and not events:
            run_id = rid
        elif rid != run_id:
            here.append(f"run_id changes from {run_id!r} to {rid!r}")

        kind = event.get("type")
        if kind == "run.started" and events:
            here.append("run.started is not the first event")
        if ended_at is not None:
            here.append(f"event after run.ended (line {ended_at})")
        if kind == "run.ended" and ended_at is None:
            ended_at = number

        problems.extend(Problem(number, seq, message) for message in here)
        events.append(event)
        lines.append(number)

    tail = None
    if partial:
        shown = partial[:40].decode("utf-8", errors="replace")
        tail = Problem(
            len(raw_lines) + 1,
            None,
            f"half-written last line ({len(partial)} bytes, no newline: {shown!r}...): the writer stopped mid-write",
        )
    header = events[0] if events and events[0].get("type") == "run.started" else None
    return Transcript(
        path=path,
        events=events,
        problems=problems,
        ended=bool(events) and events[-1].get("type") == "run.ended",
        cut_off=bool(partial) or (bool(raw_lines) and last_unparsable),
        chain_ok=chain_ok,
        run_id=run_id,
        header=header,
        lines=lines,
        tail=tail,
        line_count=len(raw_lines),
    )


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    if not raw.strip():
        return None, "empty line"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
    try:
        value = json.loads(text)
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(value, dict):
        return None, f"not a JSON object (a {type(value).__name__})"
    return value, ""
