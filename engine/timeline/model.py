"""The timeline's data: what every renderer (Markdown, HTML, JSON, post-mortem) is given.

Frozen dataclasses only; they are built by `engine.timeline.build` from parsed transcripts and never
touch a file, so every format shows exactly the same rows and facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

MILESTONES = ("impact-start", "detected", "acknowledged", "declared", "mitigated", "resolved")


@dataclass(frozen=True)
class Source:
    """One input file (after duplicates of the same run were dropped) and its integrity."""

    path: str
    run_id: str
    kind: str
    """`run` (a transcript with a run.started header) or `notes` (an incident's notes file)."""
    header: Mapping[str, Any] | None
    events: tuple[Mapping[str, Any], ...]
    lines: tuple[int, ...]
    ended: bool
    tail: str | None
    """What the half-written last line looks like, if the writer died mid-write."""
    chain_ok: bool
    problems: tuple[str, ...]
    suspect_lines: frozenset[int] = frozenset()
    """Lines whose content no longer matches the hash recorded after them, or that are damaged."""
    copies: tuple[str, ...] = ()
    """Other paths holding the same run, dropped as duplicates."""

    def _head(self, key: str) -> Any:
        return self.header.get(key) if self.header else None

    @property
    def procedure(self) -> str | None:
        proc = self._head("procedure")
        return str(proc.get("id")) if isinstance(proc, Mapping) and proc.get("id") else None

    @property
    def title(self) -> str | None:
        proc = self._head("procedure")
        return str(proc.get("title")) if isinstance(proc, Mapping) and proc.get("title") else None

    @property
    def mode(self) -> str | None:
        mode = self._head("mode")
        return str(mode) if mode else None

    @property
    def dry_run(self) -> bool:
        return self.mode in ("dry-run", "rehearsal")

    @property
    def operator(self) -> str | None:
        who = self._head("operator")
        return str(who) if who else None

    @property
    def incident(self) -> str | None:
        inc = self._head("incident")
        return str(inc) if inc else None

    @property
    def target(self) -> str | None:
        """The target as one string: its name and where it is, e.g. `sandbox (redis://127.0.0.1:6380/0)`."""
        target = self._head("target")
        if not isinstance(target, Mapping):
            return None
        name = self.target_name or ""
        places = [str(target[k]) for k in ("redis", "ssh", "http") if target.get(k)]
        if places and (not name or any(name in p for p in places)):
            return ", ".join(places)
        return f"{name} ({', '.join(places)})" if places else name or None

    @property
    def target_name(self) -> str | None:
        """The target as the inventory names it, environment included: `production/cache`."""
        target = self._head("target")
        if not isinstance(target, Mapping) or not target.get("name"):
            return None
        env = target.get("environment")
        return f"{env}/{target['name']}" if env else str(target["name"])

    @property
    def end(self) -> Mapping[str, Any] | None:
        return self.events[-1] if self.ended else None

    @property
    def cut_off(self) -> bool:
        """A run without run.ended, or any file ending in a half-written line."""
        return (self.kind == "run" and not self.ended) or self.tail is not None


@dataclass(frozen=True)
class Entry:
    """One event in the merged order, with the time it happened (a note's `at`, else its `time`)."""

    run_id: str
    seq: int
    time: datetime
    event: Mapping[str, Any]
    line: int

    @property
    def ref(self) -> str:
        return f"{self.run_id}#{self.seq}"

    @property
    def type(self) -> str:
        return str(self.event.get("type", ""))


@dataclass(frozen=True)
class Row:
    """One line of the timeline table: who did what where, with what result, and what changed."""

    time: datetime
    offset: timedelta | None
    who: str
    what: str
    where: str
    result: str
    status: str
    """milestone, note, started, ok, approved, refused, predicted, failed, warning, skipped, ended, cut-off, info."""
    type: str
    ref: str
    """`run-id#seq` of the event this row comes from."""
    run_id: str
    seq: int | None
    line: int = 0
    """1-based line of that event in its file."""
    procedure: str | None = None
    milestone: str | None = None
    command: str | None = None
    changes: tuple[str, ...] = ()
    predicted: bool = False
    """The changes would have been made: a dry-run, nothing was sent."""
    dry_run: bool = False
    detail: str | None = None
    output: str | None = None
    recorded: datetime | None = None
    """When a note was written, if it was recorded later than it happened."""
    flag: str | None = None
    """Integrity problem of the line this row comes from."""
    steps: tuple[Row, ...] = ()
    """In the key-events view, a run's row holds all the rows of that run (folded)."""


@dataclass(frozen=True)
class RunSummary:
    """One procedure run, for the facts header and the post-mortem's resolution section."""

    run_id: str
    procedure: str
    title: str | None
    mode: str
    operator: str
    target: str | None
    started: datetime | None
    outcome: str
    exit_code: int | None
    duration: timedelta | None
    ref: str


@dataclass(frozen=True)
class Change:
    """Something a step changed (or, in a dry-run, would have changed)."""

    time: datetime
    ref: str
    procedure: str | None
    step: str
    where: str
    text: str
    predicted: bool
    approved_by: str | None = None


@dataclass(frozen=True)
class Approval:
    """An approval given or refused at the gate, for the command it was asked about."""

    time: datetime
    ref: str
    procedure: str | None
    step: str
    by: str
    method: str
    command: str | None
    refused: bool
    reason: str | None = None


@dataclass(frozen=True)
class Figure:
    """One measured impact figure (a step's `impact:`), with the line that recorded it."""

    time: datetime
    ref: str
    procedure: str | None
    step: str
    name: str
    value: Any
    unit: str
    dry_run: bool = False


@dataclass(frozen=True)
class Finding:
    """A check that did not hold, with the values the step measured (its `show` line) as evidence."""

    time: datetime
    ref: str
    procedure: str | None
    step: str
    severity: str
    message: str
    evidence: str | None
    impact: bool
    """The step measures impact: the check is a symptom (Impact), not a contributing cause."""


@dataclass(frozen=True)
class Check:
    """An impact-measuring step's checks: all held, or not, at that moment."""

    time: datetime
    ref: str
    procedure: str | None
    step: str
    held: bool


@dataclass(frozen=True)
class FollowUp:
    """A declared follow-up of a step that ran; the same text from several runs is one item."""

    kind: str
    text: str
    refs: tuple[str, ...]
    procedure: str | None


@dataclass(frozen=True)
class Notice:
    """Something the reader must know before trusting the timeline: a broken chain, a cut-off run."""

    kind: str
    """chain, problem, cut-off, duplicate."""
    run_id: str
    text: str


@dataclass(frozen=True)
class Facts:
    """The header of the timeline: the incident's milestones and what was done, as far as recorded."""

    incident: str | None
    start: datetime | None
    first_signal: datetime | None
    first_signal_text: str | None
    declared: datetime | None
    mitigated: datetime | None
    resolved: datetime | None
    duration: timedelta | None
    """resolved - first signal."""
    detection_gap: timedelta | None
    """declared - first signal."""
    time_to_mitigate: timedelta | None
    runs: tuple[RunSummary, ...]
    operators: tuple[str, ...]
    targets: tuple[str, ...]
    changes: tuple[Change, ...]
    approvals: tuple[Approval, ...]
    failures: tuple[Row, ...]
    notes: tuple[Row, ...] = ()
    impact_start: datetime | None = None
    acknowledged: datetime | None = None
    time_to_detect: timedelta | None = None
    """detected - impact-start."""
    time_to_acknowledge: timedelta | None = None
    """acknowledged - detected."""
    time_to_resolve: timedelta | None = None
    """resolved - (impact-start, else first signal)."""
    severity: str | None = None
    severity_ref: str | None = None
    figures: tuple[Figure, ...] = ()
    findings: tuple[Finding, ...] = ()
    checks: tuple[Check, ...] = ()
    follow_ups: tuple[FollowUp, ...] = ()
    target_names: tuple[str, ...] = ()
    """Targets as `environment/name`, as the inventory names them."""

    @property
    def live_changes(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if not c.predicted)

    @property
    def predicted_changes(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.predicted)


@dataclass(frozen=True)
class Timeline:
    """Everything a renderer needs."""

    facts: Facts
    rows: tuple[Row, ...]
    sources: tuple[Source, ...]
    entries: tuple[Entry, ...]
    notices: tuple[Notice, ...] = field(default=())
    key_rows: tuple[Row, ...] = ()
    """The key events: milestones, notes, findings, approvals, refusals, changes, one row per run."""

    @property
    def chain_broken(self) -> bool:
        return any(n.kind == "chain" for n in self.notices)

    def view(self, detail: str = "full") -> tuple[Row, ...]:
        """The rows of a view: `key` (key events) or `full` (every row)."""
        return self.key_rows if detail == "key" else self.rows

    @property
    def days(self) -> list[tuple[str, list[Row]]]:
        return by_day(self.rows)


def by_day(rows: tuple[Row, ...] | list[Row]) -> list[tuple[str, list[Row]]]:
    """Rows grouped by UTC date, in order."""
    out: list[tuple[str, list[Row]]] = []
    for row in rows:
        day = row.time.strftime("%Y-%m-%d (%A)")
        if not out or out[-1][0] != day:
            out.append((day, []))
        out[-1][1].append(row)
    return out
