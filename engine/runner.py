"""Walks a procedure's steps: when, foreach, retry/until, the gate, expect, register, on_failure, call.

The runner knows nothing of Redis or SSH: a step kind turns a rendered body into an `Action` that
says its effect, where it goes and how to run it; the runner asks the gate, records events and
applies the step's rules. Every event goes to the transcript before the operator sees it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine import template
from engine.context import Connections, Progress, StepContext
from engine.errors import (
    ActionFailed,
    ExitCode,
    Interrupted,
    MutationRefused,
    RunbookError,
    StepAborted,
    StoppedError,
    UsageError,
)
from engine.gate import ApprovalRequest, Gate
from engine.operator import Operator
from engine.spec.model import Effect, Procedure, Step
from engine.spec.params import parse_count, parse_duration
from engine.steps import Action, get
from engine.transcript.redact import Redactor
from engine.transcript.writer import TranscriptWriter, sha256_text

MAX_STEP_EXECUTIONS = 10_000  # a goto loop that never ends is a bug in the procedure, not an incident
# `--yes` approves one execution of one rendered command, not a loop: past these caps every further
# change is asked on the terminal, or refused (exit 3) when there is none.
MAX_CHANGE_VISITS = 3  # visits of one changing step (in one procedure frame) that reach the gate
MAX_CHANGES_BY_FLAG = 50  # changes approved in one run
RESULT_ITEMS_KEPT = 200
MAX_SAMPLES = 100_000  # a series is kept in memory and in the transcript: every 0s for 1h is a typo


@dataclass
class StepRecord:
    """One executed (or skipped) step, for the human summary and `--json`."""

    id: str
    name: str
    outcome: str
    effect: str
    duration_ms: float = 0.0
    result: Any = None
    summary: str | None = None
    message: str | None = None
    advice: str | None = None
    expectations: list[dict[str, Any]] = field(default_factory=list)
    depth: int = 0
    procedure: str = ""
    where: str = ""
    command: str = ""
    blast_radius: dict[str, Any] | None = None
    predicted_changes: list[dict[str, Any]] = field(default_factory=list)
    follow_up: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunState:
    findings: int = 0
    aborted_by: RunbookError | None = None
    records: list[StepRecord] = field(default_factory=list)
    approvals: int = 0
    refusals: int = 0
    executions: int = 0


@dataclass
class _Frame:
    """One run of one procedure: visits and gated visits of each step (caps on repeated changes), which
    steps ran, and what its changes measured and got approved (restore)."""

    visits: dict[str, int] = field(default_factory=dict)
    gated: dict[str, set[int]] = field(default_factory=dict)  # step id -> the visits that reached the gate
    ran: dict[str, bool] = field(default_factory=dict)
    measured: dict[str, dict[str, Any]] = field(default_factory=dict)
    approved: dict[str, dict[str, Any]] = field(default_factory=dict)
    planned: dict[str, tuple[str, str]] = field(default_factory=dict)  # step id -> (where, command) last planned


@dataclass(frozen=True)
class _Sampling:
    every: float
    duration: float | None
    count: int | None


def _status(outcome: str) -> dict[str, Any]:
    """`steps.<id>` before and after a step: the outcome beside the result, for branching on it."""
    return {"outcome": outcome, "error": None, "duration_ms": None, "result": None, "attempts": 0}


def _ending(exc: BaseException) -> str:
    """How the steps ended, as the finally decision records it."""
    if isinstance(exc, Interrupted):
        return "interrupted"
    if isinstance(exc, StepAborted):
        return "failed" if exc.exit_code == ExitCode.FINDINGS else "aborted"
    if isinstance(exc, StoppedError):
        return "refused"
    return "error"


@dataclass
class _Outcome:
    outcome: str  # ok | failed | error | skipped | predicted | refused
    result: Any = None
    message: str | None = None
    advice: str | None = None
    exit_code: int = ExitCode.OK
    really_ran: bool = True


class Runner:
    def __init__(
        self,
        *,
        transcript: TranscriptWriter,
        redactor: Redactor,
        connections: Connections,
        operator: Operator,
        gate: Gate,
        dry_run: bool,
        target_name: str,
        load_procedure: Callable[[str], Procedure],
        resolve_params: Callable[[Procedure, dict[str, Any]], dict[str, Any]],
        target_values: dict[str, Any],
        show_progress: bool = False,
        on_step: Callable[[StepRecord], None] = lambda record: None,
        resume: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.transcript = transcript
        self.redactor = redactor
        self.connections = connections
        self.operator = operator
        self.gate = gate
        self.dry_run = dry_run
        self.target_name = target_name
        self.load_procedure = load_procedure
        self.resolve_params = resolve_params
        self.target_values = target_values
        self.show_progress = show_progress
        self.on_step = on_step
        self.state = RunState()
        self.cleaning = 0  # > 0 while finally steps run: the session holds a signal back until they are done
        self._frames: dict[int, _Frame] = {}  # by call depth
        self._predicted: set[str] = set()  # registers that hold a dry-run's prediction, not a result
        # engine.resume.ResumePlan of the run this one continues: its done steps are reused, its in-doubt
        # change is asked about again on the terminal
        self.resume = resume
        self._doubt_asked = False
        self.clock = clock  # retry deadlines, durations and sampling: tests pass a fake one and never wait
        self.sleep = sleep

    # -- procedure level -----------------------------------------------------------------------
    def run(self, procedure: Procedure, params: dict[str, Any], *, depth: int = 0) -> dict[str, Any]:
        """Run every step, then the finally steps however the steps ended; returns the registered values.

        Raises StepAborted/RunbookError (or the interruption) to stop, after the cleanup ran.
        """
        values: dict[str, Any] = {
            **self.target_values,
            **params,
            "params": dict(params),
            "steps": {s.id: _status("not_run") for s in procedure.all_steps()},
        }
        frame = self._frames[depth] = _Frame()  # a finished frame at this depth is replaced
        try:
            self._run_steps(procedure, procedure.steps, values, frame, depth)
        except BaseException as exc:
            if procedure.finally_steps:
                self._run_finally(procedure, values, frame, depth, _ending(exc))
            raise
        if procedure.finally_steps:
            failure = self._run_finally(procedure, values, frame, depth, "ok")
            if failure is not None:
                raise failure
        return {k: v for k, v in values.items() if k not in self.target_values and k not in ("params", "steps")}

    def _run_steps(
        self, procedure: Procedure, steps: tuple[Step, ...], values: dict[str, Any], frame: _Frame, depth: int
    ) -> None:
        index = 0
        while index < len(steps):
            step = steps[index]
            self.state.executions += 1
            if self.state.executions > MAX_STEP_EXECUTIONS:
                raise UsageError(
                    f"{step.location}: more than {MAX_STEP_EXECUTIONS} step executions: a goto loop in the procedure?"
                )
            frame.visits[step.id] = frame.visits.get(step.id, 0) + 1
            jump = self._run_step(procedure, step, values, frame, depth)
            if jump is not None:
                index = next(i for i, s in enumerate(steps) if s.id == jump)
            else:
                index += 1

    def _run_finally(
        self, procedure: Procedure, values: dict[str, Any], frame: _Frame, depth: int, ending: str
    ) -> BaseException | None:
        """Every cleanup step, in order, whatever the others do; the first failure is returned, not raised.

        A signal during the cleanup is held back by the session until it is done (`cleaning`).
        """
        self.transcript.emit(
            "decision",
            step={"id": "finally", "name": f"cleanup of {procedure.id}", "call_depth": depth},
            expression="finally",
            value=ending,
            kind="finally",
        )
        self.cleaning += 1
        first: BaseException | None = None
        try:
            for step in procedure.finally_steps:
                try:
                    self._run_step(procedure, step, values, frame, depth)
                except (StepAborted, RunbookError) as exc:
                    first = first or exc
        finally:
            self.cleaning -= 1
        return first

    # -- step level ----------------------------------------------------------------------------
    def _ref(self, procedure: Procedure, step: Step, depth: int, iteration: int | None = None) -> dict[str, Any]:
        return {
            "id": step.id,
            "name": step.name,
            "kind": step.kind,
            "source": str(step.location),
            "index": step.index,
            "iteration": iteration,
            "call_depth": depth,
            "procedure": procedure.id,
        }

    def _run_step(
        self, procedure: Procedure, step: Step, values: dict[str, Any], frame: _Frame, depth: int
    ) -> str | None:
        if self.resume is not None and depth == 0 and step.foreach is None and not step.cleanup:
            done = self.resume.reuse(step)
            if done is not None:
                self._reuse(procedure, step, values, frame, depth, done)
                return None
        if step.kind == "restore" and step.action not in frame.measured:
            self._skip(procedure, step, values, frame, depth, None, f"'{step.action}' changed nothing in this run")
            return None
        nodes = self._nodes_of(procedure, step, values, depth)
        if nodes is not None:
            return self._run_items(procedure, step, values, frame, depth, nodes, "node")
        if step.foreach is None:
            if self._skipped_by_when(procedure, step, values, frame, depth, iteration=None):
                return None
            outcome = self._run_once(procedure, step, values, frame, depth, iteration=None)
            if step.register:
                values[step.register] = outcome.result
            frame.ran[step.id] = outcome.really_ran
            return self._after_failure(step, outcome) if outcome.outcome in ("failed", "error") else None
        items = self._evaluate(step, "foreach", step.foreach, values)
        if isinstance(items, dict):
            items = list(items.items())
        if not isinstance(items, list | tuple):
            raise UsageError(f"{step.location}: foreach gave {type(items).__name__}, not a list")
        return self._run_items(procedure, step, values, frame, depth, list(items), "item")

    def _context(
        self, procedure: Procedure, step: Step, values: dict[str, Any], depth: int, frame: _Frame | None = None
    ) -> StepContext:
        """What a kind may use while it plans and runs this step (and nothing else)."""
        return StepContext(
            connections=self.connections,
            operator=self.operator,
            redactor=self.redactor,
            procedure=procedure,
            step=step,
            dry_run=self.dry_run,
            values=values,
            call_procedure=lambda pid, p: self._call(pid, p, depth),
            show_progress=self.show_progress,
            recorded_change=frame.measured.get if frame is not None else (lambda _step_id: None),
        )

    def _nodes_of(self, procedure: Procedure, step: Step, values: dict[str, Any], depth: int) -> list[Any] | None:
        """The nodes a change aimed at several nodes runs on, one at a time (None: the step runs once)."""
        kind = get(step.kind) if step.kind != "block" else None
        if kind is None or kind.per_node is None or step.foreach is not None:
            return None
        try:
            body = template.render_data(step.action, values, shell_fields=kind.shell_fields, raw_fields=kind.raw_fields)
            return kind.per_node(body, self._context(procedure, step, values, depth))
        except (template.TemplateError, ValueError, TypeError, RunbookError):
            return None  # the step's own attempt meets the same problem and reports it

    def _run_items(
        self,
        procedure: Procedure,
        step: Step,
        values: dict[str, Any],
        frame: _Frame,
        depth: int,
        items: list[Any],
        name: str,
    ) -> str | None:
        """A foreach (`item`), or a change on several nodes (`node`): one run of the step per entry, in order."""
        results, statuses, worst, any_ran = [], [], None, False
        for i, item in enumerate(items):
            # `when` is decided per item: it may look at `item`
            scope = {**values, name: item, "loop": {"index": i, "first": i == 0, "last": i == len(items) - 1}}
            if self._skipped_by_when(procedure, step, scope, frame, depth, iteration=i):
                results.append(None)
                statuses.append(values["steps"][step.id])
                continue
            outcome = self._run_once(procedure, step, scope, frame, depth, iteration=i)
            results.append(outcome.result if name == "item" else _node_result(item, outcome))
            statuses.append(values["steps"][step.id])
            any_ran = any_ran or outcome.really_ran
            if outcome.outcome in ("failed", "error"):
                worst = worst or outcome
                if step.on_failure.action != "continue":
                    break  # abort or goto: the remaining items are not tried
        if step.register:
            values[step.register] = results
        values["steps"][step.id] = {
            **_status(worst.outcome if worst else ("ok" if any_ran else "skipped")),
            "error": worst.message if worst else None,
            "duration_ms": round(sum(s.get("duration_ms") or 0 for s in statuses), 3),
            "result": results,
            "items": statuses,
        }
        frame.ran[step.id] = any_ran
        return self._after_failure(step, worst) if worst else None

    def _reuse(
        self, procedure: Procedure, step: Step, values: dict[str, Any], frame: _Frame, depth: int, done: Any
    ) -> None:
        """A step the resumed run finished: its recorded result stands in for running it again."""
        self.transcript.emit(
            "step.resumed",
            step=self._ref(procedure, step, depth),
            from_run=self.resume.run_id,
            effect=done.effect,
            result=done.result,
            blast_radius=done.blast_radius,
        )
        if step.register:
            values[step.register] = done.result
        if step.kind == "block" and isinstance(done.result, dict):
            values.update(done.result)
        values["steps"][step.id] = {**_status("ok"), "result": done.result}
        frame.ran[step.id] = True
        if done.blast_radius:
            frame.measured.setdefault(step.id, done.blast_radius)
        message = f"done in run {self.resume.run_id}: not run again"
        self._record(
            StepRecord(step.id, step.name, "ok", done.effect, message=message, depth=depth, procedure=procedure.id)
        )

    def _in_doubt(self, step: Step, depth: int) -> dict[str, Any] | None:
        """The resumed run's change that started and never finished, the first time it comes up again."""
        doubt = self.resume.in_doubt if self.resume is not None else None
        if doubt is None or depth != 0 or step.id != doubt.step_id or self._doubt_asked:
            return None
        self._doubt_asked = True
        return {
            "run": self.resume.run_id,
            "started_at": doubt.started_at,
            "command": doubt.command,
            "was_approved": doubt.approved,
        }

    def _skipped_by_when(
        self,
        procedure: Procedure,
        step: Step,
        scope: dict[str, Any],
        frame: _Frame,
        depth: int,
        iteration: int | None,
    ) -> bool:
        if step.when is None:
            return False
        ref = self._ref(procedure, step, depth, iteration)
        decided = self._evaluate(step, "when", step.when, scope)
        self.transcript.emit("decision", step=ref, expression=step.when, value=bool(decided), kind="when")
        if decided:
            return False
        self._skip(procedure, step, scope, frame, depth, iteration, f"when: {step.when} is false")
        return True

    def _skip(
        self,
        procedure: Procedure,
        step: Step,
        scope: dict[str, Any],
        frame: _Frame,
        depth: int,
        iteration: int | None,
        reason: str,
    ) -> None:
        self.transcript.emit("step.skipped", step=self._ref(procedure, step, depth, iteration), reason=reason)
        frame.ran.setdefault(step.id, False)
        scope["steps"][step.id] = {**_status("skipped"), "error": None}
        self._record(
            StepRecord(step.id, step.name, "skipped", "-", message=reason, depth=depth, procedure=procedure.id)
        )

    def _after_failure(self, step: Step, outcome: _Outcome) -> str | None:
        policy = step.on_failure
        self.transcript.emit(
            "decision",
            step={"id": step.id, "name": step.name},
            expression="on_failure",
            value=policy.goto or policy.action,
            kind="on_failure",
        )
        if policy.action == "continue":
            return None
        if policy.action == "goto":
            return policy.goto
        raise StepAborted(outcome.exit_code, f"step '{step.id}' {outcome.outcome}: {outcome.message}")

    def _run_once(
        self,
        procedure: Procedure,
        step: Step,
        values: dict[str, Any],
        frame: _Frame,
        depth: int,
        iteration: int | None,
    ) -> _Outcome:
        ref = self._ref(procedure, step, depth, iteration)
        started = self.clock()
        if step.kind == "block":
            outcome, attempt = self._run_block(procedure, step, ref, values, frame, depth)
            effect, blast, changes = Effect.READ, None, []
        else:
            outcome, effect, blast, changes, attempt = self._attempts(procedure, step, ref, values, frame, depth)
        return self._finish(
            procedure, step, ref, values, frame, depth, started, outcome, effect, blast, changes, attempt
        )

    def _attempts(
        self,
        procedure: Procedure,
        step: Step,
        ref: dict[str, Any],
        values: dict[str, Any],
        frame: _Frame,
        depth: int,
    ) -> tuple[_Outcome, Effect, dict[str, Any] | None, list[dict[str, Any]], int]:
        """The step's attempts under its retry policy (whose numbers may be templates, rendered now)."""
        kind = get(step.kind)
        started = self.clock()
        try:
            attempts, interval, timeout = self._retry_policy(step, values)
        except UsageError as exc:
            self.transcript.emit("step.started", step=ref, effect="read", where="", command="", attempt=1)
            return _Outcome("error", message=str(exc), exit_code=ExitCode.USAGE), Effect.READ, None, [], 1
        deadline = started + timeout if step.retry else None
        # a check of a change that was not sent (dry-run, or skipped) has nothing to wait for
        unsent = step.verifies is not None and not frame.ran.get(step.verifies)
        attempt = 0
        while True:
            attempt += 1
            outcome, effect, blast, changes, final = self._attempt(
                procedure, step, kind, ref, values, frame, depth, attempt
            )
            if final or step.retry is None:
                break
            if step.retry.until is None:
                if outcome.outcome == "ok":
                    break  # retry without until: retry only while the step errors
            elif outcome.outcome == "ok" and unsent:
                why = "dry-run" if self.dry_run else "it did not run"
                outcome = _Outcome(
                    "ok",  # the read ran; only the wait is skipped (its expectations are predicted)
                    outcome.result,
                    message=f"until '{step.retry.until}' not polled: '{step.verifies}' was not sent ({why})",
                )
                self.transcript.emit(
                    "decision", step=ref, expression=step.retry.until, value="not polled", kind="until"
                )
                break
            elif outcome.outcome == "ok":
                scope = self._scope(step, values, outcome.result)
                done = self._evaluate(step, "retry.until", step.retry.until, scope)
                self.transcript.emit("decision", step=ref, expression=step.retry.until, value=bool(done), kind="until")
                if done:
                    break
            out_of_time = deadline is not None and self.clock() + interval > deadline
            if attempt >= attempts or out_of_time:
                if outcome.outcome == "ok":
                    outcome = _Outcome(
                        "failed",
                        outcome.result,
                        message=f"until '{step.retry.until}' did not hold after {attempt} attempts "
                        f"({self.clock() - started:.1f}s)",
                        exit_code=ExitCode.FINDINGS,
                    )
                break
            self.sleep(interval)
        return outcome, effect, blast, changes, attempt

    def _retry_policy(self, step: Step, values: dict[str, Any]) -> tuple[int, float, float]:
        if step.retry is None:
            return 1, 0.0, 0.0
        return (
            self._typed(step, "retry.attempts", step.retry.attempts, values, parse_count),
            self._typed(step, "retry.interval", step.retry.interval, values, parse_duration),
            self._typed(step, "retry.timeout", step.retry.timeout, values, parse_duration),
        )

    def _typed(self, step: Step, field_name: str, value: Any, values: dict[str, Any], parse: Any) -> Any:
        try:
            return template.typed(value, values, parse)
        except template.TemplateError as exc:
            raise UsageError(f"{step.location}: steps.{step.id}.{field_name}: {exc}") from None

    def _run_block(
        self,
        procedure: Procedure,
        step: Step,
        ref: dict[str, Any],
        values: dict[str, Any],
        frame: _Frame,
        depth: int,
    ) -> tuple[_Outcome, int]:
        """The inner steps as one: a failure that aborts inside ends the block (its on_failure decides)."""
        try:
            attempts, interval, _ = self._retry_policy(step, values)
        except UsageError as exc:
            return _Outcome("error", message=str(exc), exit_code=ExitCode.USAGE), 1
        registers = [s.register for s in step.action if s.register]
        attempt = 0
        while True:
            attempt += 1
            self.transcript.emit(
                "step.started", step=ref, effect="read", where="block", command=f"block {step.id}", attempt=attempt
            )
            try:
                self._run_steps(procedure, step.action, values, frame, depth)
                outcome = _Outcome("ok", {name: values.get(name) for name in registers})
            except StepAborted as exc:
                kind = "failed" if exc.exit_code == ExitCode.FINDINGS else "error"
                result = {name: values.get(name) for name in registers}
                outcome = _Outcome(kind, result, message=str(exc), exit_code=exc.exit_code)
            if step.retry is None:
                break
            if outcome.outcome == "ok":
                if step.retry.until is None:
                    break
                scope = self._scope(step, values, outcome.result)
                done = self._evaluate(step, "retry.until", step.retry.until, scope)
                self.transcript.emit("decision", step=ref, expression=step.retry.until, value=bool(done), kind="until")
                if done:
                    break
                if attempt >= attempts:
                    message = f"until '{step.retry.until}' did not hold after {attempt} attempts"
                    outcome = _Outcome("failed", outcome.result, message=message, exit_code=ExitCode.FINDINGS)
                    break
            elif attempt >= attempts:
                break
            self.sleep(interval)
        return outcome, attempt

    def _finish(
        self,
        procedure: Procedure,
        step: Step,
        ref: dict[str, Any],
        values: dict[str, Any],
        frame: _Frame,
        depth: int,
        started: float,
        outcome: _Outcome,
        effect: Effect,
        blast: dict[str, Any] | None,
        changes: list[dict[str, Any]],
        attempt: int,
    ) -> _Outcome:
        """Expectations, the summary line, the transcript record and `steps.<id>`, for any kind of step."""
        if step.secret and outcome.result is not None:
            # before anything renders the result (expect messages, show, the transcript, the console)
            _add_secrets(self.redactor, step.register or step.id, outcome.result)
        values["steps"][step.id] = {  # expectations and `show` may read this step's own duration and outcome
            **_status(outcome.outcome),
            "duration_ms": round((self.clock() - started) * 1000, 3),
            "result": outcome.result,
            "attempts": attempt,
        }
        expectations = (
            self._expectations(step, outcome, values, frame.ran) if outcome.outcome in ("ok", "predicted") else []
        )
        failed_critical = [e for e in expectations if e["held"] is False and e["severity"] == "critical"]
        for e in expectations:
            if e["held"] is False and e["severity"] in ("critical", "warning"):
                self.state.findings += 1
        if failed_critical and outcome.outcome == "ok":
            outcome = _Outcome(
                "failed", outcome.result, message=failed_critical[0]["message"], exit_code=ExitCode.FINDINGS
            )
        summary = None
        if step.show and outcome.outcome in ("ok", "failed", "predicted"):
            try:
                summary = self.redactor.text(
                    str(template.render(step.show, self._scope(step, values, outcome.result))).strip()
                )
            except template.TemplateError as exc:
                # a predicted change has no result to show: its line is simply left out, not an error
                summary = None if outcome.outcome == "predicted" else f"(show: {exc})"
        impact, follow_up = self._declared(step, outcome, values)
        where, command = frame.planned.pop(step.id, ("", ""))
        duration = (self.clock() - started) * 1000
        values["steps"][step.id].update(
            outcome=outcome.outcome,
            duration_ms=round(duration, 3),
            error=self.redactor.text(outcome.message)
            if outcome.outcome in ("failed", "error", "refused") and outcome.message
            else None,
        )
        fields: dict[str, Any] = {
            "step": ref,
            "outcome": outcome.outcome,
            "duration_ms": round(duration, 3),
            "effect": str(effect),
            "result": _shrink(self.redactor.data(outcome.result)),
        }
        if outcome.message and outcome.outcome in ("failed", "error", "refused"):
            fields["error"] = {"message": outcome.message, "advice": outcome.advice}
        elif outcome.message and outcome.outcome == "ok" and step.verifies:
            fields["note"] = outcome.message
        if expectations:
            fields["expectations"] = expectations
        if summary is not None:
            fields["summary"] = summary
        if impact:
            fields["impact"] = impact
        if follow_up:
            fields["follow_up"] = follow_up
        if blast:
            fields["blast_radius"] = blast
        if changes:
            fields["predicted_changes" if outcome.outcome == "predicted" else "changes"] = changes
        if attempt > 1:
            fields["attempts"] = attempt
        if step.cleanup:
            fields["cleanup"] = True
        self.transcript.emit("step.finished", **fields)
        record = StepRecord(
            step.id,
            step.name,
            outcome.outcome,
            str(effect),
            round(duration, 1),
            result=self.redactor.data(outcome.result),
            summary=summary,
            message=outcome.message,
            advice=outcome.advice,
            expectations=expectations,
            depth=depth,
            procedure=procedure.id,
            where=where,
            command=command,
            blast_radius=blast,
            predicted_changes=changes if outcome.outcome == "predicted" else [],
            follow_up=follow_up,
        )
        self._record(record)
        if outcome.outcome == "refused":
            raise StoppedError(outcome.message or "refused")
        if outcome.outcome == "predicted" and step.register:
            self._predicted.add(step.register)
        return outcome

    # -- pieces ------------------------------------------------------------------------------
    def _attempt(
        self,
        procedure: Procedure,
        step: Step,
        kind: Any,
        ref: dict[str, Any],
        values: dict[str, Any],
        frame: _Frame,
        depth: int,
        attempt: int,
    ) -> tuple[_Outcome, Effect, dict[str, Any] | None, list[dict[str, Any]], bool]:
        """Render, plan, gate and execute once. The last item says whether retrying makes no sense."""
        effect = step.effect or Effect.READ
        try:
            body = (
                step.action
                if kind.expressions
                else template.render_data(
                    step.action, values, shell_fields=kind.shell_fields, raw_fields=kind.raw_fields
                )
            )
            action = kind.plan(body, self._context(procedure, step, values, depth, frame))
            sampling = self._sampling(step, values) if step.sample is not None else None
        except (template.TemplateError, ValueError, TypeError) as exc:
            # a template, or a value rendered into a field that wants a number or a duration
            self.transcript.emit("step.started", step=ref, effect=str(effect), where="", command="", attempt=attempt)
            message = str(exc) if str(exc).startswith(str(step.location)) else f"{step.location}: {step.kind}: {exc}"
            return _Outcome("error", message=message, exit_code=ExitCode.USAGE), effect, None, [], True
        except RunbookError as exc:
            self.transcript.emit("step.started", step=ref, effect=str(effect), where="", command="", attempt=attempt)
            return self._error_outcome(exc), effect, None, [], isinstance(exc, UsageError)
        effect = max(action.effect, step.effect or Effect.READ)
        command = self.redactor.text(action.command)
        frame.planned[step.id] = (str(action.where or ""), command)
        self.transcript.emit(
            "step.started",
            durable=effect is not Effect.READ,
            step=ref,
            effect=str(effect),
            where=action.where,
            command=command,
            attempt=attempt,
        )
        if sampling is not None:
            if effect is not Effect.READ:
                message = f"{step.location}: sample: only a read step can be sampled (this one is {effect})"
                return _Outcome("error", message=message, exit_code=ExitCode.USAGE), effect, None, [], True
            sampled = self._execute(self._sampled(action, step, sampling), ref)
            _check_shape(step, sampled, sampled=True)
            return sampled, effect, None, [], False
        blast = None
        if effect is not Effect.READ:
            try:
                blast = self.redactor.data(action.measure()) if action.measure else None
            except RunbookError as exc:  # measuring failed: nothing was sent, the step errors
                if isinstance(exc, MutationRefused):
                    raise
                return self._error_outcome(exc), effect, None, [], False
            stopped = self._gate(step, ref, action, effect, command, values, blast, frame)
            if stopped is not None:
                if stopped.outcome == "predicted" and blast:
                    frame.measured.setdefault(step.id, blast)
                changes = action.changes(blast, None) if action.changes and stopped.outcome == "predicted" else []
                return stopped, effect, blast, changes, True
            if blast:
                frame.measured.setdefault(step.id, blast)  # what `restore:` puts back: the value before
        outcome = self._execute(action, ref, secret_name=(step.register or step.id) if step.secret else None)
        _check_shape(step, outcome)
        changes = []
        if outcome.outcome == "ok" and effect is not Effect.READ and action.changes:
            changes = action.changes(blast, outcome.result)
        return outcome, effect, blast, changes, False

    def _sampling(self, step: Step, values: dict[str, Any]) -> _Sampling:
        sample = step.sample
        assert sample is not None
        sampling = _Sampling(
            every=self._typed(step, "sample.every", sample.every, values, parse_duration),
            duration=self._typed(step, "sample.for", sample.duration, values, parse_duration)
            if sample.duration is not None
            else None,
            count=self._typed(step, "sample.count", sample.count, values, parse_count)
            if sample.count is not None
            else None,
        )
        planned = sampling.count or (
            (sampling.duration or 0) / sampling.every + 1 if sampling.every > 0 else float("inf")
        )
        if planned > MAX_SAMPLES:
            raise UsageError(
                f"{step.location}: steps.{step.id}.sample: {planned:g} samples (every {sampling.every:g}s) is more "
                f"than {MAX_SAMPLES:,}: sample less often"
            )
        return sampling

    def _sampled(self, action: Action, step: Step, sampling: _Sampling) -> Action:
        """The read run every `every`; Ctrl-C ends the series early and keeps it (the run goes on)."""

        def execute() -> dict[str, Any]:
            samples: list[dict[str, Any]] = []
            started = self.clock()
            total = sampling.count or int((sampling.duration or 0) / max(sampling.every, 1e-3)) + 1
            progress = Progress(f"sampling {step.id}", total, self.show_progress)
            interrupted = False
            try:
                while True:
                    at = self.clock() - started
                    sample: dict[str, Any] = {"t": round(at, 3), "at": utc_now()}
                    try:
                        sample["value"] = action.execute()
                    except MutationRefused:
                        raise
                    except RunbookError as exc:
                        sample.update(value=None, error=self.redactor.text(str(exc)))
                    samples.append(sample)
                    progress.advance(1)
                    if sampling.count is not None and len(samples) >= sampling.count:
                        break
                    next_at = len(samples) * sampling.every
                    if sampling.duration is not None and next_at > sampling.duration + 1e-9:
                        break
                    self.sleep(max(0.0, started + next_at - self.clock()))
            except Interrupted as exc:
                if exc.signum != signal.SIGINT:
                    raise
                interrupted = True
            except KeyboardInterrupt:
                interrupted = True
            finally:
                progress.finish()
            if interrupted:
                self.operator.tell(f"  sampling stopped by Ctrl-C: {len(samples)} samples kept")
            if samples and all("error" in s for s in samples):
                raise ActionFailed(samples[-1]["error"])
            return {
                "samples": samples,
                "readings": [s.get("value") for s in samples],  # not `values`: that is a mapping method
                "count": len(samples),
                "errors": sum(1 for s in samples if "error" in s),
                "interrupted": interrupted,
                "every_s": sampling.every,
                "elapsed_s": round(self.clock() - started, 3),
            }

        return Action(action.effect, action.where, action.command, execute)

    def _scope(self, step: Step, values: dict[str, Any], result: Any) -> dict[str, Any]:
        return {**values, "result": result, **({step.register: result} if step.register else {})}

    def _gate(
        self,
        step: Step,
        ref: dict[str, Any],
        action: Action,
        effect: Effect,
        command: str,
        values: dict[str, Any],
        blast: dict[str, Any] | None,
        frame: _Frame,
    ) -> _Outcome | None:
        """None to go ahead; else the outcome that replaces running (predicted in dry-run, or refused)."""
        if self.dry_run:
            predicted = action.predict(blast) if action.predict else None
            return _Outcome("predicted", predicted, message="dry-run: not sent", really_ran=False)
        digest = sha256_text(command)
        if step.kind == "restore" and step.action in frame.approved:
            # putting back what an approved change changed: that approval covers it, and says so
            original = frame.approved[step.action]
            self.transcript.emit(
                "approval.requested",
                step=ref,
                effect=str(effect),
                command=command,
                command_sha256=digest,
                where=action.where,
                blast_radius=blast or {},
                confirm=f"put back what '{step.action}' changed",
            )
            self.state.approvals += 1
            self.transcript.emit(
                "approval.given",
                step=ref,
                by=original["by"],
                method="pre-approved",
                command_sha256=digest,
                pre_approved_by={"step": step.action, **original},
            )
            return None
        confirm = None
        if step.confirm:
            try:
                confirm = self.redactor.text(str(template.render(step.confirm, values)))
            except template.TemplateError as exc:
                confirm = f"(confirm text failed: {exc})"
        repeat = self._repeat(step, ref["call_depth"])
        doubt = self._in_doubt(step, ref["call_depth"])
        if doubt is not None:  # never re-sent on a flag: the operator sees what is there now and decides
            sent = (
                "it had been approved and may or may not have reached the target"
                if doubt["was_approved"]
                else "it had not been approved yet, so it was most likely not sent"
            )
            repeat = (
                f"IN DOUBT: run {doubt['run']} started this change at {doubt['started_at']} and stopped before it "
                f"finished; {sent}. The blast radius below is measured now"
            )
        self.transcript.emit(
            "approval.requested",
            step=ref,
            effect=str(effect),
            command=command,
            command_sha256=digest,
            where=action.where,
            blast_radius=blast or {},
            confirm=confirm,
            **({"repeat": repeat} if repeat else {}),
            **({"in_doubt": doubt} if doubt else {}),
        )
        try:
            decision = self.gate.review(
                ApprovalRequest(
                    step_id=step.id,
                    step_name=step.name,
                    effect=effect,
                    where=action.where,
                    command=command,
                    command_sha256=digest,
                    target_name=self.target_name,
                    confirm=confirm,
                    blast_radius=blast or {},
                    repeat=repeat,
                )
            )
        except Interrupted as exc:  # a signal (hang-up, Ctrl-C) while asking: a refusal, then the run ends
            self.state.refusals += 1
            self.transcript.emit(
                "approval.refused",
                step=ref,
                by=self.operator.name,
                reason=f"interrupted by {exc}",
                method="none",
                command_sha256=digest,
            )
            raise
        if not decision.approved:
            self.state.refusals += 1
            self.transcript.emit(
                "approval.refused",
                step=ref,
                by=decision.by,
                reason=decision.reason,
                method=decision.method,
                command_sha256=digest,
            )
            return _Outcome(
                "refused", message=f"not approved: {decision.reason}", exit_code=ExitCode.STOPPED, really_ran=False
            )
        self.state.approvals += 1
        self.transcript.emit(
            "approval.given",
            step=ref,
            by=decision.by,
            method=decision.method,
            command_sha256=digest,
            note=decision.note or None,
        )
        frame.approved.setdefault(step.id, {"by": decision.by, "method": decision.method, "command_sha256": digest})
        return None

    def _repeat(self, step: Step, depth: int) -> str:
        """Why `--yes` does not cover this change: its step changed too often in this run, or the run did."""
        frame = self._frames.setdefault(depth, _Frame())
        visits = frame.gated.setdefault(step.id, set())
        visits.add(frame.visits.get(step.id, 1))
        if len(visits) > MAX_CHANGE_VISITS:
            return (
                f"step '{step.id}' is about to change something for the {_nth(len(visits))} time in this run "
                f"(a goto loop?): --yes covers at most {MAX_CHANGE_VISITS} visits of one changing step"
            )
        if self.state.approvals >= MAX_CHANGES_BY_FLAG:
            return (
                f"this run has already made {self.state.approvals} approved changes: "
                f"--yes covers at most {MAX_CHANGES_BY_FLAG} in one run"
            )
        return ""

    def _execute(self, action: Action, ref: dict[str, Any], secret_name: str | None = None) -> _Outcome:
        try:
            result = action.execute()
        except StoppedError as exc:  # nobody to answer, or the operator said no: recorded as refused
            return _Outcome(
                "refused", message=self.redactor.text(str(exc)), exit_code=ExitCode.STOPPED, really_ran=False
            )
        except (StepAborted, MutationRefused, KeyboardInterrupt):
            raise
        except RunbookError as exc:
            return self._error_outcome(exc)
        if secret_name is not None and result is not None:
            _add_secrets(self.redactor, secret_name, result)  # before its output is written anywhere
        if action.output is not None:
            text = action.output(result)
            if text:
                self.transcript.output(ref, text, stream="stdout")
        reason = action.failed(result) if action.failed else None
        if reason:
            return _Outcome("failed", result, message=reason, exit_code=ExitCode.UNREACHABLE)
        return _Outcome("ok", result)

    def _error_outcome(self, exc: RunbookError) -> _Outcome:
        if isinstance(exc, StoppedError | MutationRefused):
            raise exc
        code = exc.exit_code if not isinstance(exc, ActionFailed) else ExitCode.UNREACHABLE
        return _Outcome("error", message=self.redactor.text(str(exc)), advice=exc.advice, exit_code=code)

    def _expectations(
        self, step: Step, outcome: _Outcome, values: dict[str, Any], ran: dict[str, bool]
    ) -> list[dict[str, Any]]:
        if not step.expect:
            return []
        predicted = (
            outcome.outcome == "predicted"
            or (step.verifies is not None and not ran.get(step.verifies))
            or (self.dry_run and self._reads_a_prediction(step))
        )
        if outcome.outcome == "predicted" or self.dry_run:
            why = "predicted: a dry-run does not send the change this checks"
        else:
            why = f"not checked: '{step.verifies}', the change it verifies, did not run"
        scope = self._scope(step, values, outcome.result)
        out = []
        for expectation in step.expect:
            held = None if predicted else bool(self._evaluate(step, "expect", expectation.that, scope))
            message = expectation.message
            try:
                message = str(template.render(expectation.message, scope)).strip()
            except template.TemplateError:
                pass
            out.append(
                {
                    "that": expectation.that,
                    "severity": expectation.severity,
                    "held": held,
                    "message": self.redactor.text(message),
                    **({"reason": why} if held is None else {}),
                }
            )
        return out

    def _declared(
        self, step: Step, outcome: _Outcome, values: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The step's `impact:` figures and `follow_up:` texts, rendered once it ran (never for a prediction)."""
        if outcome.outcome not in ("ok", "failed") or not (step.impact or step.follow_up):
            return [], []
        scope = self._scope(step, values, outcome.result)

        def holds(when: str | None) -> bool:
            try:
                return when is None or bool(template.evaluate(when, scope))
            except template.TemplateError:
                return False

        impact = []
        for figure in step.impact:
            if not holds(figure.when):
                continue
            try:
                value = template.evaluate(figure.value, scope)
            except template.TemplateError as exc:
                value = f"(not measured: {exc})"
            impact.append({"name": figure.name, "value": self.redactor.data(value), "unit": figure.unit})
        follow_up = []
        for item in step.follow_up:
            if not holds(item.when):
                continue
            try:
                text = str(template.render(item.text, scope)).strip()
            except template.TemplateError as exc:
                text = f"{item.text} (text failed: {exc})"
            follow_up.append({"kind": item.kind, "text": self.redactor.text(" ".join(text.split()))})
        return impact, follow_up

    def _reads_a_prediction(self, step: Step) -> bool:
        """The step works on what a dry-run predicted (a file not written, a key not set): it checks a prediction."""
        if not self._predicted:
            return False
        kind = get(step.kind)
        if kind.expressions and isinstance(step.action, dict):
            names = set().union(*(template.expression_variables(str(v)) for v in step.action.values()))
        else:
            names = template.variables(step.action)
        for expectation in step.expect:
            names |= template.expression_variables(expectation.that)
        return bool(names & self._predicted)

    def _evaluate(self, step: Step, field_name: str, expression: str, values: dict[str, Any]) -> Any:
        try:
            return template.evaluate(expression, values)
        except template.TemplateError as exc:
            raise UsageError(f"{step.location}: steps.{step.id}.{field_name}: {exc}") from None

    def _call(self, procedure_id: str, params: dict[str, Any], depth: int) -> dict[str, Any]:
        if depth >= 8:
            raise UsageError(f"call {procedure_id}: calls nested more than 8 deep")
        callee = self.load_procedure(procedure_id)
        resolved = self.resolve_params(callee, params)
        registered = self.run(callee, resolved, depth=depth + 1)
        return {"procedure": procedure_id, **registered}

    def _record(self, record: StepRecord) -> None:
        self.state.records.append(record)
        self.on_step(record)


def _nth(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _check_shape(step: Step, outcome: _Outcome, *, sampled: bool = False) -> None:
    """Tests run with RUNBOOK_CHECK_RESULTS=1: a kind whose result drifts from its declared shape is a bug."""
    from engine.steps import results

    if outcome.outcome != "ok" or not results.checking():
        return
    problem = results.check_result(step.kind, step.action, outcome.result, sampled=sampled)
    if problem:
        raise AssertionError(f"{step.location}: {step.kind} result does not match its declared shape: {problem}")


def utc_now() -> str:
    """The engine's one time format (the `now` template value), for samples and parsers."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _add_secrets(redactor: Redactor, name: str, value: Any) -> None:
    """Every string inside a secret result becomes a secret: a generated password in a mapping included."""
    if isinstance(value, dict):
        for key, item in value.items():
            _add_secrets(redactor, f"{name}.{key}", item)
    elif isinstance(value, list | tuple):
        for item in value:
            _add_secrets(redactor, name, item)
    elif isinstance(value, str | bytes) and value:
        redactor.add(name, value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        redactor.add(name, str(value))


def _shrink(value: Any, depth: int = 0) -> Any:
    """Keep results readable in a transcript: long lists and strings are cut, with a note."""
    if isinstance(value, list):
        kept = [_shrink(v, depth + 1) for v in value[:RESULT_ITEMS_KEPT]]
        if len(value) > RESULT_ITEMS_KEPT:
            kept.append(f"... {len(value) - RESULT_ITEMS_KEPT} more items")
        return kept
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(k): _shrink(v, depth + 1) for k, v in items[:RESULT_ITEMS_KEPT]}
        if len(items) > RESULT_ITEMS_KEPT:
            out["..."] = f"{len(items) - RESULT_ITEMS_KEPT} more entries"
        return out
    if isinstance(value, str) and len(value) > 4096:
        return value[:4096] + f"... ({len(value)} chars)"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


def _node_result(node: dict[str, Any], outcome: _Outcome) -> dict[str, Any]:
    """One node's row of a change run on several nodes: {node, role, outcome, result, error}."""
    result = outcome.result
    if isinstance(result, list) and len(result) == 1 and isinstance(result[0], dict) and "node" in result[0]:
        result = result[0].get("result")
    return {
        "node": node.get("address"),
        "role": node.get("role"),
        "outcome": outcome.outcome,
        "result": result,
        "error": outcome.message if outcome.outcome in ("failed", "error") else None,
    }
