"""One procedure on many targets: a parallel read-only fan-out, or a rolling change batch by batch.

The plan (order, batches, whether the procedure can change anything) is pure. The shell runs each target
as its own `runbook run` child process with its own transcript, and keeps a parent transcript that
records the plan, each child's run id and outcome, and why a rollout halted. A child is a whole run:
gate, lease, signals and transcript are exactly those of a single-target run.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import __version__
from engine.errors import ExitCode, UsageError
from engine.outcome import RunOutcome
from engine.spec.model import Effect, Procedure

DEFAULT_FORKS = 8
ALL_REMAINING = "all-remaining"  # the approval method of "all remaining" and of the approvals it covers


# -- the pure part -------------------------------------------------------------------------------
def changes_anything(procedure: Procedure, load: Callable[[str], Procedure]) -> bool:
    """Whether any step may change the target (a call's callee included; decided at run time counts)."""
    from engine.cli.show import effect_of_calls
    from engine.spec.effects import static_effect
    from engine.steps import get

    for step in procedure.all_steps():
        callees = get(step.kind).called_procedures(step.action)
        if callees:
            effect = effect_of_calls(callees, load, frozenset({procedure.id}))
        else:
            effect = static_effect(step.kind, step.action, step.effect)
        if effect.effect is None or effect.effect is not Effect.READ:
            return True
    return False


@dataclass(frozen=True)
class FleetPlan:
    procedure: str
    targets: tuple[str, ...]
    rolling: bool  # False: every target at once (bounded by forks)
    batch: int = 1
    forks: int = DEFAULT_FORKS
    max_failures: int = 0

    def batches(self) -> list[tuple[str, ...]]:
        size = self.batch if self.rolling else len(self.targets)
        return [self.targets[i : i + size] for i in range(0, len(self.targets), size)]

    def describe(self) -> dict[str, Any]:
        return {
            "procedure": self.procedure,
            "targets": list(self.targets),
            "mode": "rolling" if self.rolling else "parallel",
            "batch": self.batch if self.rolling else None,
            "forks": self.forks,
            "max_failures": self.max_failures if self.rolling else None,
            "batches": [list(b) for b in self.batches()],
        }


def make_plan(
    procedure: Procedure,
    targets: list[str],
    *,
    load: Callable[[str], Procedure],
    dry_run: bool,
    batch: int,
    forks: int,
    max_failures: int,
) -> FleetPlan:
    """A dry-run, or a procedure whose every step reads, goes everywhere at once; anything else rolls."""
    rolling = not dry_run and changes_anything(procedure, load)
    return FleetPlan(procedure.id, tuple(targets), rolling, batch, forks, max_failures)


@dataclass(frozen=True)
class ChildOutcome:
    target: str
    run_id: str | None
    outcome: str
    exit_code: int
    transcript: str
    failed: tuple[str, ...] = ()  # the failing expectations' messages
    all_remaining_by: str | None = None  # the operator answered "all remaining" in this run
    reused_from: str | None = None  # done in an earlier rollout (continue): not run again

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "run_id": self.run_id,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "transcript": self.transcript,
            "failed_expectations": list(self.failed),
            **({"reused_from": self.reused_from} if self.reused_from else {}),
        }


def child_outcome(target: str, path: Path, exit_code: int) -> ChildOutcome:
    """What a child's transcript says it did (the exit code when it has no end: killed, never started)."""
    from engine.transcript.reader import read_transcript

    try:
        transcript = read_transcript(path)
    except OSError:
        return ChildOutcome(target, None, RunOutcome.ERROR if exit_code else RunOutcome.OK, exit_code, str(path))
    ended = next((e for e in transcript.events if e["type"] == "run.ended"), None)
    failed: list[str] = []
    all_remaining = None
    for event in transcript.events:
        if event["type"] == "step.finished":
            failed.extend(
                str(x.get("message") or x.get("that"))
                for x in event.get("expectations") or ()
                if x.get("held") is False and x.get("severity") in ("critical", "warning")
            )
        elif event["type"] == "approval.given" and event.get("method") == ALL_REMAINING and not event.get("note"):
            all_remaining = str(event.get("by"))
    if ended is None:
        outcome: str = RunOutcome.INTERRUPTED if exit_code >= 128 else RunOutcome.ERROR
        code = exit_code or ExitCode.UNREACHABLE
    else:
        outcome, code = str(ended.get("outcome")), int(ended.get("exit_code", exit_code))
    return ChildOutcome(target, transcript.run_id, outcome, code, str(path), tuple(failed), all_remaining)


