"""Walks a procedure's steps: when, foreach, retry/until, the gate, expect, register, on_failure, call.

The runner knows nothing of Redis or SSH: a step kind turns a rendered body into an `Action` that
says its effect, where it goes and how to run it; the runner asks the gate, records events and
applies the step's rules. Every event goes to the transcript before the operator sees it.

Each visit of a step (one foreach item, one node) is a `Visit`: the step, where it sits and the values it
sees. The pipeline takes it stage by stage: when, attempts under the retry policy, one attempt (render,
plan, measure, gate, execute), then the finish (expectations, the record, `steps.<id>`). The conversation
at the gate is engine.run.approval's, a sampled series engine.run.sampling's. Time comes from `clock`/`sleep`
(the real ones by default), so the rules can be tested without waiting (tests/unit/test_runner_rules.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

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
from engine.outcome import Outcome
from engine.records import BlastRadius
from engine.run.approval import MAX_CHANGE_VISITS as MAX_CHANGE_VISITS  # the caps on --yes, where tests look
from engine.run.approval import MAX_CHANGES_BY_FLAG as MAX_CHANGES_BY_FLAG
from engine.run.approval import Approvals, Change
from engine.run.context import Connections, StepContext
from engine.run.gate import Gate
from engine.run.operator import Operator
from engine.run.resume import DoneStep, Segment, StepKey
from engine.run.sampling import Sampler, Sampling
from engine.spec import template
from engine.spec.model import Effect, Procedure, Step
from engine.spec.params import parse_count, parse_duration
from engine.steps import Action, Done, Measured, StepKind, get
from engine.transcript.redact import Redactor
from engine.transcript.writer import TranscriptWriter

MAX_STEP_EXECUTIONS = 10_000  # a goto loop that never ends is a bug in the procedure, not an incident
MAX_CALL_DEPTH = 8
RESULT_ITEMS_KEPT = 200
FAILURES = (Outcome.FAILED, Outcome.ERROR)


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
    blast_radius: BlastRadius | None = None
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
    """One run of one procedure (at one call depth): visits and gated visits of each step (caps on repeated
    changes), which steps ran, and what its changes measured and got approved (restore)."""

    procedure: Procedure
    depth: int
    path: tuple[Segment, ...] = ()  # the calls this run of the procedure sits inside (engine.run.resume.StepKey)
    visits: dict[str, int] = field(default_factory=dict)
    gated: dict[str, set[int]] = field(default_factory=dict)  # step id -> the visits that reached the gate
    ran: dict[str, bool] = field(default_factory=dict)
    measured: dict[str, BlastRadius] = field(default_factory=dict)
    approved: dict[str, dict[str, Any]] = field(default_factory=dict)
    planned: dict[str, tuple[str, str]] = field(default_factory=dict)  # step id -> (where, command) last planned


@dataclass(frozen=True)
class Visit:
    """One visit of one step: the step, its procedure run (frame), the values it sees, its foreach iteration
    and its path (the calls, and a block run as a foreach item, it sits inside: what tells it apart on resume)."""

    frame: _Frame
    step: Step
    values: dict[str, Any]  # for a foreach item or a node: the procedure's values with `item`/`node` and `loop`
    iteration: int | None = None
    path: tuple[Segment, ...] = ()

    @property
    def key(self) -> StepKey:
        return StepKey(self.path, self.step.id, self.iteration)

    @property
    def procedure(self) -> Procedure:
        return self.frame.procedure

    @property
    def depth(self) -> int:
        return self.frame.depth

    @cached_property
    def ref(self) -> dict[str, Any]:
        """The step as every event of this visit names it."""
        step = self.step
        return {
            "id": step.id,
            "name": step.name,
            "kind": step.kind,
            "source": str(step.location),
            "index": step.index,
            "iteration": self.iteration,
            "call_depth": self.depth,
            "procedure": self.procedure.id,
            **({"call_path": [_segment(s) for s in self.path]} if self.path else {}),
        }

    def at(self, iteration: int, values: dict[str, Any]) -> Visit:
        return dataclasses.replace(self, iteration=iteration, values=values)

    def scope(self, result: Any) -> dict[str, Any]:
        """What expect, show, until and impact read once the step ran: `result` and its register too."""
        return {**self.values, "result": result, **({self.step.register: result} if self.step.register else {})}

    def evaluate(self, field_name: str, expression: str, values: dict[str, Any] | None = None) -> Any:
        return _evaluate(self.step, field_name, expression, self.values if values is None else values)

    @property
    def status(self) -> dict[str, Any]:
        """`steps.<id>` of this step, as the values this visit sees hold it."""
        status: dict[str, Any] = self.values["steps"][self.step.id]
        return status


@dataclass(frozen=True)
class _Policy:
    """The retry policy, its templates rendered: how often, how far apart, until when (None: no deadline)."""

    attempts: int
    interval: float
    timeout: float | None


@dataclass(frozen=True)
class _Outcome:
    outcome: Outcome
    result: Any = None
    message: str | None = None
    advice: str | None = None
    exit_code: int = ExitCode.OK
    really_ran: bool = True
    changes: list[dict[str, Any]] | None = None  # what a measured change did, as it said (Done.changes)
    gave_up: bool = False  # a retry ran out of attempts or time: the last result is judged by `expect` too


@dataclass(frozen=True)
class _Tried:
    """What the attempts of a step came to: its outcome and, for a change, its effect, blast radius and changes."""

    outcome: _Outcome
    effect: Effect = Effect.READ
    blast: BlastRadius | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)
    final: bool = False  # retrying makes no sense: a usage error, a prediction, a refusal
    attempts: int = 1


@dataclass(frozen=True)
class _Finished:
    """A step's end as the transcript and the summary record it."""

    tried: _Tried
    outcome: _Outcome
    duration_ms: float
    expectations: list[dict[str, Any]]
    summary: str | None
    impact: list[dict[str, Any]]
    follow_up: list[dict[str, Any]]


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
        self._predicted: set[str] = set()  # registers that hold a dry-run's prediction, not a result
        # engine.run.resume.ResumePlan of the run this one continues: its done steps are reused, its in-doubt
        # change is asked about again on the terminal
        self.resume = resume
        self.approvals = Approvals(
            transcript=transcript,
            gate=gate,
            redactor=redactor,
            operator_name=operator.name,
            target_name=target_name,
            state=self.state,
            resume=resume,
        )
        self.clock = clock  # retry deadlines, durations and sampling: tests pass a fake one and never wait
        self.sleep = sleep

    # -- procedure level -----------------------------------------------------------------------
    def run(
        self, procedure: Procedure, params: dict[str, Any], *, depth: int = 0, path: tuple[Segment, ...] = ()
    ) -> dict[str, Any]:
        """Run every step, then the finally steps however the steps ended; returns the registered values.

        Raises StepAborted/RunbookError (or the interruption) to stop, after the cleanup ran.
        """
        values: dict[str, Any] = {
            **self.target_values,
            **params,
            "params": dict(params),
            "steps": {s.id: _status("not_run") for s in procedure.all_steps()},
        }
        frame = _Frame(procedure, depth, path)
        try:
            self._run_steps(frame, procedure.steps, values, path)
        except BaseException as exc:
            if procedure.finally_steps:
                self._run_finally(frame, values, _ending(exc))
            raise
        if procedure.finally_steps:
            failure = self._run_finally(frame, values, "ok")
            if failure is not None:
                raise failure
        return {k: v for k, v in values.items() if k not in self.target_values and k not in ("params", "steps")}

    def _run_steps(
        self, frame: _Frame, steps: tuple[Step, ...], values: dict[str, Any], path: tuple[Segment, ...]
    ) -> None:
        """A list of steps in order; a goto jumps within it."""
        index = 0
        while index < len(steps):
            step = steps[index]
            self.state.executions += 1
            if self.state.executions > MAX_STEP_EXECUTIONS:
                raise UsageError(
                    f"{step.location}: more than {MAX_STEP_EXECUTIONS} step executions: a goto loop in the procedure?"
                )
            frame.visits[step.id] = frame.visits.get(step.id, 0) + 1
            jump = self._run_step(Visit(frame, step, values, path=path))
            index = next(i for i, s in enumerate(steps) if s.id == jump) if jump is not None else index + 1

    def _run_finally(self, frame: _Frame, values: dict[str, Any], ending: str) -> BaseException | None:
        """Every cleanup step, in order, whatever the others do; the first failure is returned, not raised.

        A signal during the cleanup is held back by the session until it is done (`cleaning`).
        """
        self.transcript.emit(
            "decision",
            step={"id": "finally", "name": f"cleanup of {frame.procedure.id}", "call_depth": frame.depth},
            expression="finally",
            value=ending,
            kind="finally",
        )
        self.cleaning += 1
        first: BaseException | None = None
        try:
            for step in frame.procedure.finally_steps:
                try:
                    self._run_step(Visit(frame, step, values, path=frame.path))
                except (StepAborted, RunbookError) as exc:
                    first = first or exc
        finally:
            self.cleaning -= 1
        return first

    # -- step level: how many times, and whether at all ------------------------------------------
    def _run_step(self, visit: Visit) -> str | None:
        """The step in full (every item, every node); returns the id of the step to go to, if any."""
        step = visit.step
        if self._reused(visit):
            return None
        if _kind(step).reverts and step.action not in visit.frame.measured:
            self._skip(visit, f"'{step.action}' changed nothing in this run")
            return None
        nodes = self._nodes_of(visit)
        if nodes is not None:
            return self._run_items(visit, nodes, "node")
        if step.foreach is None:
            return self._run_single(visit)
        return self._run_items(visit, self._foreach_items(visit), "item")

    def _run_single(self, visit: Visit) -> str | None:
        step = visit.step
        if self._skipped_by_when(visit):
            return None
        outcome = self._run_once(visit)
        if step.register:
            visit.values[step.register] = outcome.result
        visit.frame.ran[step.id] = outcome.really_ran
        return self._after_failure(step, outcome) if outcome.outcome in FAILURES else None

    def _foreach_items(self, visit: Visit) -> list[Any]:
        step = visit.step
        assert step.foreach is not None
        items = visit.evaluate("foreach", step.foreach)
        if isinstance(items, dict):
            items = list(items.items())
        if not isinstance(items, list | tuple):
            raise UsageError(f"{step.location}: foreach gave {type(items).__name__}, not a list")
        return list(items)

    def _run_items(self, visit: Visit, items: list[Any], name: str) -> str | None:
        """A foreach (`item`), or a change on several nodes (`node`): one run of the step per entry, in order."""
        step, values = visit.step, visit.values
        results: list[Any] = []
        statuses: list[dict[str, Any]] = []
        worst: _Outcome | None = None
        any_ran = False
        for i, item in enumerate(items):
            # `when` is decided per item: it may look at `item`
            scope = {**values, name: item, "loop": {"index": i, "first": i == 0, "last": i == len(items) - 1}}
            each = visit.at(i, scope)
            done = self._resumed(each) if name == "item" else None
            if done is not None:  # done in the run this one continues: its result stands, it is not run again
                results.append(done.result)
                statuses.append({**_status(Outcome.OK), "result": done.result})
                any_ran = True
                if done.blast_radius:  # what a `restore:` of this step puts back, as for a step run now
                    visit.frame.measured.setdefault(step.id, cast(BlastRadius, done.blast_radius))
                continue
            if self._skipped_by_when(each):
                results.append(None)
                statuses.append(visit.status)
                continue
            outcome = self._run_once(each)
            results.append(outcome.result if name == "item" else _node_result(item, outcome))
            statuses.append(visit.status)
            any_ran = any_ran or outcome.really_ran
            if outcome.outcome in FAILURES:
                worst = worst or outcome
                if step.on_failure.action != "continue":
                    break  # abort or goto: the remaining items are not tried
        if step.register:
            values[step.register] = results
        values["steps"][step.id] = {
            **_status(worst.outcome if worst else (Outcome.OK if any_ran else Outcome.SKIPPED)),
            "error": worst.message if worst else None,
            "duration_ms": round(sum(s.get("duration_ms") or 0 for s in statuses), 3),
            "result": results,
            "items": statuses,
        }
        visit.frame.ran[step.id] = any_ran
        return self._after_failure(step, worst) if worst else None

    def _reused(self, visit: Visit) -> bool:
        """A step the resumed run finished: its recorded result stands in for running it again."""
        step = visit.step
        if step.foreach is not None:
            return False  # its items are reused one by one (_run_items)
        done = self._resumed(visit)
        if done is None:
            return False
        if step.register:
            visit.values[step.register] = done.result
        if _kind(step).nested and isinstance(done.result, dict):
            visit.values.update(done.result)
        visit.values["steps"][step.id] = {**_status(Outcome.OK), "result": done.result}
        visit.frame.ran[step.id] = True
        if done.blast_radius:
            visit.frame.measured.setdefault(step.id, cast(BlastRadius, done.blast_radius))
        return True

    def _resumed(self, visit: Visit) -> DoneStep | None:
        """This visit's run in the stopped run, if it finished there and is not to run again; recorded as resumed."""
        step = visit.step
        if self.resume is None or step.cleanup:
            return None
        done: DoneStep | None = self.resume.reuse(visit.key, step)
        if done is None:
            return None
        if visit.iteration is not None and done.command is not None and self._command_now(visit) != done.command:
            return None  # the list changed: this position holds another item now, which runs
        self.transcript.emit(
            "step.resumed",
            step=visit.ref,
            from_run=self.resume.run_id,
            effect=done.effect,
            result=done.result,
            blast_radius=done.blast_radius,
            command=done.command,
        )
        message = f"done in run {self.resume.run_id}: not run again"
        self._record(
            StepRecord(
                step.id,
                step.name,
                Outcome.OK,
                done.effect,
                message=message,
                depth=visit.depth,
                procedure=visit.procedure.id,
            )
        )
        return done

    def _command_now(self, visit: Visit) -> str | None:
        """The command this visit renders today, as a transcript records it (None: it cannot be planned now)."""
        step = visit.step
        if _kind(step).nested:
            return f"{step.kind} {step.id}"
        try:
            kind = get(step.kind)
            body = step.action if kind.expressions else _render(kind, step, visit.values)
            return self.redactor.text(kind.plan(body, self._context(visit, recorded=False)).command)
        except Exception:  # the step's own run meets the same problem and reports it
            return None

    def _skipped_by_when(self, visit: Visit) -> bool:
        step = visit.step
        if step.when is None:
            return False
        decided = visit.evaluate("when", step.when)
        self.transcript.emit("decision", step=visit.ref, expression=step.when, value=bool(decided), kind="when")
        if decided:
            return False
        self._skip(visit, f"when: {step.when} is false")
        return True

    def _skip(self, visit: Visit, reason: str) -> None:
        step = visit.step
        self.transcript.emit("step.skipped", step=visit.ref, reason=reason)
        visit.frame.ran.setdefault(step.id, False)
        visit.values["steps"][step.id] = {**_status(Outcome.SKIPPED), "error": None}
        self._record(
            StepRecord(
                step.id,
                step.name,
                Outcome.SKIPPED,
                "-",
                message=reason,
                depth=visit.depth,
                procedure=visit.procedure.id,
            )
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

    def _nodes_of(self, visit: Visit) -> list[Any] | None:
        """The nodes a change aimed at several nodes runs on, one at a time (None: the step runs once)."""
        step = visit.step
        kind = _kind(step)
        if kind.nested or kind.per_node is None or step.foreach is not None:
            return None
        try:
            body = _render(kind, step, visit.values)
            return kind.per_node(body, self._context(visit, recorded=False))
        except (template.TemplateError, ValueError, TypeError, RunbookError):
            return None  # the step's own attempt meets the same problem and reports it

    def _context(self, visit: Visit, *, recorded: bool = True) -> StepContext:
        """What a kind may use while it plans and runs this step (and nothing else)."""
        frame = visit.frame
        return StepContext(
            connections=self.connections,
            operator=self.operator,
            redactor=self.redactor,
            procedure=visit.procedure,
            step=visit.step,
            dry_run=self.dry_run,
            values=visit.values,
            call_procedure=lambda pid, p: self._call(pid, p, visit),
            show_progress=self.show_progress,
            recorded_change=frame.measured.get if recorded else (lambda _step_id: None),
        )

    # -- one visit: its attempts under the retry policy -------------------------------------------
    def _run_once(self, visit: Visit) -> _Outcome:
        started = self.clock()
        tried = self._run_block(visit) if _kind(visit.step).nested else self._attempts(visit)
        return self._finish(visit, started, tried)

    def _attempts(self, visit: Visit) -> _Tried:
        """The step's attempts under its retry policy (whose numbers may be templates, rendered now)."""
        kind = get(visit.step.kind)
        try:
            policy = self._retry_policy(visit)
        except UsageError as exc:
            self._started(visit, Effect.READ, "", "", attempt=1)
            return _Tried(_Outcome(Outcome.ERROR, message=str(exc), exit_code=ExitCode.USAGE))
        # a check of a change that was not sent (dry-run, or skipped) has nothing to wait for
        step = visit.step
        unsent = step.verifies is not None and not visit.frame.ran.get(step.verifies)
        return self._retrying(visit, policy, lambda attempt: self._attempt(visit, kind, attempt), unsent=unsent)

    def _run_block(self, visit: Visit) -> _Tried:
        """The inner steps as one: a failure that aborts inside ends the block (its on_failure decides)."""
        try:
            policy = dataclasses.replace(self._retry_policy(visit), timeout=None)
        except UsageError as exc:
            return _Tried(_Outcome(Outcome.ERROR, message=str(exc), exit_code=ExitCode.USAGE))
        return self._retrying(visit, policy, lambda attempt: self._block_once(visit, attempt), unsent=False)

    def _block_once(self, visit: Visit, attempt: int) -> _Tried:
        step = visit.step
        self.transcript.emit(
            "step.started",
            step=visit.ref,
            effect="read",
            where=step.kind,
            command=f"{step.kind} {step.id}",
            attempt=attempt,
        )
        registers = [s.register for s in step.action if s.register]
        # a block run as a foreach item: its steps are told apart from the same steps of the other items
        path = (
            (*visit.path, (visit.procedure.id, step.id, visit.iteration)) if visit.iteration is not None else visit.path
        )
        try:
            self._run_steps(visit.frame, step.action, visit.values, path)
            return _Tried(_Outcome(Outcome.OK, {name: visit.values.get(name) for name in registers}))
        except StepAborted as exc:
            ended = Outcome.FAILED if exc.exit_code == ExitCode.FINDINGS else Outcome.ERROR
            result = {name: visit.values.get(name) for name in registers}
            return _Tried(_Outcome(ended, result, message=str(exc), exit_code=exc.exit_code))

    def _retrying(self, visit: Visit, policy: _Policy, once: Callable[[int], _Tried], *, unsent: bool) -> _Tried:
        """`once` until it is final, ok (and `until` holds), or out of attempts or time; waits between."""
        retry = visit.step.retry
        started = self.clock()
        deadline = started + policy.timeout if retry is not None and policy.timeout is not None else None
        attempt = 0
        while True:
            attempt += 1
            tried = once(attempt)
            if tried.final or retry is None:
                break
            outcome = tried.outcome
            if outcome.outcome == Outcome.OK:
                if retry.until is None:
                    break  # retry without until: retry only while the step errors
                if unsent:
                    tried = dataclasses.replace(tried, outcome=self._not_polled(visit, outcome))
                    break
                if self._until_holds(visit, outcome):
                    break
            out_of_time = deadline is not None and self.clock() + policy.interval > deadline
            if attempt >= policy.attempts or out_of_time:
                if outcome.outcome == Outcome.OK:
                    since = started if policy.timeout is not None else None
                    tried = dataclasses.replace(tried, outcome=self._gave_up(visit, outcome, attempt, since))
                break
            self.sleep(policy.interval)
        return dataclasses.replace(tried, attempts=attempt)

    def _until_holds(self, visit: Visit, outcome: _Outcome) -> bool:
        until = visit.step.retry.until if visit.step.retry else None
        assert until is not None
        done = visit.evaluate("retry.until", until, visit.scope(outcome.result))
        self.transcript.emit("decision", step=visit.ref, expression=until, value=bool(done), kind="until")
        return bool(done)

    def _not_polled(self, visit: Visit, outcome: _Outcome) -> _Outcome:
        """The read ran; only the wait is skipped (its expectations are predicted)."""
        step = visit.step
        assert step.retry is not None
        why = "dry-run" if self.dry_run else "it did not run"
        self.transcript.emit("decision", step=visit.ref, expression=step.retry.until, value="not polled", kind="until")
        return _Outcome(
            Outcome.OK,
            outcome.result,
            message=f"until '{step.retry.until}' not polled: '{step.verifies}' was not sent ({why})",
        )

    def _gave_up(self, visit: Visit, outcome: _Outcome, attempt: int, since: float | None) -> _Outcome:
        assert visit.step.retry is not None
        message = f"until '{visit.step.retry.until}' did not hold after {attempt} attempts"
        if since is not None:
            message += f" ({self.clock() - since:.1f}s)"
        return _Outcome(Outcome.FAILED, outcome.result, message=message, exit_code=ExitCode.FINDINGS, gave_up=True)

    def _retry_policy(self, visit: Visit) -> _Policy:
        step, values = visit.step, visit.values
        if step.retry is None:
            return _Policy(1, 0.0, 0.0)
        return _Policy(
            _typed(step, "retry.attempts", step.retry.attempts, values, parse_count),
            _typed(step, "retry.interval", step.retry.interval, values, parse_duration),
            _typed(step, "retry.timeout", step.retry.timeout, values, parse_duration),
        )

    # -- one attempt: render, plan, (measure, gate,) execute ---------------------------------------
    def _attempt(self, visit: Visit, kind: StepKind, attempt: int) -> _Tried:
        """Render, plan, gate and execute once."""
        step = visit.step
        planned = self._plan(visit, kind, attempt)
        if isinstance(planned, _Tried):
            return planned
        action, sampling = planned
        effect = max(action.effect, step.effect or Effect.READ)
        command = self.redactor.text(action.command)
        visit.frame.planned[step.id] = (str(action.where or ""), command)
        self._started(visit, effect, action.where, command, attempt=attempt, durable=effect is not Effect.READ)
        if sampling is not None:
            return self._sample(visit, action, effect, sampling)
        if effect is Effect.READ:
            return _Tried(self._execute(visit, action))
        return self._change(visit, action, Change(effect, action.where, command, None))

    def _plan(self, visit: Visit, kind: StepKind, attempt: int) -> tuple[Action, Sampling | None] | _Tried:
        """The kind's Action for the rendered body (and the sampling policy); a step error if it cannot be had."""
        step = visit.step
        effect = step.effect or Effect.READ
        try:
            body = step.action if kind.expressions else _render(kind, step, visit.values)
            action = kind.plan(body, self._context(visit))
            sampling = self._sampling(visit) if step.sample is not None else None
            return action, sampling
        except (template.TemplateError, ValueError, TypeError) as exc:
            # a template, or a value rendered into a field that wants a number or a duration
            self._started(visit, effect, "", "", attempt=attempt)
            message = str(exc) if str(exc).startswith(str(step.location)) else f"{step.location}: {step.kind}: {exc}"
            return _Tried(_Outcome(Outcome.ERROR, message=message, exit_code=ExitCode.USAGE), effect, final=True)
        except RunbookError as exc:
            self._started(visit, effect, "", "", attempt=attempt)
            return _Tried(self._error_outcome(exc), effect, final=isinstance(exc, UsageError))

    def _started(
        self, visit: Visit, effect: Effect, where: str, command: str, *, attempt: int, durable: bool = False
    ) -> None:
        self.transcript.emit(
            "step.started",
            durable=durable,
            step=visit.ref,
            effect=str(effect),
            where=where,
            command=command,
            attempt=attempt,
        )

    def _sample(self, visit: Visit, action: Action, effect: Effect, sampling: Sampling) -> _Tried:
        step = visit.step
        if effect is not Effect.READ:
            message = f"{step.location}: sample: only a read step can be sampled (this one is {effect})"
            return _Tried(_Outcome(Outcome.ERROR, message=message, exit_code=ExitCode.USAGE), effect, final=True)
        sampled = self._execute(visit, self._sampled(action, step, sampling), sampled=True)
        return _Tried(sampled, effect)

    def _change(self, visit: Visit, action: Action, change: Change) -> _Tried:
        """Measured, put to the gate, then sent: or predicted (dry-run), or refused."""
        step, frame = visit.step, visit.frame
        try:
            measured = _measure(action, self.redactor)
        except RunbookError as exc:  # measuring failed: nothing was sent, the step errors
            if isinstance(exc, MutationRefused):
                raise
            return _Tried(self._error_outcome(exc), change.effect)
        blast = cast(BlastRadius, dict(measured.blast)) if measured is not None else None
        change = dataclasses.replace(change, blast=blast)
        stopped = self._approve(visit, action, change, measured)
        if stopped is not None:
            predicted = stopped.outcome == Outcome.PREDICTED
            if predicted and blast:
                frame.measured.setdefault(step.id, blast)
            claimed = _changes(action, measured, None) if predicted else []
            return _Tried(stopped, change.effect, blast, claimed, final=True)
        if blast:
            frame.measured.setdefault(step.id, blast)  # what `restore:` puts back: the value before
        outcome = self._execute(visit, action, measured=measured)
        changes: list[dict[str, Any]] = []
        if outcome.outcome == Outcome.OK:
            # what a measured change did, as it said; else what its action tells from the result
            changes = outcome.changes if outcome.changes is not None else _changes(action, measured, outcome.result)
        return _Tried(outcome, change.effect, blast, changes)

    def _approve(self, visit: Visit, action: Action, change: Change, measured: Measured | None) -> _Outcome | None:
        """None to go ahead; else the outcome that replaces running (predicted in dry-run, or refused)."""
        if self.dry_run:
            predicted = _predict(action, measured)
            return _Outcome(Outcome.PREDICTED, predicted, message="dry-run: not sent", really_ran=False)
        refusal = self.approvals.ask(visit, change)
        if refusal is None:
            return None
        return _Outcome(
            Outcome.REFUSED, message=f"not approved: {refusal}", exit_code=ExitCode.STOPPED, really_ran=False
        )

    def _execute(
        self, visit: Visit, action: Action, *, sampled: bool = False, measured: Measured | None = None
    ) -> _Outcome:
        """Run the action once: its result, or the error that stopped it, as the step's outcome."""
        step = visit.step
        try:
            done = _send(action, measured)
        except StoppedError as exc:  # nobody to answer, or the operator said no: recorded as refused
            return _Outcome(
                Outcome.REFUSED, message=self.redactor.text(str(exc)), exit_code=ExitCode.STOPPED, really_ran=False
            )
        except (StepAborted, MutationRefused, KeyboardInterrupt):
            raise
        except RunbookError as exc:
            outcome = self._error_outcome(exc)
        else:
            outcome = self._result_outcome(visit, action, done.result, sampled=sampled)
            if outcome.outcome == Outcome.OK:
                outcome = dataclasses.replace(outcome, changes=done.changes)
        _check_shape(step, outcome, sampled=sampled)
        return outcome

    def _result_outcome(self, visit: Visit, action: Action, result: Any, *, sampled: bool) -> _Outcome:
        step = visit.step
        if step.secret and not sampled and result is not None:
            _add_secrets(self.redactor, step.register or step.id, result)  # before its output is written anywhere
        if action.output is not None:
            text = action.output(result)
            if text:
                self.transcript.output(visit.ref, text, stream="stdout")
        reason = action.failed(result) if action.failed else None
        if reason:
            return _Outcome(Outcome.FAILED, result, message=reason, exit_code=ExitCode.UNREACHABLE)
        return _Outcome(Outcome.OK, result)

    def _error_outcome(self, exc: RunbookError) -> _Outcome:
        if isinstance(exc, StoppedError | MutationRefused):
            raise exc
        code = exc.exit_code if not isinstance(exc, ActionFailed) else ExitCode.UNREACHABLE
        return _Outcome(Outcome.ERROR, message=self.redactor.text(str(exc)), advice=exc.advice, exit_code=code)

    # -- the finish: expectations, the record, `steps.<id>` ---------------------------------------
    def _finish(self, visit: Visit, started: float, tried: _Tried) -> _Outcome:
        """Expectations, the summary line, the transcript record and `steps.<id>`, for any kind of step."""
        step = visit.step
        outcome = tried.outcome
        if step.secret and outcome.result is not None:
            # before anything renders the result (expect messages, show, the transcript, the console)
            _add_secrets(self.redactor, step.register or step.id, outcome.result)
        visit.values["steps"][step.id] = {  # expectations and `show` may read this step's own duration and outcome
            **_status(outcome.outcome),
            "duration_ms": round((self.clock() - started) * 1000, 3),
            "result": outcome.result,
            "attempts": tried.attempts,
        }
        judged = outcome.outcome in (Outcome.OK, Outcome.PREDICTED) or outcome.gave_up
        expectations = self._expectations(visit, outcome) if judged else []
        outcome = self._judged(outcome, expectations)
        summary = self._summary(visit, outcome)
        impact, follow_up = self._declared(visit, outcome)
        duration = (self.clock() - started) * 1000
        visit.status.update(
            outcome=outcome.outcome.value,
            duration_ms=round(duration, 3),
            error=self.redactor.text(outcome.message)
            if outcome.outcome in (*FAILURES, Outcome.REFUSED) and outcome.message
            else None,
        )
        finished = _Finished(tried, outcome, duration, expectations, summary, impact, follow_up)
        self.transcript.emit("step.finished", **self._finished_fields(visit, finished))
        self._record(self._step_record(visit, finished))
        if outcome.outcome == Outcome.REFUSED:
            raise StoppedError(outcome.message or "refused")
        if outcome.outcome == Outcome.PREDICTED and step.register:
            self._predicted.add(step.register)
        return outcome

    def _judged(self, outcome: _Outcome, expectations: list[dict[str, Any]]) -> _Outcome:
        """Findings counted; a critical expectation that did not hold fails a step that ran ok."""
        for e in expectations:
            if e["held"] is False and e["severity"] in ("critical", "warning"):
                self.state.findings += 1
        failed_critical = [e for e in expectations if e["held"] is False and e["severity"] == "critical"]
        if failed_critical and outcome.gave_up:
            # the author's words for what the wait was for come first; how long it waited, after them
            return dataclasses.replace(outcome, message=f"{failed_critical[0]['message']} ({outcome.message})")
        if failed_critical and outcome.outcome == Outcome.OK:
            return _Outcome(
                Outcome.FAILED, outcome.result, message=failed_critical[0]["message"], exit_code=ExitCode.FINDINGS
            )
        return outcome

    def _summary(self, visit: Visit, outcome: _Outcome) -> str | None:
        step = visit.step
        if not step.show or outcome.outcome not in (Outcome.OK, Outcome.FAILED, Outcome.PREDICTED):
            return None
        try:
            return self.redactor.text(str(template.render(step.show, visit.scope(outcome.result))).strip())
        except template.TemplateError as exc:
            # a predicted change has no result to show: its line is simply left out, not an error
            return None if outcome.outcome == Outcome.PREDICTED else f"(show: {exc})"

    def _finished_fields(self, visit: Visit, finished: _Finished) -> dict[str, Any]:
        """The `step.finished` event, field by field in the order the transcript has always had them."""
        outcome, tried, step = finished.outcome, finished.tried, visit.step
        fields: dict[str, Any] = {
            "step": visit.ref,
            "outcome": outcome.outcome.value,
            "duration_ms": round(finished.duration_ms, 3),
            "effect": str(tried.effect),
            "result": _shrink(self.redactor.data(outcome.result)),
        }
        if outcome.message and outcome.outcome in (*FAILURES, Outcome.REFUSED):
            fields["error"] = {"message": outcome.message, "advice": outcome.advice}
        elif outcome.message and outcome.outcome == Outcome.OK and step.verifies:
            fields["note"] = outcome.message
        if finished.expectations:
            fields["expectations"] = finished.expectations
        if finished.summary is not None:
            fields["summary"] = finished.summary
        if finished.impact:
            fields["impact"] = finished.impact
        if finished.follow_up:
            fields["follow_up"] = finished.follow_up
        if tried.blast:
            fields["blast_radius"] = tried.blast
        if tried.changes:
            fields["predicted_changes" if outcome.outcome == Outcome.PREDICTED else "changes"] = tried.changes
        if tried.attempts > 1:
            fields["attempts"] = tried.attempts
        if step.cleanup:
            fields["cleanup"] = True
        return fields

    def _step_record(self, visit: Visit, finished: _Finished) -> StepRecord:
        step, outcome, tried = visit.step, finished.outcome, finished.tried
        where, command = visit.frame.planned.pop(step.id, ("", ""))
        return StepRecord(
            step.id,
            step.name,
            outcome.outcome,
            str(tried.effect),
            round(finished.duration_ms, 1),
            result=self.redactor.data(outcome.result),
            summary=finished.summary,
            message=outcome.message,
            advice=outcome.advice,
            expectations=finished.expectations,
            depth=visit.depth,
            procedure=visit.procedure.id,
            where=where,
            command=command,
            blast_radius=tried.blast,
            predicted_changes=tried.changes if outcome.outcome == Outcome.PREDICTED else [],
            follow_up=finished.follow_up,
        )

    def _expectations(self, visit: Visit, outcome: _Outcome) -> list[dict[str, Any]]:
        step = visit.step
        if not step.expect:
            return []
        predicted = (
            outcome.outcome == Outcome.PREDICTED
            or (step.verifies is not None and not visit.frame.ran.get(step.verifies))
            or (self.dry_run and self._reads_a_prediction(step))
        )
        if outcome.outcome == Outcome.PREDICTED or self.dry_run:
            why = "predicted: a dry-run does not send the change this checks"
        else:
            why = f"not checked: '{step.verifies}', the change it verifies, did not run"
        scope = visit.scope(outcome.result)
        out = []
        for expectation in step.expect:
            held = None if predicted else bool(visit.evaluate("expect", expectation.that, scope))
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

    def _declared(self, visit: Visit, outcome: _Outcome) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The step's `impact:` figures and `follow_up:` texts, rendered once it ran (never for a prediction)."""
        step = visit.step
        if outcome.outcome not in (Outcome.OK, Outcome.FAILED) or not (step.impact or step.follow_up):
            return [], []
        scope = visit.scope(outcome.result)

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

    def _record(self, record: StepRecord) -> None:
        self.state.records.append(record)
        self.on_step(record)

    # -- sampling: a read run every `every` -------------------------------------------------------
    def _sampling(self, visit: Visit) -> Sampling:
        step, values = visit.step, visit.values
        sample = step.sample
        assert sample is not None
        sampling = Sampling(
            every=_typed(step, "sample.every", sample.every, values, parse_duration),
            duration=_typed(step, "sample.for", sample.duration, values, parse_duration)
            if sample.duration is not None
            else None,
            count=_typed(step, "sample.count", sample.count, values, parse_count) if sample.count is not None else None,
        )
        sampling.check(step)
        return sampling

    def _sampled(self, action: Action, step: Step, sampling: Sampling) -> Action:
        """The read run every `every`, as one action whose result is the series."""
        sampler = Sampler(
            read=lambda: _send(action).result,
            sampling=sampling,
            label=f"sampling {step.id}",
            redactor=self.redactor,
            tell=self.operator.tell,
            clock=self.clock,
            sleep=self.sleep,
            show_progress=self.show_progress,
        )
        return Action(action.effect, action.where, action.command, sampler)

    # -- call --------------------------------------------------------------------------------------
    def _call(self, procedure_id: str, params: dict[str, Any], caller: Visit) -> dict[str, Any]:
        depth = caller.depth
        if depth >= MAX_CALL_DEPTH:
            raise UsageError(f"call {procedure_id}: calls nested more than {MAX_CALL_DEPTH} deep")
        callee = self.load_procedure(procedure_id)
        resolved = self.resolve_params(callee, params)
        path = (*caller.path, (caller.procedure.id, caller.step.id, caller.iteration))
        registered = self.run(callee, resolved, depth=depth + 1, path=path)
        return {"procedure": procedure_id, **registered}


def _kind(step: Step) -> StepKind:
    return get(step.kind)


# -- the only places the runner calls an Action's hooks ------------------------------------------------
def _measure(action: Action, redactor: Redactor) -> Measured | None:
    """What the change measured, by reads only; its blast radius redacted before anyone sees it."""
    return action.measured(redactor.data)


def _send(action: Action, measured: Measured | None = None) -> Done:
    return action.run(measured)


def _changes(action: Action, measured: Measured | None, result: Any) -> list[dict[str, Any]]:
    return action.changes(measured, result) if action.changes else []


def _predict(action: Action, measured: Measured | None) -> Any:
    return action.predict(measured) if action.predict else None


# -- helpers -------------------------------------------------------------------------------------------
def _render(kind: StepKind, step: Step, values: dict[str, Any]) -> Any:
    return template.render_data(step.action, values, shell_fields=kind.shell_fields, raw_fields=kind.raw_fields)


def _segment(segment: Segment) -> dict[str, Any]:
    procedure, step_id, iteration = segment
    return {"procedure": procedure, "step": step_id, "iteration": iteration}


def _status(outcome: str) -> dict[str, Any]:
    """`steps.<id>` before and after a step: the outcome beside the result, for branching on it."""
    return {"outcome": str(outcome), "error": None, "duration_ms": None, "result": None, "attempts": 0}


def _ending(exc: BaseException) -> str:
    """How the steps ended, as the finally decision records it."""
    if isinstance(exc, Interrupted):
        return "interrupted"
    if isinstance(exc, StepAborted):
        return "failed" if exc.exit_code == ExitCode.FINDINGS else "aborted"
    if isinstance(exc, StoppedError):
        return "refused"
    return "error"


def _evaluate(step: Step, field_name: str, expression: str, values: dict[str, Any]) -> Any:
    try:
        return template.evaluate(expression, values)
    except template.TemplateError as exc:
        raise UsageError(f"{step.location}: steps.{step.id}.{field_name}: {exc}") from None


def _typed(step: Step, field_name: str, value: Any, values: dict[str, Any], parse: Any) -> Any:
    try:
        return template.typed(value, values, parse)
    except template.TemplateError as exc:
        raise UsageError(f"{step.location}: steps.{step.id}.{field_name}: {exc}") from None


def _check_shape(step: Step, outcome: _Outcome, *, sampled: bool = False) -> None:
    """Tests run with RUNBOOK_CHECK_RESULTS=1: a kind whose result drifts from its declared shape is a bug."""
    from engine.steps import results

    if outcome.outcome != Outcome.OK or not results.checking():
        return
    problem = results.check_result(step.kind, step.action, outcome.result, sampled=sampled)
    if problem:
        raise AssertionError(f"{step.location}: {step.kind} result does not match its declared shape: {problem}")


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
        "outcome": outcome.outcome.value,
        "result": result,
        "error": outcome.message if outcome.outcome in FAILURES else None,
    }
