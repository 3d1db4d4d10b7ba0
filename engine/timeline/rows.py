"""Events into table rows: who did what, where, with what result, and what changed.

Noise is left out (decisions, `approval.requested`, the `step.started` of a step that finished): a
step is one row, when it finished, with the command from its `step.started`. A step that started
and never finished, and a run that ends without `run.ended`, get rows of their own, because that is
where a reader must look at the target before trusting anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.outcome import Outcome, RunOutcome
from engine.spec.model import Effect
from engine.timeline import fmt
from engine.timeline.changes import changes_text
from engine.timeline.model import MILESTONES, Entry, Row, Source

OUTPUT_SHOWN = 4000
"""Characters of a step's output or result kept for the folded view."""

_METHODS = {
    "flag": "approved by --yes",
    "yes": "approved (answered yes)",
    "typed-target": "approved (typed target name)",
}
_RUN_STATUS: dict[str, str] = {  # a run's (or a fleet child's) outcome -> the row's status
    RunOutcome.OK: "ok",
    RunOutcome.FINDINGS: "warning",
    RunOutcome.REFUSED: "refused",
    RunOutcome.STOPPED: "refused",
}


@dataclass(frozen=True)
class Placed:
    """A row and where it goes: after the entry it is anchored to (`after` breaks ties)."""

    anchor: Entry
    after: int
    row: Row


def _step(event: Mapping[str, Any]) -> Mapping[str, Any]:
    step = event.get("step")
    return step if isinstance(step, Mapping) else {}


def _key(event: Mapping[str, Any]) -> tuple[Any, ...]:
    step = _step(event)
    return (step.get("id"), step.get("iteration"), step.get("call_depth"), step.get("procedure"))


def _step_name(event: Mapping[str, Any]) -> str:
    step = _step(event)
    name = str(step.get("name") or step.get("id") or "step")
    if isinstance(step.get("iteration"), int):
        name += f" [item {step['iteration']}]"
    if step.get("call_depth") and step.get("procedure"):
        name += f" (in {step['procedure']})"
    return name


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _params(header: Mapping[str, Any] | None) -> str | None:
    params = header.get("params") if header else None
    if not isinstance(params, Mapping) or not params:
        return None
    return "params: " + ", ".join(f"{k}={v}" for k, v in params.items())