_BY_CODE = {
    ExitCode.OK: RunOutcome.OK,
    ExitCode.FINDINGS: RunOutcome.FINDINGS,
    ExitCode.USAGE: RunOutcome.USAGE,
    ExitCode.STOPPED: RunOutcome.STOPPED,
}
"""A rollout's outcome from its worst child's exit code (anything else: error)."""


def worst(codes: list[int]) -> int:
    return max(codes, default=ExitCode.OK)


def render_table(outcomes: list[ChildOutcome], not_run: list[str]) -> str:
    width = max([len(o.target) for o in outcomes] + [len(t) for t in not_run] + [6])
    lines = [f"{'target':<{width}}  {'verdict':<12} exit  failing expectations"]
    for o in outcomes:
        verdict = o.outcome + (" (earlier)" if o.reused_from else "")
        lines.append(f"{o.target:<{width}}  {verdict:<12} {o.exit_code:>4}  {'; '.join(o.failed) or '-'}")
    for target in not_run:
        lines.append(f"{target:<{width}}  {'not run':<12} {'-':>4}  -")
    return "\n".join(lines)


# -- the shell -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FleetRequest:
    procedure: str
    inventory: str
    patterns: tuple[str, ...]
    limit: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    variables: tuple[str, ...] = ()  # NAME=VALUE, passed to every child as given
    dry_run: bool = False
    assume_yes: bool = False
    transcripts_dir: Path = Path("transcripts")
    operator: str | None = None
    incident: str | None = None
    signing_key: Path | None = None
    lease_ttl: float = 30.0
    extra_procedures: tuple[Path, ...] = ()
    forks: int = DEFAULT_FORKS
    batch: int = 1
    max_failures: int = 0
    argv: tuple[str, ...] = ()
    resumes: str | None = None  # the parent run this one continues
    earlier: dict[str, ChildOutcome] = field(default_factory=dict)  # target -> its child in that run
    continue_args: tuple[str, ...] = ()  # options `continue` passes on to a child it resumes


@dataclass
class FleetResult:
    run_id: str
    procedure: str
    outcome: RunOutcome
    exit_code: int
    transcript: str
    children: list[ChildOutcome]
    not_run: list[str]
    plan: FleetPlan

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "procedure": self.procedure,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "transcript": self.transcript,
            "plan": self.plan.describe(),
            "targets": [c.as_json() for c in self.children]
            + [{"target": t, "outcome": "not_run", "exit_code": None} for t in self.not_run],
        }


