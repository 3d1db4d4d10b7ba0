"""The incident's facts, derived from the rows: milestones, durations, runs, people, targets, changes.

The incident starts at the first `detected` milestone note (when the first signal came, even if it
was recorded later), else at the first recorded event. Durations are measured from that start.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from engine.timeline import evidence, fmt
from engine.timeline.model import Approval, Change, Entry, Facts, Row, RunSummary, Source


def incident_start(entries: Sequence[Entry]) -> datetime | None:
    """The earliest `impact-start` or `detected` note's time, else the earliest event's."""
    marked = [e.time for e in entries if e.type == "note" and e.event.get("milestone") in ("impact-start", "detected")]
    if marked:
        return min(marked)
    return min((e.time for e in entries), default=None)


def _milestone(rows: Sequence[Row], name: str, *, latest: bool = False) -> Row | None:
    found = [r for r in rows if r.milestone == name]
    if not found:
        return None
    return max(found, key=lambda r: r.time) if latest else min(found, key=lambda r: r.time)


def _since(moment: datetime | None, start: datetime | None) -> timedelta | None:
    return moment - start if moment is not None and start is not None else None


def _unique(values: Iterable[str | None]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        if value and value != "?" and value not in out:
            out.append(value)
    return tuple(out)


def run_summaries(sources: Sequence[Source]) -> tuple[RunSummary, ...]:
    """One summary per run transcript, in start order; a cut-off run's outcome is `cut off`."""
    out = []
    for s in sources:
        if s.kind != "run":
            continue
        end = s.end or {}
        duration = end.get("duration_ms")
        last = s.events[-1] if s.events else {}
        out.append(
            RunSummary(
                run_id=s.run_id,
                procedure=s.procedure or "?",
                title=s.title,
                mode=s.mode or "?",
                operator=s.operator or "?",
                target=s.target,
                started=fmt.parse_time(s.header.get("time")) if s.header else None,
                outcome=str(end.get("outcome")) if s.ended else "cut off",
                exit_code=end.get("exit_code") if isinstance(end.get("exit_code"), int) else None,
                duration=fmt.millis_delta(duration),
                ref=f"{s.run_id}#{last.get('seq', '?')}",
            )
        )
    out.sort(key=lambda r: (r.started is None, r.started or datetime.min, r.run_id))
    return tuple(out)


def _changes(rows: Sequence[Row]) -> tuple[Change, ...]:
    out = []
    approvers: dict[tuple[str, str], str] = {}
    for row in rows:
        if row.status == "approved":
            approvers[(row.run_id, row.what.removeprefix("Approved: "))] = row.who
        for text in row.changes:
            out.append(
                Change(
                    time=row.time,
                    ref=row.ref,
                    procedure=row.procedure,
                    step=row.what,
                    where=row.where,
                    text=text,
                    predicted=row.predicted,
                    approved_by=approvers.get((row.run_id, row.what)),
                )
            )
    return tuple(out)


def _approvals(rows: Sequence[Row]) -> tuple[Approval, ...]:
    return tuple(
        Approval(
            time=r.time,
            ref=r.ref,
            procedure=r.procedure,
            step=r.what.split(": ", 1)[-1],
            by=r.who,
            method=r.result,
            command=r.command,
            refused=r.status == "refused",
            reason=r.result.removeprefix("REFUSED: ") if r.status == "refused" else None,
        )
        for r in rows
        if r.type in ("approval.given", "approval.refused")
    )


def facts_of(
    incident: str | None,
    sources: Sequence[Source],
    rows: Sequence[Row],
    start: datetime | None,
    entries: Sequence[Entry] = (),
) -> Facts:
    """Everything the header and the post-mortem state as fact."""
    by_run = {s.run_id: s for s in sources}
    impact_start = _milestone(rows, "impact-start")
    acknowledged = _milestone(rows, "acknowledged")
    detected = _milestone(rows, "detected")
    declared = _milestone(rows, "declared")
    mitigated = _milestone(rows, "mitigated")
    resolved = _milestone(rows, "resolved", latest=True)
    first_signal = detected.time if detected else start
    began = impact_start.time if impact_start else first_signal
    severity, severity_ref = evidence.severity(entries)
    first_text = detected.what if detected else (f"first recorded event: {rows[0].what}" if rows else None)
    runs = run_summaries(sources)
    operators = _unique(
        [r.operator for r in runs]
        + [r.who.removesuffix(" (--yes)") for r in rows if r.type in ("approval.given", "approval.refused", "note")]
    )
    return Facts(
        incident=incident or next((s.incident for s in sources if s.incident), None),
        start=start,
        first_signal=first_signal,
        first_signal_text=first_text,
        declared=declared.time if declared else None,
        mitigated=mitigated.time if mitigated else None,
        resolved=resolved.time if resolved else None,
        duration=_since(resolved.time if resolved else None, first_signal),
        detection_gap=_since(declared.time if declared else None, first_signal),
        time_to_mitigate=_since(mitigated.time if mitigated else None, began),
        runs=runs,
        operators=operators,
        targets=_unique(r.target for r in runs),
        changes=_changes(rows),
        approvals=_approvals(rows),
        failures=tuple(r for r in rows if r.status in ("failed", "warning", "cut-off") and r.type != "run.ended"),
        notes=tuple(r for r in rows if r.type == "note"),
        impact_start=impact_start.time if impact_start else None,
        acknowledged=acknowledged.time if acknowledged else None,
        time_to_detect=_since(detected.time if detected else None, impact_start.time if impact_start else None),
        time_to_acknowledge=_since(acknowledged.time if acknowledged else None, first_signal),
        time_to_resolve=_since(resolved.time if resolved else None, began),
        severity=severity,
        severity_ref=severity_ref,
        figures=evidence.figures(entries, by_run),
        findings=evidence.findings(entries, by_run),
        checks=evidence.checks(entries, by_run),
        follow_ups=evidence.follow_ups(entries, by_run),
        target_names=_unique(s.target_name for s in sources if s.kind == "run"),
    )
