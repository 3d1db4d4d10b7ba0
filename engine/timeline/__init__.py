"""Incident timelines and post-mortem drafts, built from the engine's own transcripts and notes.

`build_timeline` (pure) turns parsed transcripts into a `Timeline`: each file ordered by seq, files
merged by time, duplicates dropped, rows with who/what/where/result and what changed, incident facts
and integrity notices, the key-events view (`keyrows`) and the evidence the runs recorded
(`evidence`: impact figures, findings, follow-ups, severity). The renderers (`markdown`, `html`,
`json_out`, `postmortem`) are pure too; `incident` and `notes` are the only modules that touch the
transcripts directory. docs/timeline.md.
"""

from __future__ import annotations

from engine.timeline.build import build_timeline
from engine.timeline.model import MILESTONES, Change, Entry, Facts, Notice, Row, RunSummary, Source, Timeline

__all__ = [
    "MILESTONES",
    "Change",
    "Entry",
    "Facts",
    "Notice",
    "Row",
    "RunSummary",
    "Source",
    "Timeline",
    "build_timeline",
]