class _Stop:
    """Signals to the parent: the first stops new children starting (the children, on the same terminal,
    got a Ctrl-C themselves); SIGTERM and SIGHUP are passed on to the running children."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.running: set[subprocess.Popen[Any]] = set()
        self.lock = threading.Lock()

    def handler(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        if signum != signal.SIGINT:
            with self.lock:
                for proc in list(self.running):
                    try:
                        proc.send_signal(signum)
                    except OSError:
                        pass


def run_fleet(
    request: FleetRequest, *, say: Callable[[str], None] = print, interactive_children: bool = True
) -> FleetResult:
    from engine.run.operator import Operator
    from engine.spec.loader import Catalog
    from engine.targets import load_inventory, select_targets
    from engine.transcript.redact import Redactor
    from engine.transcript.writer import default_transcript_path, new_run_id

    catalog = Catalog(request.extra_procedures)
    procedure = catalog.load(request.procedure)
    inventory = load_inventory(request.inventory)
    targets = select_targets(inventory, request.patterns, request.limit, request.exclude)
    plan = make_plan(
        procedure,
        targets,
        load=catalog.load,
        dry_run=request.dry_run,
        batch=request.batch,
        forks=request.forks,
        max_failures=request.max_failures,
    )
    if plan.rolling and plan.batch > 1 and not request.assume_yes:
        raise UsageError(
            f"{procedure.id} changes its targets: --batch {plan.batch} runs several at once, whose approvals "
            "cannot share one terminal; give --yes, or roll one target at a time (--batch 1)"
        )
    redactor = Redactor()
    secret = {p.name for p in procedure.params if p.secret}
    for item in request.variables:
        name, _, value = item.partition("=")
        if name in secret and value:
            redactor.add(name, value)
    operator = Operator.from_environment(name=request.operator, assume_yes=request.assume_yes)
    run_id = new_run_id()
    path = default_transcript_path(run_id, request.transcripts_dir)
    from engine.run.session import _open_transcript, procedure_header

    parent = _open_transcript(Path(path), run_id, redactor)
    parent.emit(
        "run.started",
        procedure=procedure_header(procedure),
        engine_version=__version__,
        operator=operator.name,
        host=socket.gethostname(),
        mode="dry-run" if request.dry_run else "live",
        incident=request.incident,
        params={item.partition("=")[0]: item.partition("=")[2] for item in request.variables},
        argv=list(request.argv),
        transcript_path=str(path),
        interactive=operator.interactive,
        assume_yes=request.assume_yes,
        fleet={**plan.describe(), "inventory": request.inventory},
        resumes=request.resumes,
    )
    parent.emit("fleet.planned", **plan.describe())
    say(
        f"runbook {procedure.id} on {len(targets)} targets "
        + (f"(rolling, {plan.batch} at a time)" if plan.rolling else f"(in parallel, {plan.forks} at once)")
    )
    say(f"transcript: {path}")
    stop = _Stop()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, stop.handler)
    started = time.monotonic()
    children: list[ChildOutcome] = []
    not_run: list[str] = []
    failures = 0
    halted = None
    approval: str | None = None  # "OPERATOR@RUN": an "all remaining" answer that covers the next targets
    try:
        for index, batch in enumerate(plan.batches()):
            if stop.signum is not None:
                not_run.extend(batch)
                continue
            if halted is not None:
                not_run.extend(batch)
                continue
            todo = []
            for target in batch:
                earlier = request.earlier.get(target)
                if earlier is not None and earlier.exit_code == ExitCode.OK and earlier.outcome == RunOutcome.OK:
                    reused = ChildOutcome(
                        target, earlier.run_id, RunOutcome.OK, 0, earlier.transcript, reused_from=earlier.run_id
                    )
                    parent.emit(
                        "fleet.child.finished",
                        target=target,
                        child_run_id=earlier.run_id,
                        outcome=RunOutcome.OK,
                        exit_code=0,
                        transcript=earlier.transcript,
                        reused_from=request.resumes,
                    )
                    children.append(reused)
                else:
                    todo.append(target)
            if not todo:
                continue
            capture = not (plan.rolling and plan.batch == 1 and interactive_children)

            def one(
                target: str, batch_index: int = index, capture: bool = capture, approval: str | None = approval
            ) -> ChildOutcome:
                child_path = Path(path).with_name(f"{run_id}.{target.replace('/', '.')}.jsonl")
                # a stopped change is continued; a read-only target simply reads again
                earlier = request.earlier.get(target) if plan.rolling else None
                argv = _child_argv(request, target, child_path, run_id, earlier, approval)
                parent.emit(
                    "fleet.child.started",
                    durable=True,
                    target=target,
                    batch=batch_index,
                    transcript=str(child_path),
                    continues=earlier.run_id if earlier is not None else None,
                )

                def finished(outcome: ChildOutcome) -> ChildOutcome:
                    parent.emit(
                        "fleet.child.finished",
                        durable=True,
                        target=target,
                        child_run_id=outcome.run_id,
                        outcome=outcome.outcome,
                        exit_code=outcome.exit_code,
                        transcript=str(child_path),
                        failed_expectations=list(outcome.failed),
                        continues=earlier.run_id if earlier is not None else None,
                    )
                    return outcome

                if not plan.rolling:  # reads only: a thread of this process (no interpreter start-up each)
                    code, error = _in_process(request, target, child_path, run_id, argv, catalog, inventory)
                    outcome = child_outcome(target, child_path, code)
                    if error is not None:  # it never started: the reason stands in for the expectations
                        outcome = ChildOutcome(
                            target,
                            None,
                            RunOutcome.USAGE if code == ExitCode.USAGE else RunOutcome.ERROR,
                            code,
                            "",
                            (error,),
                        )
                    return finished(outcome)
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL if capture else None,
                    # its own lines go beside the parent's progress (stderr): stdout is the parent's table or JSON
                    stdout=subprocess.PIPE if capture else sys.stderr.fileno(),
                    stderr=subprocess.PIPE if capture else None,
                    text=True,
                )
                with stop.lock:
                    stop.running.add(proc)
                try:
                    proc.communicate()
                finally:
                    with stop.lock:
                        stop.running.discard(proc)
                outcome = child_outcome(target, child_path, proc.returncode)
                finished(outcome)
                if capture and plan.rolling:
                    say(f"  {target}: {outcome.outcome} (exit {outcome.exit_code})")
                return outcome

            workers = plan.forks if not plan.rolling else len(todo)
            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
                done = list(pool.map(one, todo))
            children.extend(done)
            for outcome in done:
                if outcome.all_remaining_by and approval is None:
                    approval = f"{outcome.all_remaining_by}@{outcome.run_id}"
                    parent.emit(
                        "fleet.approval",
                        durable=True,
                        by=outcome.all_remaining_by,
                        method=ALL_REMAINING,
                        child_run_id=outcome.run_id,
                        target=outcome.target,
                    )
            if plan.rolling:
                failures += sum(1 for o in done if o.exit_code != ExitCode.OK)
                if failures > plan.max_failures:
                    halted = f"{failures} target(s) failed, more than --max-failures {plan.max_failures}"
                    parent.emit("fleet.halted", durable=True, reason=halted, failures=failures)
                    say(f"rollout halted: {halted}")
        if stop.signum is not None:
            ended, code = RunOutcome.INTERRUPTED, 128 + stop.signum
        else:
            code = worst([c.exit_code for c in children])
            ended = _BY_CODE.get(code, RunOutcome.ERROR)
            if halted is not None and code == ExitCode.FINDINGS:
                ended = RunOutcome.FAILED
    except Exception as exc:  # a bug, or a child that could not be started: recorded, never lost
        ended, code, halted = RunOutcome.ERROR, ExitCode.UNREACHABLE, f"internal error: {exc!r}"
        not_run.extend(t for t in plan.targets if t not in {c.target for c in children} and t not in not_run)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    parent.end(
        outcome=ended,
        exit_code=code,
        duration_ms=round((time.monotonic() - started) * 1000, 3),
        error=(f"interrupted by signal {stop.signum}" if stop.signum is not None else halted),
        summary={
            "targets": len(plan.targets),
            "ok": sum(1 for c in children if c.exit_code == 0),
            "failed": sum(1 for c in children if c.exit_code != 0),
            "not_run": len(not_run),
        },
    )
    parent.close()
    return FleetResult(run_id, procedure.id, ended, code, str(path), children, not_run, plan)


def _in_process(
    request: FleetRequest,
    target: str,
    child_path: Path,
    parent_id: str,
    argv: list[str],
    catalog: Any,
    inventory: dict[str, Any],
) -> tuple[int, str | None]:
    """One target of a parallel read-only fan-out, run in this process: its exit code, and why it never
    started if it did not."""
    from engine.errors import Interrupted, RunbookError
    from engine.run.session import RunRequest, execute
    from engine.spec.params import parse_var_options

    try:
        result = execute(
            RunRequest(
                procedure=request.procedure,
                variables=parse_var_options(request.variables),
                inventory=request.inventory,
                target=target,
                dry_run=request.dry_run,
                assume_yes=request.assume_yes,
                transcript=child_path,
                transcripts_dir=request.transcripts_dir,
                operator=request.operator,
                signing_key=request.signing_key,
                lease_ttl=request.lease_ttl,
                incident=request.incident,
                argv=("runbook", *argv[3:]),
                extra_procedures=request.extra_procedures,
                parent_run=parent_id,
                no_terminal=True,
                catalog=catalog,
                loaded_inventory=inventory,
            )
        )
    except RunbookError as exc:  # before its transcript existed (an unresolvable password, say)
        return exc.exit_code, str(exc)
    except Interrupted as exc:
        return exc.exit_code, f"interrupted by {exc}"
    return result.exit_code, None


def _child_argv(
    request: FleetRequest,
    target: str,
    child_path: Path,
    parent_id: str,
    earlier: ChildOutcome | None,
    approval: str | None,
) -> list[str]:
    base = [sys.executable, "-m", "engine.cli"]
    common = ["--transcripts-dir", str(request.transcripts_dir), "--parent-run", parent_id]
    if request.assume_yes:
        common.append("--yes")
    if request.operator:
        common += ["--operator", request.operator]
    if request.signing_key is not None:
        common += ["--signing-key", str(request.signing_key)]
    for extra in request.extra_procedures:
        common += ["--procedures", str(extra)]
    if approval:
        common += ["--rollout-approval", approval]
    else:
        common.append("--rollout")
    if earlier is not None and earlier.run_id and earlier.outcome != RunOutcome.OK:
        return [*base, "continue", earlier.transcript, "--transcript", str(child_path), *common, *request.continue_args]
    argv = [*base, "run", request.procedure, "--inventory", request.inventory, "--target", target]
    argv += ["--transcript", str(child_path), "--lease-ttl", str(request.lease_ttl), *common]
    for item in request.variables:
        argv += ["--var", item]
    if request.dry_run:
        argv.append("--dry-run")
    if request.incident:
        argv += ["--incident", request.incident]
    return argv
