"""Sources into one order: each file by `seq`, files merged by time, the same run kept once.

A run given twice (the same path, or a copy) is kept once: the most complete copy wins and a copy
that disagrees with it is reported, never silently mixed in. Notes are ordered by when they happened
(`at`), since a note recorded later belongs where it happened.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from engine.timeline.fmt import parse_time
from engine.timeline.model import Entry, Notice, Source
from engine.transcript.reader import Transcript

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_source(transcript: Transcript) -> Source:
    """A parsed transcript as a timeline source, with the lines its problems make suspect."""
    events = tuple(transcript.events)
    run_id = transcript.run_id or transcript.path.stem
    is_notes = transcript.header is None and events and all(e.get("type") == "note" for e in events)
    suspect: set[int] = set()
    for problem in transcript.problems:
        if "prev_sha256 does not match" in problem.message and "removed before" not in problem.message:
            suspect.add(problem.line - 1)  # that line was changed: the next line's hash says so
        else:
            suspect.add(problem.line)
    return Source(
        path=str(transcript.path),
        run_id=run_id,
        kind="notes" if is_notes else "run",
        header=transcript.header,
        events=events,
        lines=tuple(transcript.lines),
        ended=transcript.ended,
        tail=transcript.tail.message if transcript.tail else None,
        chain_ok=transcript.chain_ok,
        problems=tuple(str(p) for p in transcript.problems),
        suspect_lines=frozenset(suspect),
    )


def dedupe(sources: Iterable[Source]) -> tuple[list[Source], list[Notice]]:
    """One source per run id (the most complete copy), and notices for copies that disagree."""
    groups: dict[str, list[Source]] = {}
    seen_paths: set[Path] = set()
    for source in sources:
        real = Path(source.path).resolve()
        if real in seen_paths:
            continue
        seen_paths.add(real)
        groups.setdefault(source.run_id, []).append(source)
    kept: list[Source] = []
    notices: list[Notice] = []
    for run_id, copies in groups.items():
        best = max(copies, key=lambda s: (s.ended, s.chain_ok, len(s.events), -len(s.problems)))
        others = [s for s in copies if s is not best]
        for other in others:
            differs = _first_difference(best, other)
            if differs is not None:
                notices.append(
                    Notice(
                        "duplicate",
                        run_id,
                        f"{other.path} holds the same run as {best.path} but differs at seq {differs}; "
                        f"the timeline uses {best.path}",
                    )
                )
        if others:
            best = replace(best, copies=tuple(s.path for s in others))
        kept.append(best)
    return kept, notices


def _first_difference(a: Source, b: Source) -> int | None:
    by_seq = {e.get("seq"): e for e in a.events if isinstance(e.get("seq"), int)}
    for event in b.events:
        seq = event.get("seq")
        if isinstance(seq, int) and seq in by_seq and by_seq[seq] != event:
            return seq
    return None


def entries_of(source: Source) -> list[Entry]:
    """A source's events in its own order: a run by seq, a notes file by when each note happened.

    An event with no readable time takes the time of the one before it, so it keeps its place.
    """
    out: list[Entry] = []
    last = _EPOCH
    for index, (event, line) in enumerate(zip(source.events, source.lines, strict=True)):
        moment = parse_time(event.get("time")) or last
        if event.get("type") == "note":
            moment = parse_time(event.get("at")) or moment
        last = moment
        seq = event.get("seq")
        out.append(Entry(source.run_id, seq if isinstance(seq, int) else -1 - index, moment, event, line))
    if source.kind == "notes":
        out.sort(key=lambda e: (e.time, e.seq))
    else:
        out.sort(key=lambda e: e.seq)
    return out


def merge(sources: Sequence[Source]) -> list[Entry]:
    """All sources' entries in one order: each source's own order kept, sources interleaved by time."""
    lists = [entries_of(s) for s in sources]
    lists = [lst for lst in lists if lst]
    lists.sort(key=lambda lst: (lst[0].time, lst[0].run_id))
    return list(heapq.merge(*lists, key=lambda e: e.time))
