"""The timeline as JSON for other tools: merged events with their derived fields, rows, facts, notices.

Times are RFC 3339 UTC strings like the transcript's; durations are seconds (floats) plus the text
the other formats show. `events` are the transcript events as written, in timeline order, each with
a `derived` object (source `run-id#seq`, effective time, T+ and the indexes of its rows).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from engine.timeline import fmt
from engine.timeline.model import Row, Timeline

FORMAT = "runbook.timeline/1"


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else delta.total_seconds()


def _row(row: Row, zone: ZoneInfo | None) -> dict[str, Any]:
    return {
        "time": fmt.iso(row.time),
        "local_time": fmt.local(row.time, zone) or None,
        "t_plus": fmt.offset(row.offset),
        "offset_s": _seconds(row.offset),
        "who": row.who,
        "what": row.what,
        "where": row.where,
        "result": row.result,
        "status": row.status,
        "type": row.type,
        "source": row.ref,
        "run_id": row.run_id,
        "seq": row.seq,
        "line": row.line,
        "procedure": row.procedure,
        "milestone": row.milestone,
        "command": row.command,
        "changes": list(row.changes),
        "predicted": row.predicted,
        "dry_run": row.dry_run,
        "detail": row.detail,
        "output": row.output,
        "recorded": fmt.iso(row.recorded),
        "flag": row.flag,
    }


def _facts(timeline: Timeline) -> dict[str, Any]:
    f = timeline.facts
    return {
        "incident": f.incident,
        "start": fmt.iso(f.start),
        "first_signal": fmt.iso(f.first_signal),
        "first_signal_text": f.first_signal_text,
        "declared": fmt.iso(f.declared),
        "mitigated": fmt.iso(f.mitigated),
        "resolved": fmt.iso(f.resolved),
        "duration_s": _seconds(f.duration),
        "duration": fmt.duration(f.duration) if f.duration is not None else None,
        "detection_gap_s": _seconds(f.detection_gap),
        "detection_gap": fmt.duration(f.detection_gap) if f.detection_gap is not None else None,
        "time_to_mitigate_s": _seconds(f.time_to_mitigate),
        "operators": list(f.operators),
        "targets": list(f.targets),
        "runs": [
            {
                **asdict(r),
                "started": fmt.iso(r.started),
                "duration": fmt.duration(r.duration) if r.duration is not None else None,
                "duration_s": _seconds(r.duration),
            }
            for r in f.runs
        ],
        "changes": [{**asdict(c), "time": fmt.iso(c.time)} for c in f.changes],
        "approvals": [{**asdict(a), "time": fmt.iso(a.time)} for a in f.approvals],
        "severity": f.severity,
        "impact_start": fmt.iso(f.impact_start),
        "acknowledged": fmt.iso(f.acknowledged),
        "time_to_detect_s": _seconds(f.time_to_detect),
        "time_to_acknowledge_s": _seconds(f.time_to_acknowledge),
        "time_to_resolve_s": _seconds(f.time_to_resolve),
        "impact": [{**asdict(x), "time": fmt.iso(x.time)} for x in f.figures],
        "findings": [{**asdict(x), "time": fmt.iso(x.time)} for x in f.findings],
        "follow_ups": [asdict(x) for x in f.follow_ups],
    }


def _sources(timeline: Timeline) -> list[dict[str, Any]]:
    return [
        {
            "path": s.path,
            "run_id": s.run_id,
            "kind": s.kind,
            "procedure": s.procedure,
            "mode": s.mode,
            "operator": s.operator,
            "target": s.target,
            "events": len(s.events),
            "ended": s.ended,
            "cut_off": s.cut_off,
            "tail": s.tail,
            "chain_ok": s.chain_ok,
            "problems": list(s.problems),
            "copies": list(s.copies),
        }
        for s in timeline.sources
    ]


def to_json(timeline: Timeline, zone: ZoneInfo | None = None) -> dict[str, Any]:
    """The whole timeline as plain JSON data."""
    rows_of: dict[str, list[int]] = {}
    for index, row in enumerate(timeline.rows):
        rows_of.setdefault(row.ref, []).append(index)
    start = timeline.facts.start
    events = []
    for entry in timeline.entries:
        offset = entry.time - start if start else None
        derived = {
            "source": entry.ref,
            "time": fmt.iso(entry.time),
            "t_plus": fmt.offset(offset),
            "offset_s": _seconds(offset),
            "line": entry.line,
            "rows": rows_of.get(entry.ref, []),
        }
        events.append({**entry.event, "derived": derived})
    return {
        "format": FORMAT,
        "incident": timeline.facts.incident,
        "timezone": zone.key if zone else None,
        "chain_broken": timeline.chain_broken,
        "notices": [asdict(n) for n in timeline.notices],
        "facts": _facts(timeline),
        "sources": _sources(timeline),
        "rows": [_row(r, zone) for r in timeline.rows],
        "key_events": [{**_row(r, zone), "steps": [x.ref for x in r.steps]} for r in timeline.key_rows],
        "events": events,
    }


def render_json(timeline: Timeline, zone: ZoneInfo | None = None) -> str:
    return json.dumps(to_json(timeline, zone), indent=2, ensure_ascii=False, default=str) + "\n"