class _Walk:
    """Turns one source's entries, in order, into placed rows."""

    def __init__(self, source: Source, start: datetime | None):
        self.source = source
        self.start = start
        self.operator = source.operator or "?"
        self.started: dict[tuple[Any, ...], Entry] = {}
        self.pending: dict[tuple[Any, ...], Entry] = {}
        self.requested: dict[tuple[Any, ...], Mapping[str, Any]] = {}
        self.outputs: dict[tuple[Any, ...], list[str]] = {}
        self.refused: set[tuple[Any, ...]] = set()
        self.carried: list[Entry] = []
        """Damaged entries that made no row of their own: the next row carries their flag."""
        self.placed: list[Placed] = []

    def row(self, entry: Entry, *, anchor: Entry | None = None, after: int = 0, **fields: Any) -> None:
        damaged = [*self.carried, entry] if entry.line in self.source.suspect_lines else self.carried
        self.carried = []
        line_flag = None
        if damaged:
            lines = ", ".join(f"line {e.line} ({e.type})" for e in damaged)
            line_flag = f"{lines} of the transcript was changed or damaged after it was written"
        fields.setdefault("who", self.operator)
        fields.setdefault("where", "")
        fields.setdefault("time", entry.time)
        kind = fields.pop("type", entry.type)
        seq = entry.seq if entry.seq >= 0 else None
        row = Row(
            offset=fields["time"] - self.start if self.start else None,
            type=kind,
            ref=entry.ref,
            run_id=entry.run_id,
            seq=seq,
            line=entry.line,
            procedure=self.source.procedure,
            dry_run=self.source.dry_run,
            flag=line_flag,
            **fields,
        )
        self.placed.append(Placed(anchor or entry, after, row))

    # -- one method per event type ---------------------------------------------------------------
    def run_started(self, entry: Entry, e: Mapping[str, Any]) -> None:
        proc = self.source.procedure or "?"
        title = f": {self.source.title}" if self.source.title else ""
        what = f"Started {proc}{title}"
        if self.source.dry_run:
            what = f"Started {proc} as a DRY-RUN (nothing is changed){title}"
        self.row(
            entry,
            what=what,
            where=self.source.target or "",
            result=str(e.get("mode") or "live"),
            status="started",
            detail=_params(self.source.header),
        )

    def step_started(self, entry: Entry, e: Mapping[str, Any]) -> None:
        self.started[_key(e)] = entry
        self.pending[_key(e)] = entry

    def approval(self, entry: Entry, e: Mapping[str, Any]) -> None:
        key = _key(e)
        asked = self.requested.get(key, {})
        began = self.started.get(key)
        command = asked.get("command") or (began.event.get("command") if began else None)
        where = asked.get("where") or (began.event.get("where") if began else "") or ""
        by = _text(e.get("by")) or "?"
        if by == "flag":
            by = f"{self.operator} (--yes)"
        refused = entry.type == "approval.refused"
        if refused:
            self.refused.add(key)
        self.row(
            entry,
            who=by,
            what=f"{'Refused' if refused else 'Approved'}: {_step_name(e)}",
            where=str(where),
            result=f"REFUSED: {_text(e.get('reason')) or 'declined'}"
            if refused
            else _METHODS.get(_text(e.get("method")), f"approved ({_text(e.get('method'))})"),
            status="refused" if refused else "approved",
            command=_text(command) or None,
            detail=_text(asked.get("confirm")) or None,
        )

    def step_finished(self, entry: Entry, e: Mapping[str, Any]) -> None:
        key = _key(e)
        self.pending.pop(key, None)
        began = self.started.get(key)
        outcome = _text(e.get("outcome")) or "?"
        if outcome == Outcome.REFUSED and key in self.refused:
            return  # the approval.refused row already says it, with who and why
        raw_error = e.get("error")
        error: Mapping[str, Any] = raw_error if isinstance(raw_error, Mapping) else {}
        message = _text(error.get("message"))
        took = fmt.millis(e.get("duration_ms"))
        status, result = _outcome(outcome, message)
        raw_expectations = e.get("expectations")
        expectations = (
            [x for x in raw_expectations if isinstance(x, Mapping)] if isinstance(raw_expectations, list) else []
        )
        warnings = [
            x.get("message")
            for x in expectations
            if x.get("held") is False and x.get("severity") in ("critical", "warning")
        ]
        noted = [x.get("message") for x in expectations if x.get("held") is False and x.get("severity") == "info"]
        if warnings and status == "ok":
            status = "warning"
            result = "ok, WARNING: " + "; ".join(_text(w) for w in warnings)
        elif noted and status == "ok":
            result = "ok, NOTE: " + "; ".join(_text(w) for w in noted)
        if took:
            result += f" ({took})"
        predicted = outcome == Outcome.PREDICTED
        changes = changes_text(e.get("predicted_changes") if predicted else e.get("changes"))
        details = [x for x in (_text(e.get("summary")), _text(error.get("advice"))) if x]
        self.row(
            entry,
            what=_step_name(e),
            where=(_text(began.event.get("where")) if began else "") or self._redis_where(),
            result=result,
            status=status,
            command=_text(began.event.get("command")) or None if began else None,
            changes=changes,
            predicted=predicted,
            detail="\n".join(details) or None,
            output=_output(self.outputs.pop(key, []), e.get("result")),
        )

    def _redis_where(self) -> str:
        target = self.source.header.get("target") if self.source.header else None
        return _text(target.get("redis") or target.get("ssh") or "") if isinstance(target, Mapping) else ""

    def step_skipped(self, entry: Entry, e: Mapping[str, Any]) -> None:
        self.row(entry, what=_step_name(e), result=f"skipped: {_text(e.get('reason'))}", status="skipped")

    def operator_input(self, entry: Entry, e: Mapping[str, Any]) -> None:
        asked = e.get("question") or e.get("item") or _step_name(e)
        self.row(
            entry,
            who=_text(e.get("by")) or self.operator,
            what=f"Answered {asked!s}: {_text(e.get('value'))}",
            result=_text(e.get("kind")) or "input",
            status="info",
        )

    def host_key(self, entry: Entry, e: Mapping[str, Any]) -> None:
        self.row(
            entry,
            what=f"Accepted SSH host key {_text(e.get('key_type'))} {_text(e.get('fingerprint'))}",
            where=_text(e.get("host")),
            result=f"host key accepted ({_text(e.get('policy')) or 'policy unknown'})",
            status="info",
        )

    def note(self, entry: Entry, e: Mapping[str, Any]) -> None:
        milestone = e.get("milestone") if e.get("milestone") in MILESTONES else None
        written = fmt.parse_time(e.get("time"))
        later = written is not None and abs(written - entry.time) > timedelta(seconds=1)
        self.row(
            entry,
            who=_text(e.get("operator")) or "?",
            what=_text(e.get("text")),
            result=(str(milestone).upper() if milestone else "note")
            + (f" ({_text(e.get('severity'))})" if e.get("severity") else ""),
            status="milestone" if milestone else "note",
            milestone=milestone,
            recorded=written if later else None,
        )

    def run_ended(self, entry: Entry, e: Mapping[str, Any]) -> None:
        outcome = _text(e.get("outcome")) or "?"
        code = e.get("exit_code")
        took = fmt.millis(e.get("duration_ms"))
        result = f"{outcome} (exit {code})" + (f" in {took}" if took else "")
        self.row(
            entry,
            what=f"Finished {self.source.procedure or '?'}" + (" (dry-run)" if self.source.dry_run else ""),
            where=self.source.target or "",
            result=result,
            status=_RUN_STATUS.get(outcome, "failed"),
            detail=_text(e.get("error")) or None,
        )

    def fleet(self, entry: Entry, e: Mapping[str, Any]) -> None:
        """A rollout's parent: its plan, each target's child run and outcome, why it halted."""
        kind = entry.type
        if kind == "fleet.planned":
            targets = [_text(t) for t in e.get("targets") or ()]
            what = f"Rollout planned ({_text(e.get('mode'))}): {len(targets)} targets: {', '.join(targets)}"
            self.row(entry, what=what, result="planned", status="started")
        elif kind == "fleet.child.finished":
            reused = " (done in an earlier run, not run again)" if e.get("reused_from") else ""
            outcome = _text(e.get("outcome"))
            self.row(
                entry,
                what=f"Target {_text(e.get('target'))}: run {_text(e.get('child_run_id'))}{reused}",
                where=_text(e.get("target")),
                result=f"{outcome} (exit {e.get('exit_code')})",
                status=_RUN_STATUS.get(outcome, "failed"),
                detail="; ".join(_text(x) for x in e.get("failed_expectations") or ()) or None,
            )
        elif kind == "fleet.halted":
            self.row(entry, what="Rollout halted", result="halted", status="failed", detail=_text(e.get("reason")))
        elif kind == "step.resumed":
            self.row(
                entry,
                what=f"{_step_name(e)}: done in run {_text(e.get('from_run'))}, not run again",
                result="resumed",
                status="ok",
            )

    def finish(self, entries: Sequence[Entry]) -> None:
        """Rows for what the file does not say: steps never finished, a run cut off (both at its end)."""
        for entry in self.pending.values():
            effect = _text(entry.event.get("effect"))
            risky = effect in (str(Effect.WRITE), str(Effect.DESTRUCTIVE))
            self.row(
                entry,
                anchor=entries[-1],
                after=1,
                what=_step_name(entry.event),
                where=_text(entry.event.get("where")),
                result="started, never finished",
                status="cut-off",
                command=_text(entry.event.get("command")) or None,
                detail="a write step started and never finished: the command may or may not have reached the "
                "target; check it before re-running"
                if risky
                else None,
            )
        if not self.source.cut_off or not entries:
            return
        last = entries[-1]
        what = "Transcript ends here"
        if self.source.kind == "run" and not self.source.ended:
            what += " without run.ended: the run was cut off"
        if self.source.tail:
            what += " (the last line is half-written: the writer stopped mid-write)"
        where = self.source.target or ""
        self.row(
            last,
            after=2,
            type="cut-off",
            what=what,
            where=where,
            result="CUT OFF",
            status="cut-off",
            detail=self.source.tail,
        )


