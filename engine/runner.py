"""Walks a procedure's steps: when, foreach, retry/until, the gate, expect, register, on_failure, call.

The runner knows nothing of Redis or SSH: a step kind turns a rendered body into an `Action` that
says its effect, where it goes and how to run it; the runner asks the gate, records events and
applies the step's rules. Every event goes to the transcript before the operator sees it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine import template
from engine.context import Connections, StepContext
from engine.errors import (
    ActionFailed,
    ExitCode,
    MutationRefused,
    RunbookError,
    StoppedError,
    UsageError,
)
from engine.gate import ApprovalRequest, Gate
from engine.operator import Operator
from engine.spec.model import Effect, Procedure, Step
from engine.steps import Action, get
from engine.transcript.redact import Redactor
from engine.transcript.writer import TranscriptWriter, sha256_text

MAX_STEP_EXECUTIONS = 10_000  # a goto loop that never ends is a bug in the procedure, not an incident
RESULT_ITEMS_KEPT = 200


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


@dataclass
class RunState:
    findings: int = 0
    aborted_by: RunbookError | None = None
    records: list[StepRecord] = field(default_factory=list)
    approvals: int = 0
    refusals: int = 0
    executions: int = 0


class StepAborted(Exception):
    """A step failed and its on_failure says abort."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code


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

    # -- procedure level -----------------------------------------------------------------------
    def run(self, procedure: Procedure, params: dict[str, Any], *, depth: int = 0) -> dict[str, Any]:
        """Run every step; returns the registered values. Raises StepAborted/RunbookError to stop."""
        values: dict[str, Any] = {**self.target_values, **params, "params": dict(params)}
        ran: dict[str, bool] = {}
        index = 0
        steps = procedure.steps
        while index < len(steps):
            step = steps[index]
            self.state.executions += 1
            if self.state.executions > MAX_STEP_EXECUTIONS:
                raise UsageError(
                    f"{step.location}: more than {MAX_STEP_EXECUTIONS} step executions: a goto loop in the procedure?"
                )
            jump = self._run_step(procedure, step, values, ran, depth)
            if jump is not None:
                index = next(i for i, s in enumerate(steps) if s.id == jump)
            else:
                index += 1
        return {k: v for k, v in values.items() if k not in self.target_values and k != "params"}

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
        self, procedure: Procedure, step: Step, values: dict[str, Any], ran: dict[str, bool], depth: int
    ) -> str | None:
        if step.foreach is None:
            if self._skipped_by_when(procedure, step, values, ran, depth, iteration=None):
                return None
            outcome = self._run_once(procedure, step, values, ran, depth, iteration=None)
            if step.register:
                values[step.register] = outcome.result
            ran[step.id] = outcome.really_ran
            return self._after_failure(step, outcome) if outcome.outcome in ("failed", "error") else None
        items = self._evaluate(step, "foreach", step.foreach, values)
        if isinstance(items, dict):
            items = list(items.items())
        if not isinstance(items, list | tuple):
            raise UsageError(f"{step.location}: foreach gave {type(items).__name__}, not a list")
        results, worst, any_ran = [], None, False
        for i, item in enumerate(items):
            # `when` is decided per item: it may look at `item`
            scope = {**values, "item": item, "loop": {"index": i, "first": i == 0, "last": i == len(items) - 1}}
            if self._skipped_by_when(procedure, step, scope, ran, depth, iteration=i):
                results.append(None)
                continue
            outcome = self._run_once(procedure, step, scope, ran, depth, iteration=i)
            results.append(outcome.result)
            any_ran = any_ran or outcome.really_ran
            if outcome.outcome in ("failed", "error"):
                worst = worst or outcome
                if step.on_failure.action != "continue":
                    break  # abort or goto: the remaining items are not tried
        if step.register:
            values[step.register] = results
        ran[step.id] = any_ran
        return self._after_failure(step, worst) if worst else None

    def _skipped_by_when(
        self,
        procedure: Procedure,
        step: Step,
        scope: dict[str, Any],
        ran: dict[str, bool],
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
        reason = f"when: {step.when} is false"
        self.transcript.emit("step.skipped", step=ref, reason=reason)
        ran.setdefault(step.id, False)
        self._record(
            StepRecord(step.id, step.name, "skipped", "-", message=reason, depth=depth, procedure=procedure.id)
        )
        return True

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
        ran: dict[str, bool],
        depth: int,
        iteration: int | None,
    ) -> _Outcome:
        ref = self._ref(procedure, step, depth, iteration)
        kind = get(step.kind)
        started = time.monotonic()
        attempts = step.retry.attempts if step.retry else 1
        deadline = started + step.retry.timeout if step.retry else None
        attempt = 0
        while True:
            attempt += 1
            outcome, effect, blast, changes, final = self._attempt(procedure, step, kind, ref, values, depth, attempt)
            if final or step.retry is None:
                break
            if step.retry.until is None:
                if outcome.outcome == "ok":
                    break  # retry without until: retry only while the step errors
            elif outcome.outcome == "ok":
                scope = self._scope(step, values, outcome.result)
                done = self._evaluate(step, "retry.until", step.retry.until, scope)
                self.transcript.emit("decision", step=ref, expression=step.retry.until, value=bool(done), kind="until")
                if done:
                    break
            out_of_time = deadline is not None and time.monotonic() + step.retry.interval > deadline
            if attempt >= attempts or out_of_time:
                if outcome.outcome == "ok":
                    outcome = _Outcome(
                        "failed",
                        outcome.result,
                        message=f"until '{step.retry.until}' did not hold after {attempt} attempts "
                        f"({time.monotonic() - started:.1f}s)",
                        exit_code=ExitCode.FINDINGS,
                    )
                break
            time.sleep(step.retry.interval)

        if step.secret and outcome.result is not None:
            # before anything renders the result (expect messages, show, the transcript, the console)
            _add_secrets(self.redactor, step.register or step.id, outcome.result)
        expectations = self._expectations(step, outcome, values, ran) if outcome.outcome in ("ok", "predicted") else []
        failed_critical = [e for e in expectations if e["held"] is False and e["severity"] == "critical"]
        for e in expectations:
            if e["held"] is False and e["severity"] in ("critical", "warning"):
                self.state.findings += 1
        if failed_critical and outcome.outcome == "ok":
            outcome = _Outcome(
                "failed", outcome.result, message=failed_critical[0]["message"], exit_code=ExitCode.FINDINGS
            )
        summary = None
        if step.show and outcome.outcome in ("ok", "failed"):
            try:
                summary = self.redactor.text(
                    str(template.render(step.show, self._scope(step, values, outcome.result))).strip()
                )
            except template.TemplateError as exc:
                summary = f"(show: {exc})"
        duration = (time.monotonic() - started) * 1000
        fields: dict[str, Any] = {
            "step": ref,
            "outcome": outcome.outcome,
            "duration_ms": round(duration, 3),
            "effect": str(effect),
            "result": _shrink(self.redactor.data(outcome.result)),
        }
        if outcome.message and outcome.outcome in ("failed", "error", "refused"):
            fields["error"] = {"message": outcome.message, "advice": outcome.advice}
        if expectations:
            fields["expectations"] = expectations
        if summary is not None:
            fields["summary"] = summary
        if blast:
            fields["blast_radius"] = blast
        if changes:
            fields["predicted_changes" if outcome.outcome == "predicted" else "changes"] = changes
        if attempt > 1:
            fields["attempts"] = attempt
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
        )
        self._record(record)
        if outcome.outcome == "refused":
            raise StoppedError(outcome.message or "refused")
        return outcome

    # -- pieces ------------------------------------------------------------------------------
    def _attempt(
        self,
        procedure: Procedure,
        step: Step,
        kind: Any,
        ref: dict[str, Any],
        values: dict[str, Any],
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
            ctx = StepContext(
                connections=self.connections,
                operator=self.operator,
                redactor=self.redactor,
                procedure=procedure,
                step=step,
                dry_run=self.dry_run,
                values=values,
                call_procedure=lambda pid, p: self._call(pid, p, depth),
                show_progress=self.show_progress,
            )
            action = kind.plan(body, ctx)
        except (template.TemplateError, ValueError) as exc:  # ValueError: a rendered value the kind refuses
            self.transcript.emit("step.started", step=ref, effect=str(effect), where="", command="", attempt=attempt)
            return (
                _Outcome("error", message=f"{step.location}: {step.kind}: {exc}", exit_code=ExitCode.USAGE),
                effect,
                None,
                [],
                True,
            )
        except RunbookError as exc:
            self.transcript.emit("step.started", step=ref, effect=str(effect), where="", command="", attempt=attempt)
            return self._error_outcome(exc), effect, None, [], False
        effect = max(action.effect, step.effect or Effect.READ)
        command = self.redactor.text(action.command)
        self.transcript.emit(
            "step.started",
            durable=effect is not Effect.READ,
            step=ref,
            effect=str(effect),
            where=action.where,
            command=command,
            attempt=attempt,
        )
        blast = None
        if effect is not Effect.READ:
            try:
                blast = self.redactor.data(action.measure()) if action.measure else None
            except RunbookError as exc:  # measuring failed: nothing was sent, the step errors
                if isinstance(exc, MutationRefused):
                    raise
                return self._error_outcome(exc), effect, None, [], False
            stopped = self._gate(step, ref, action, effect, command, values, blast)
            if stopped is not None:
                changes = action.changes(blast, None) if action.changes and stopped.outcome == "predicted" else []
                return stopped, effect, blast, changes, True
        outcome = self._execute(action, ref, secret_name=(step.register or step.id) if step.secret else None)
        changes = []
        if outcome.outcome == "ok" and effect is not Effect.READ and action.changes:
            changes = action.changes(blast, outcome.result)
        return outcome, effect, blast, changes, False

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
    ) -> _Outcome | None:
        """None to go ahead; else the outcome that replaces running (predicted in dry-run, or refused)."""
        if self.dry_run:
            predicted = action.predict(blast) if action.predict else None
            return _Outcome("predicted", predicted, message="dry-run: not sent", really_ran=False)
        confirm = None
        if step.confirm:
            try:
                confirm = self.redactor.text(str(template.render(step.confirm, values)))
            except template.TemplateError as exc:
                confirm = f"(confirm text failed: {exc})"
        digest = sha256_text(command)
        self.transcript.emit(
            "approval.requested",
            step=ref,
            effect=str(effect),
            command=command,
            command_sha256=digest,
            where=action.where,
            blast_radius=blast or {},
            confirm=confirm,
        )
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
            )
        )
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
        self.transcript.emit("approval.given", step=ref, by=decision.by, method=decision.method, command_sha256=digest)
        return None

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
        advice = getattr(exc, "advice", None)
        code = exc.exit_code if not isinstance(exc, ActionFailed) else ExitCode.UNREACHABLE
        return _Outcome("error", message=self.redactor.text(str(exc)), advice=advice, exit_code=code)

    def _expectations(
        self, step: Step, outcome: _Outcome, values: dict[str, Any], ran: dict[str, bool]
    ) -> list[dict[str, Any]]:
        if not step.expect:
            return []
        predicted = outcome.outcome == "predicted" or (step.verifies is not None and not ran.get(step.verifies))
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
