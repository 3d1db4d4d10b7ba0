"""Read a transcript back, tolerating whatever a crash or an editor left in it.

The reader never raises on content (only on a missing file): it keeps every event it can parse and
describes the rest as `Problem`s, so the timeline can still render a damaged transcript and
`verify` can say exactly which line is wrong. Lines are split on b"\\n" only (never `splitlines`,
which also splits on U+2028 inside strings), and the chain is recomputed from the raw bytes.

It is bounded (docs/cli.md, "Limits"): a line longer than MAX_LINE_BYTES is hashed for the chain
but not parsed, JSON nested deeper than MAX_JSON_DEPTH is not accepted as an event, and nothing
past MAX_TRANSCRIPT_BYTES is read: each is a `Problem`, never an exception or a hang.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

MAX_LINE_BYTES = 64 * 1024 * 1024
"""A transcript line longer than this is not parsed (the writer's lines are far shorter)."""
MAX_JSON_DEPTH = 64
"""Nesting of arrays and objects in one event."""
MAX_INT_DIGITS = 4300
"""Digits of an integer (Python's own conversion limit); NaN, Infinity and 1e400 are refused too: the
writer never writes them."""
MAX_TRANSCRIPT_BYTES = 1024 * 1024 * 1024
"""Nothing past this many bytes of one file is read."""
_CHUNK = 1024 * 1024


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
    events: list[dict[str, Any]] = []
    lines: list[int] = []
    problems: list[Problem] = []
    chain_ok = True
    run_id: str | None = None
    expected_seq = 0
    previous_digest: str | None = None
    ended_at: int | None = None
    last_unparsable = False
    partial = b""
    partial_size = 0
    count = 0

    with open(path, "rb") as handle:
        for number, line in enumerate(_lines(handle), start=1):
            if not line.complete:
                partial, partial_size = line.head, line.size
                break
            count = number
            if line.raw is None:
                event, error = None, line.error
            else:
                event, error = _parse(line.raw)
            previous, previous_digest = previous_digest, line.digest
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
            if previous is None:
                if prev is not None:
                    chain_ok = False
                    here.append("prev_sha256 should be null on the first line: earlier lines were removed")
            elif prev != previous:
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
                here.append(f"run_id changes from {_short(run_id)} to {_short(rid)}")

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
    if partial_size:
        if partial_size > MAX_TRANSCRIPT_BYTES:
            tail = Problem(
                count + 1, None, f"the file goes on past {MAX_TRANSCRIPT_BYTES:,} bytes (the limit): not read"
            )
        else:
            shown = partial[:40].decode("utf-8", errors="replace")
            tail = Problem(
                count + 1,
                None,
                f"half-written last line ({partial_size} bytes, no newline: {shown!r}...): "
                "the writer stopped mid-write",
            )
    header = events[0] if events and events[0].get("type") == "run.started" else None
    return Transcript(
        path=path,
        events=events,
        problems=problems,
        ended=bool(events) and events[-1].get("type") == "run.ended",
        cut_off=bool(partial_size) or (count > 0 and last_unparsable),
        chain_ok=chain_ok,
        run_id=run_id,
        header=header,
        lines=lines,
        tail=tail,
        line_count=count,
    )


@dataclass(frozen=True)
class _Line:
    raw: bytes | None  # None when too long to keep
    digest: str  # sha256 of the line without its newline: what the next line's prev_sha256 names
    size: int
    complete: bool  # False for the last bytes of a file that does not end in a newline
    error: str = ""
    head: bytes = b""  # the first bytes, to show


def _lines(handle: IO[bytes]) -> Iterator[_Line]:
    """The file's lines, split on b"\\n" only, each read at most MAX_LINE_BYTES at a time."""
    total = 0
    while total <= MAX_TRANSCRIPT_BYTES:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        total += len(raw)
        if raw.endswith(b"\n"):
            yield _Line(raw[:-1], hashlib.sha256(raw[:-1]).hexdigest(), len(raw) - 1, True)
            continue
        if len(raw) <= MAX_LINE_BYTES:
            yield _Line(raw, hashlib.sha256(raw).hexdigest(), len(raw), False, head=raw[:40])
            return
        digest, size, ended = hashlib.sha256(raw), len(raw), False  # too long: hash the rest, keep none of it
        while total <= MAX_TRANSCRIPT_BYTES:
            chunk = handle.readline(_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if chunk.endswith(b"\n"):
                digest.update(chunk[:-1])
                size += len(chunk) - 1
                ended = True
                break
            digest.update(chunk)
            size += len(chunk)
        if total > MAX_TRANSCRIPT_BYTES:
            yield _Line(None, digest.hexdigest(), total, False)
            return
        message = f"line of {size:,} bytes, longer than {MAX_LINE_BYTES:,} (the limit): not parsed"
        yield _Line(None, digest.hexdigest(), size, ended, message, head=raw[:40])
    yield _Line(None, "", total, False)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _NumberError(ValueError):
    pass


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _NumberError(f"integer of {len(text)} characters, over {MAX_INT_DIGITS} digits (the limit)")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NumberError(f"number {text[:40]} is not finite")
    return value


def _constant(text: str) -> float:
    raise _NumberError(f"{text} is not a number a transcript holds")


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in `value` (iterative: it runs on untrusted data)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                return level
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    if not raw.strip():
        return None, "empty line"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except _NumberError as exc:
        return None, str(exc)
    except ValueError as exc:
        return None, f"not valid JSON ({str(exc)[:200]})"
    except RecursionError:
        return None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels (the limit)"
    if not isinstance(value, dict):
        return None, f"not a JSON object (a {type(value).__name__})"
    if _depth(value) > MAX_JSON_DEPTH:
        return None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels (the limit)"
    return value, ""
