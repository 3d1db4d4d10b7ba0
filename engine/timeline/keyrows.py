"""The key-events view: what a reader of an incident needs, one row per run plus what mattered in it.

Kept as rows: milestones and notes, approvals and refusals, findings (failed or warning steps),
changes made, cut-off runs, and a rollout's plan, each target's outcome and why it halted. Each run
becomes one row (at its start) saying what ran, where, by whom and how it ended; its steps, skipped
ones included, are folded into that row (`Row.steps`). A dry-run is that one row only, with every
change it predicted. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from engine.timeline.model import Row, Source

KEPT = ("milestone", "note", "approved", "refused", "failed", "warning", "cut-off")
STEP_TYPES = ("step.finished", "step.skipped", "step.started")
FLEET_TYPES = ("fleet.planned", "fleet.child.finished", "fleet.halted", "fleet.approval")  # a rollout's story


def _keep(row: Row, dry_run: bool, findings: frozenset[str]) -> bool:
    if row.type in ("run.started", "run.ended"):
        return False
    if row.type in FLEET_TYPES:
        return True
    if dry_run:
        return row.status == "cut-off"
    return row.status in KEPT or row.ref in findings or (bool(row.changes) and not row.predicted)


def _counts(rows: Sequence[Row]) -> str:
    steps = [r for r in rows if r.type in STEP_TYPES]
    skipped = [r for r in steps if r.status == "skipped"]
    findings = [r for r in steps if r.status in ("failed", "warning")]
    parts = [f"{len(steps) - len(skipped)} step(s) ran"]
    if skipped:
        parts.append(f"{len(skipped)} skipped")
    if findings:
        parts.append(f"{len(findings)} finding(s)")
    return ", ".join(parts)


def run_row(source: Source, rows: Sequence[Row]) -> Row:
    """The one row of a run: what ran where, by whom, how it ended; its rows folded inside."""
    first = next((r for r in rows if r.type == "run.started"), rows[0])
    ended = next((r for r in rows if r.type == "run.ended"), None)
    title = f": {source.title}" if source.title else ""
    proc = source.procedure or "?"
    if source.dry_run:
        what = f"Dry-run of {proc}{title} (nothing was changed)"
        status = "predicted"
    else:
        what = f"Ran {proc}{title}"
        status = ended.status if ended else "cut-off"
    result = "CUT OFF: no run.ended" if ended is None else ended.result + (" (dry-run)" if source.dry_run else "")
    predicted = tuple(c for r in rows if r.predicted for c in r.changes) if source.dry_run else ()
    details = [first.detail or "", _counts(rows)]
    if source.dry_run:
        warned = [f"{r.what}: {r.result}" for r in rows if r.status in ("failed", "warning") and r.type in STEP_TYPES]
        details += warned
    return replace(
        first,
        type="run",
        what=what,
        where=source.target or first.where,
        result=result,
        status=status,
        changes=predicted,
        predicted=bool(predicted),
        detail="\n".join(d for d in details if d) or None,
        steps=tuple(rows),
        flag=first.flag or next((r.flag for r in rows if r.flag), None),
    )


def key_rows(rows: Sequence[Row], sources: Sequence[Source], findings: frozenset[str] = frozenset()) -> tuple[Row, ...]:
    """The key events, in the order of the full rows; `findings` are the refs of steps with a failed check
    (an `info` one included: keys without a TTL are worth a row)."""
    runs = {s.run_id: s for s in sources if s.kind == "run"}
    of_run: dict[str, list[Row]] = {}
    for row in rows:
        of_run.setdefault(row.run_id, []).append(row)
    out: list[Row] = []
    placed: set[str] = set()
    for row in rows:
        source = runs.get(row.run_id)
        if source is None:
            out.append(row)
            continue
        if row.run_id not in placed:
            placed.add(row.run_id)
            out.append(run_row(source, of_run[row.run_id]))
        if _keep(row, source.dry_run, findings):
            out.append(row)
    return tuple(out)