def _outcome(outcome: str, message: str) -> tuple[str, str]:
    """(status, result text) of a step.finished outcome."""
    if outcome == Outcome.OK:
        return "ok", "ok"
    if outcome == Outcome.PREDICTED:
        return "predicted", "predicted (dry-run, not sent)"
    if outcome == Outcome.REFUSED:
        return "refused", f"REFUSED: {message or 'not approved'}"
    if outcome == Outcome.SKIPPED:
        return "skipped", "skipped"
    label = "FAILED" if outcome == Outcome.FAILED else outcome.upper()
    return "failed", f"{label}: {message}" if message else label


def _output(chunks: list[str], result: Any) -> str | None:
    """What a step printed (or returned), cut to a size worth folding into a page."""
    if chunks:
        text = "\n".join(chunks)
    elif result is None or (not isinstance(result, dict | list) and len(str(result)) < 80):
        return None  # a scalar result is already in the row (the step's summary or outcome)
    else:
        text = result if isinstance(result, str) else json.dumps(result, indent=1, ensure_ascii=False, default=str)
    return text if len(text) <= OUTPUT_SHOWN else text[:OUTPUT_SHOWN] + f"\n... ({len(text)} characters)"


_HANDLERS = {
    "run.started": _Walk.run_started,
    "step.started": _Walk.step_started,
    "approval.given": _Walk.approval,
    "approval.refused": _Walk.approval,
    "step.finished": _Walk.step_finished,
    "step.skipped": _Walk.step_skipped,
    "operator.input": _Walk.operator_input,
    "host_key.accepted": _Walk.host_key,
    "note": _Walk.note,
    "run.ended": _Walk.run_ended,
    "fleet.planned": _Walk.fleet,
    "fleet.child.finished": _Walk.fleet,
    "fleet.halted": _Walk.fleet,
    "step.resumed": _Walk.fleet,
}


def source_rows(source: Source, entries: Sequence[Entry], start: datetime | None) -> list[Placed]:
    """The rows of one source, each placed after the entry it belongs to."""
    walk = _Walk(source, start)
    for entry in entries:
        before = len(walk.placed)
        kind = entry.type
        if kind == "approval.requested":
            walk.requested[_key(entry.event)] = entry.event
        elif kind == "step.output":
            walk.outputs.setdefault(_key(entry.event), []).append(_text(entry.event.get("output")))
        elif kind in _HANDLERS:
            _HANDLERS[kind](walk, entry, entry.event)
        if entry.line in source.suspect_lines and len(walk.placed) == before:
            walk.carried.append(entry)
    walk.finish(entries)
    return walk.placed
