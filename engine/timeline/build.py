"""Parsed transcripts in, one `Timeline` out: dedupe, merge, rows, facts, integrity notices. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from engine.timeline.facts import facts_of, incident_start
from engine.timeline.keyrows import key_rows
from engine.timeline.merge import dedupe, merge, to_source
from engine.timeline.model import Entry, Notice, Source, Timeline
from engine.timeline.rows import source_rows
from engine.transcript.reader import Transcript

PROBLEMS_SHOWN = 3


def build_timeline(transcripts: Sequence[Transcript], incident: str | None = None) -> Timeline:
    """The timeline of these transcripts (runs and notes files), whatever state they are in."""
    sources, notices = dedupe(to_source(t) for t in transcripts)
    entries = merge(sources)
    start = incident_start(entries)
    position = {id(e): i for i, e in enumerate(entries)}
    own: dict[str, list[Entry]] = {}
    for entry in entries:  # the merge keeps each source's own order
        own.setdefault(entry.run_id, []).append(entry)
    placed = [p for s in sources for p in source_rows(s, own.get(s.run_id, []), start)]
    placed.sort(key=lambda p: (position[id(p.anchor)], p.after))
    rows = tuple(p.row for p in placed)
    facts = facts_of(incident, sources, rows, start, entries)
    return Timeline(
        facts=facts,
        rows=rows,
        sources=tuple(sources),
        entries=tuple(entries),
        notices=tuple(integrity_notices(sources)) + tuple(notices),
        key_rows=key_rows(rows, sources, frozenset(f.ref for f in facts.findings)),
    )


def integrity_notices(sources: Sequence[Source]) -> list[Notice]:
    """What a reader must know first: broken hash chains and damage, then cut-off runs."""
    out: list[Notice] = []
    for s in sources:
        label = f"{s.run_id} ({s.procedure or s.kind}, {s.path})"
        if not s.chain_ok:
            shown = "; ".join(s.problems[:PROBLEMS_SHOWN])
            out.append(
                Notice(
                    "chain",
                    s.run_id,
                    f"hash chain broken in {label}: {shown}. The file was changed after it was written: "
                    "its rows are not evidence until the original is found",
                )
            )
        elif s.problems:
            out.append(Notice("problem", s.run_id, f"{label}: " + "; ".join(s.problems[:PROBLEMS_SHOWN])))
    for s in sources:
        if s.cut_off and s.events:
            last = s.events[-1]
            how = "no run.ended" if s.kind == "run" and not s.ended else "ends mid-line"
            if s.tail and s.kind == "run" and not s.ended:
                how += " and a half-written last line"
            out.append(
                Notice(
                    "cut-off",
                    s.run_id,
                    f"{s.run_id} ({s.procedure or s.kind}) was cut off: {how}; the last complete event is "
                    f"seq {last.get('seq')} ({last.get('type')}) at {last.get('time')}",
                )
            )
    return out
