"""The facts header as (label, lines) pairs, so Markdown, HTML and the post-mortem say the same thing."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from engine.timeline import fmt
from engine.timeline.model import Facts, RunSummary, Timeline

NOT_RECORDED = "not recorded (add it: runbook note ... --milestone {name} --at TIME)"


def when(moment: datetime | None, facts: Facts, zone: ZoneInfo | None, milestone: str) -> str:
    """A milestone's time with its T+ and local time, or how to record it."""
    if moment is None:
        return NOT_RECORDED.format(name=milestone)
    text = fmt.stamp(moment)
    there = fmt.local(moment, zone)
    if there:
        text += f" ({there})"
    if facts.start is not None and moment != facts.start:
        text += f", {fmt.offset(moment - facts.start)}"
    return text


def span(delta: timedelta | None, what: str, missing: str) -> str:
    return f"{fmt.duration(delta)} ({what})" if delta is not None else missing


def run_line(run: RunSummary) -> str:
    """One procedure run in a few words: `redis/wm-clear, live, ok (exit 0), 40 ms, by alice`."""
    code = f" (exit {run.exit_code})" if run.exit_code is not None else ""
    took = f", {fmt.duration(run.duration)}" if run.duration is not None else ""
    return f"{run.procedure}, {run.mode}, {run.outcome}{code}{took}, by {run.operator} [{run.run_id}]"


def fact_lines(timeline: Timeline, zone: ZoneInfo | None = None) -> list[tuple[str, list[str]]]:
    """The header rows of a timeline, in reading order."""
    f = timeline.facts
    first = fmt.stamp(f.first_signal)
    if f.first_signal is not None and zone is not None:
        first += f" ({fmt.local(f.first_signal, zone)})"
    if f.first_signal_text:
        first += f": {f.first_signal_text}"
    live = sum(1 for r in f.runs if r.mode == "live")
    runs = [run_line(r) for r in f.runs] or ["none"]
    lines: list[tuple[str, list[str]]] = [
        ("Incident", [f.incident or "(none given)"]),
        ("Severity", [f.severity or "not recorded (runbook note ... --severity SEV2)"]),
        *([("Impact started", [when(f.impact_start, f, zone, "impact-start")])] if f.impact_start else []),
        ("First signal", [first]),
        *([("Acknowledged", [when(f.acknowledged, f, zone, "acknowledged")])] if f.acknowledged else []),
        ("Declared", [when(f.declared, f, zone, "declared")]),
        ("Mitigated", [when(f.mitigated, f, zone, "mitigated")]),
        ("Resolved", [when(f.resolved, f, zone, "resolved")]),
        ("Duration", [span(f.duration, "first signal to resolved", "unknown: no resolved milestone")]),
        ("Detection gap", [span(f.detection_gap, "first signal to declared", "unknown: no declared milestone")]),
        *(
            [("Time to detect", [span(f.time_to_detect, "impact start to detected", "")])]
            if f.time_to_detect is not None
            else []
        ),
        (f"Procedures run ({len(f.runs)}, {live} live)", runs),
        ("Operators", [", ".join(f.operators) or "unknown"]),
        ("Targets touched", list(f.targets) or ["none"]),
        ("Changes made", [f"{len(f.live_changes)} (and {len(f.predicted_changes)} predicted by dry-runs)"]),
        (
            "Approvals",
            [f"{sum(not a.refused for a in f.approvals)} given, {sum(a.refused for a in f.approvals)} refused"],
        ),
    ]
    if zone is not None:
        lines.append(("Times", [f"UTC, with local time in {zone.key}"]))
    return lines
