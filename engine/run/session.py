"""One run from start to end: resolve inputs, open the transcript, run, and always close it properly.

Inputs are checked before anything is opened (a bad --var never reaches a server); once the
transcript exists, every way the run can end (done, findings, refused, unreachable, Ctrl-C) writes
`run.ended` with its outcome and maps to one exit code.
"""

from __future__ import annotations

import errno
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine import __version__
from engine.errors import (
    ExitCode,
    Interrupted,
    RunbookError,
    StepAborted,
    StoppedError,
    TranscriptUnwritable,
    UsageError,
    handling_interruption,
)
from engine.outcome import Outcome, RunOutcome
from engine.records import BlastRadius, RunCounts, RunSummary, StepSummary
from engine.spec.model import Procedure
from engine.targets import SentinelSpec, Target


@dataclass(frozen=True)
class RunRequest:
    procedure: str
    variables: dict[str, str] = field(default_factory=dict)
    redis_url: str | None = None
    inventory: str | None = None
    target: str | None = None
    sandbox: bool = False
    sandbox_topology: str = "standalone"  # standalone | replicated | cluster
    sentinels: tuple[str, ...] = ()  # --sentinel HOST:PORT (repeatable), with --master NAME
    master: str | None = None
    dry_run: bool = False
    assume_yes: bool = False
    transcript: Path | None = None
    transcripts_dir: Path = Path("transcripts")
    operator: str | None = None
    signing_key: Path | None = None
    steal_lease: str | None = None
    lease_ttl: float = 30.0
    incident: str | None = None
    argv: tuple[str, ...] = ()
    extra_procedures: tuple[Path, ...] = ()
    parent_run: str | None = None  # the fleet run this one is a target of
    rollout: bool = False  # a target of a rolling run: the gate also takes "all remaining"
    rollout_approval: str | None = None  # "OPERATOR@RUN": an "all remaining" answer covering this target
    resume: Any = None  # engine.run.resume.ResumePlan: the stopped run this one continues
    resume_changes: tuple[str, ...] = ()  # what changed since (accepted with --allow-changed)
    no_terminal: bool = False  # one of a fleet's parallel runs: nobody is asked anything on the terminal
    catalog: Any = None  # a fleet's parallel runs share the parent's procedure catalog and inventory,
    loaded_inventory: Any = None  # read and checked once, not once per target


@dataclass
class RunResult:
    run_id: str
    procedure: str
    outcome: RunOutcome
    exit_code: int
    transcript: str | None
    steps: list[Any] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> RunSummary:
        return {
            "run_id": self.run_id,
            "procedure": self.procedure,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "transcript": self.transcript,
            "error": self.error,
            "steps": [_step_json(s) for s in self.steps],
        }


def _step_json(s: Any) -> StepSummary:
    """One step record (engine.run.runner.StepRecord) as `--json` shows it."""
    out: StepSummary = {
        "id": s.id,
        "name": s.name,
        "outcome": s.outcome,
        "effect": s.effect,
        "result": s.result,
        "summary": s.summary,
        "duration_ms": s.duration_ms,
        "procedure": s.procedure,
        "expectations": s.expectations,
        "message": s.message,
    }
    if s.outcome == Outcome.PREDICTED:  # what a dry-run step would have done, as the gate would have shown it
        out["where"] = s.where
        out["command"] = s.command
        out["blast_radius"] = s.blast_radius or BlastRadius()
        out["predicted_changes"] = s.predicted_changes
    if s.follow_up:
        out["follow_up"] = s.follow_up
    return out


INCIDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
"""Each ends the run the same way: approval refused if one was being asked, run.ended, exit 128+signum.
SIGHUP is what a closed SSH session or terminal sends; SIGQUIT is Ctrl-\\. SIGPIPE stays ignored (as
Python sets it): a write to a closed stdout fails with EPIPE and the console raises Interrupted(SIGPIPE)."""


class _SignalGuard:
    """Turns the first handled signal into Interrupted; later ones are ignored while the run records its end.

    During cleanup (`finally:` steps) a signal is held until the cleanup is done (and ends the run then,
    unless an earlier one already does); a second one during the cleanup abandons it. A later signal raises
    again when the first one's Interrupted was lost (raised inside a finalizer, which drops it: see
    `handling_interruption`) and the run went on: a second Ctrl-C always stops it.
    """

    def __init__(self) -> None:
        self.armed = True
        self.received: list[int] = []
        self.cleaning: Callable[[], bool] = lambda: False
        self.cleanup_interruptible = True  # false once the run records its end
        self.held: list[int] = []

    def handler(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        if self.cleanup_interruptible and self.cleaning():
            if not self.held:
                self.held.append(signum)
                sys.stderr.write("\n  cleaning up (finally steps); interrupt again to abandon the cleanup\n")
                return
            self.armed = self.cleanup_interruptible = False
            raise Interrupted(signum)  # a second signal: the cleanup is abandoned
        if self.armed or (self.cleanup_interruptible and not handling_interruption()):
            self.armed = False
            raise Interrupted(signum)


_GUARDS: list[_SignalGuard] = []  # the guard of the run in progress (runs do not nest)


def interrupt(signum: int) -> None:
    """End the run as if `signum` had arrived (the console lost its output): disarms the guard first, so
    the real signal that may follow (SIGHUP after EIO) cannot cut the recording of this one."""
    for guard in _GUARDS:
        guard.armed = False
    raise Interrupted(signum)


@contextmanager
def _signals_raise() -> Iterator[_SignalGuard]:
    guard = _SignalGuard()
    previous = {}
    _GUARDS.append(guard)
    try:
        if threading.current_thread() is threading.main_thread():  # elsewhere Python cannot set handlers
            for sig in HANDLED_SIGNALS:
                previous[sig] = signal.signal(sig, guard.handler)
        yield guard
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _GUARDS.remove(guard)


def prepare(request: RunRequest) -> tuple[Procedure, dict[str, Any], Any]:
    """Everything that can be checked without touching a server: procedure, params. Raises UsageError."""
    from engine.spec.loader import Catalog
    from engine.spec.params import resolve

    catalog = request.catalog or Catalog(request.extra_procedures)
    procedure = catalog.load(request.procedure)
    from engine.steps import get

    prompted = frozenset().union(*(get(s.kind).prompted_params(s.action) for s in procedure.steps))
    params = resolve(procedure.params, request.variables, procedure=procedure.id, interactive_later=prompted)
    return procedure, params, catalog


def resolve_target(request: RunRequest) -> Target:
    from engine.targets import load_inventory, redis_from_url, target_from_inventory

    if bool(request.sentinels) != bool(request.master):
        raise UsageError("--sentinel HOST:PORT and --master NAME go together")
    via_sentinel = bool(request.sentinels) and not (request.inventory or request.target)
    chosen = [bool(request.redis_url) or via_sentinel, bool(request.inventory or request.target), request.sandbox]
    if sum(chosen) != 1:
        raise UsageError(
            "say where to run: --redis URL, --sentinel HOST:PORT --master NAME, --inventory FILE --target NAME, "
            "or --sandbox"
        )
    if request.redis_url or via_sentinel:
        sentinel = _sentinel_from_options(request)
        # the ignore below: without --redis it is via_sentinel, so `sentinel` is set
        url = request.redis_url or "redis://{}:{}".format(*sentinel.addresses[0])  # type: ignore[union-attr]
        endpoint = redis_from_url(url)
        name = f"{endpoint.host}:{endpoint.port}"
        if sentinel is not None and not request.redis_url:
            name = f"{sentinel.master}@sentinel"
        return Target(name=name, redis=endpoint, sentinel=sentinel)
    if not (request.inventory and request.target):
        raise UsageError("--inventory and --target go together")
    return target_from_inventory(request.loaded_inventory or load_inventory(request.inventory), request.target)


def _sentinel_from_options(request: RunRequest) -> SentinelSpec | None:
    """--sentinel/--master; Sentinel's own password from RUNBOOK_SENTINEL_AUTH (never the command line)."""
    import os

    from engine.targets import parse_address

    if not request.sentinels:
        return None
    addresses = tuple(parse_address(a, "--sentinel") for a in request.sentinels)
    password = os.environ.get("RUNBOOK_SENTINEL_AUTH") or None
    return SentinelSpec(addresses, str(request.master), password, "RUNBOOK_SENTINEL_AUTH" if password else None)


def execute(
    request: RunRequest,
    *,
    on_step: Callable[[Any], None] = lambda r: None,
    on_start: Callable[[str], None] = lambda path: None,
    started_sandbox: Callable[[Any], None] = lambda s: None,
) -> RunResult:
    """Run one procedure. UsageError before the transcript exists propagates (exit 2, nothing touched),
    and so does Interrupted: a signal that came before there was anything to record."""
    with _signals_raise() as guard:
        return _execute(request, guard, on_step=on_step, on_start=on_start, started_sandbox=started_sandbox)


def _execute(
    request: RunRequest,
    guard: _SignalGuard,
    *,
    on_step: Callable[[Any], None],
    on_start: Callable[[str], None],
    started_sandbox: Callable[[Any], None],
) -> RunResult:
    from engine.run.context import Connections
    from engine.run.gate import Gate
    from engine.run.operator import Operator
    from engine.run.runner import Runner, RunState
    from engine.spec.params import resolve
    from engine.targets import missing_facets
    from engine.transcript.redact import Redactor
    from engine.transcript.writer import TranscriptWriteError, default_transcript_path, new_run_id

    if request.incident is not None and not INCIDENT_ID.fullmatch(request.incident):
        raise UsageError(f"--incident {request.incident!r}: use letters, digits, '.', '_' and '-' (it names files)")
    procedure, params, catalog = prepare(request)
    signer = None
    if request.signing_key is not None:
        from engine.transcript.signer import load_signer

        signer = load_signer(request.signing_key)  # before anything starts: a bad key is exit 2
    sandbox = None
    try:
        if request.sandbox:
            from engine.run.sandbox_target import start_sandbox

            sandbox = start_sandbox(request.sandbox_topology)
            started_sandbox(sandbox)
            target = sandbox.target
        else:
            target = resolve_target(request)
        problems = missing_facets(target, procedure.requires, procedure.file)
        if problems:
            raise UsageError(f"{procedure.id} cannot run against '{target.name}'", problems)
        redactor = Redactor()
        if target.redis and target.redis.password:
            redactor.add(target.redis.password_source or "redis-password", target.redis.password)
        if target.sentinel is not None and target.sentinel.password:
            redactor.add(target.sentinel.password_source or "sentinel-password", target.sentinel.password)
        for param in procedure.params:
            if param.secret and params.get(param.name) is not None:
                redactor.add(param.name, str(params[param.name]))
        run_id = new_run_id()
        path = request.transcript or default_transcript_path(run_id, request.transcripts_dir)
        operator = Operator.from_environment(name=request.operator, assume_yes=request.assume_yes)
        if request.no_terminal:
            operator.interactive = False
        mode = "dry-run" if request.dry_run else "live"
        transcript = _open_transcript(Path(path), run_id, redactor, signer)
        try:
            transcript.emit(
                "run.started",
                procedure=procedure_header(procedure),
                engine_version=__version__,
                operator=operator.name,
                signing_key=signer.describe() if signer is not None else None,
                host=socket.gethostname(),
                mode=mode,
                incident=request.incident,
                params={
                    p.name: ("[SECRET:" + p.name + "]" if p.secret else params.get(p.name)) for p in procedure.params
                },
                target=target.describe(),
                argv=list(request.argv),
                transcript_path=str(path),
                interactive=operator.interactive,
                assume_yes=request.assume_yes,
                parent_run=request.parent_run,
                resumes=request.resume.run_id if request.resume is not None else None,
                resume_changes=list(request.resume_changes) if request.resume is not None else None,
            )
        except OSError as exc:  # not even the first line fits: nothing was run, leave no empty file behind
            _discard(transcript)
            raise TranscriptUnwritable(_unwritable(path, exc)) from None
        except BaseException:  # a signal before the run began: nothing to keep either
            _discard(transcript)
            raise
        state = RunState()
        connections = None
        gate: Any = None
        started = time.monotonic()
        outcome: RunOutcome = RunOutcome.OK
        code, error = ExitCode.OK, None
        try:  # from run.started on, every way out (a signal included) is recorded in run.ended
            on_start(str(path))
            connections = Connections(
                target,
                allow_mutation=not request.dry_run,
                on_host_key_accepted=lambda event: transcript.emit("host_key.accepted", durable=True, **event),
                on_topology_changed=lambda event: _topology_changed(transcript, event),
            )
            discovered: dict[str, Any] = {}
            if target.redis is not None:  # the deployment, as found now; unreachable is recorded, not fatal
                discovered = connections.discover()
                transcript.emit("topology.discovered", **discovered)

            def resolve_call(callee: Procedure, given: dict[str, Any]) -> dict[str, Any]:
                values = resolve(callee.params, {k: v for k, v in given.items()}, procedure=callee.id)
                for param in callee.params:
                    if param.secret and values.get(param.name) is not None:
                        redactor.add(param.name, str(values[param.name]))
                return values

            if target.redis is not None:
                # a hung server that did not answer discovery is not asked again: that would wait out the same
                # timeout before the first step, in the very incident the run is for
                known = None if connections.seed_timed_out else identify(connections, max_age_s=1.0)
                transcript.emit("target.identified", redis_run_id=known)
            gate = Gate(operator, rollout=request.rollout, covered_by=request.rollout_approval)
            if not request.dry_run:  # a change takes the target's lease first; reads and rehearsals never do
                from engine.run.lease import FileStore, new_holder
                from engine.run.lease_gate import LeasingGate
                from engine.run.lease_redis import LeaseRedis

                live = connections

                gate = LeasingGate(
                    gate,
                    new_holder(operator.name, run_id, procedure.id, request.incident, socket.gethostname()),
                    redis_call=LeaseRedis(target.redis, password=lambda: _current_password(live, target))
                    if target.redis is not None
                    else None,
                    fallback=FileStore(request.transcripts_dir, target.full_name),
                    record=transcript.emit,
                    ttl=request.lease_ttl,
                    steal_reason=request.steal_lease,
                    resumes=request.resume.run_id if request.resume is not None else None,
                )
            runner = Runner(
                transcript=transcript,
                redactor=redactor,
                connections=connections,
                operator=operator,
                gate=gate,
                dry_run=request.dry_run,
                target_name=target.full_name,
                load_procedure=catalog.load,
                resolve_params=resolve_call,
                target_values={
                    **template_values(target, run_id, request, operator.name),
                    "topology": discovered.get("topology"),
                },
                on_step=on_step,
                show_progress=sys.stderr.isatty() and not request.no_terminal,
                resume=request.resume,
            )
            state = runner.state
            guard.cleaning = lambda: runner.cleaning > 0
            runner.run(procedure, params)
            if guard.held:  # a signal came during the cleanup after the steps: the run ends as interrupted
                guard.armed = False
                raise Interrupted(guard.held[0])
            if state.findings:
                outcome, code = RunOutcome.FINDINGS, ExitCode.FINDINGS
        except StepAborted as exc:
            code = exc.exit_code
            outcome = {
                ExitCode.FINDINGS: RunOutcome.FAILED,
                ExitCode.USAGE: RunOutcome.USAGE,
                ExitCode.STOPPED: RunOutcome.STOPPED,
            }.get(code, RunOutcome.ERROR)
            error = redactor.text(str(exc))
        except StoppedError as exc:
            outcome = RunOutcome.REFUSED if state.refusals else RunOutcome.STOPPED
            code, error = ExitCode.STOPPED, str(exc)
        except RunbookError as exc:  # UsageError mid-run (a template on live data), TargetError, MutationRefused
            outcome, code, error = exc.outcome, exc.exit_code, redactor.text(str(exc))
        except Interrupted as exc:
            guard.cleanup_interruptible = False  # caught: the run ends here, and nothing may cut its recording
            outcome, code, error = RunOutcome.INTERRUPTED, exc.exit_code, f"interrupted by {exc}"
        except TranscriptWriteError as exc:  # the disk filled mid-run: stopped before anything else could change
            outcome, code, error = RunOutcome.ERROR, ExitCode.UNREACHABLE, _unwritable(path, exc)
        except Exception as exc:  # a bug: record it, never lose the transcript
            outcome, code, error = RunOutcome.ERROR, ExitCode.UNREACHABLE, redactor.text(f"internal error: {exc!r}")
        finally:
            guard.armed = guard.cleanup_interruptible = False  # a second signal must not cut the recording
            if gate is not None and hasattr(gate, "release"):
                try:
                    gate.release()
                except OSError:  # the lease expires by itself; a full disk must not hide the run's outcome
                    pass
            if connections is not None:
                connections.close()
        records = state.records
        counts: RunCounts = {
            "steps": len(records),
            "ok": sum(r.outcome == Outcome.OK for r in records),
            "failed": sum(r.outcome in (Outcome.FAILED, Outcome.ERROR) for r in records),
            "skipped": sum(r.outcome == Outcome.SKIPPED for r in records),
            "predicted": sum(r.outcome == Outcome.PREDICTED for r in records),
            "approvals": state.approvals,
            "refusals": state.refusals,
            "findings": state.findings,
        }
        _end(
            transcript,
            outcome=outcome,
            exit_code=code,
            duration_ms=round((time.monotonic() - started) * 1000, 3),
            error=error,
            summary=counts,
        )
        return RunResult(run_id, procedure.id, outcome, code, str(path), records, error)
    finally:
        guard.armed = False
        if sandbox is not None:
            sandbox.stop()


def identify(connections: Any, *, max_age_s: float = 0.0) -> str | None:
    """The Redis server process's run_id (INFO server), which a restart or failover changes; None if down.
    `max_age_s`: what the adapter's connect read no longer ago than that will do (a round trip saved)."""
    try:
        adapter = connections.redis()
        fresh = time.monotonic() - getattr(adapter, "server_info_at", 0.0) <= max_age_s
        info = adapter.server_info if fresh and adapter.server_info else adapter.call(["INFO", "server"])
    except Exception:  # a down or refusing server is what some procedures are for: no identity then
        return None
    if isinstance(info, bytes):
        info = info.decode("utf-8", "replace")
    if isinstance(info, dict):
        value = info.get("run_id")
        return str(value) if value else None
    for line in str(info).splitlines():
        if line.startswith("run_id:"):
            return line.partition(":")[2].strip()
    return None


def procedure_header(procedure: Procedure) -> dict[str, Any]:
    """What run.started says of the procedure: enough to find the very file again (its sha256)."""
    return {
        "id": procedure.id,
        "title": procedure.title,
        "section": procedure.section,
        "file": procedure.file,
        "sha256": procedure.sha256,
    }


def _current_password(connections: Any, target: Target) -> str | None:
    """The password the run's Redis connection uses now (a procedure may have rotated it)."""
    adapter = getattr(connections, "_redis", None)
    endpoint = getattr(adapter, "endpoint", None)
    if endpoint is not None:
        return endpoint.password
    return target.redis.password if target.redis is not None else None


def _topology_changed(transcript: Any, event: dict[str, Any]) -> None:
    """Recorded, and said to the operator (stderr: --json keeps stdout clean): where a command really went."""
    from engine.printable import printable

    transcript.emit("topology.changed", **event)
    try:
        sys.stderr.write(f"  topology: {printable(str(event.get('reason') or event.get('error')))}\n")
    except OSError:
        pass


def _open_transcript(path: Path, run_id: str, redactor: Any, signer: Any = None) -> Any:
    """A new transcript, or the error that says why not: exit 2 for a bad path, 4 for a failing disk."""
    from engine.transcript.writer import TranscriptWriter

    try:
        return TranscriptWriter.create(path, run_id, redactor, signer=signer)
    except FileExistsError:
        raise UsageError(f"--transcript {path}: a transcript is never overwritten; choose a new path") from None
    except OSError as exc:
        if exc.errno in _DISK_ERRORS:
            raise TranscriptUnwritable(_unwritable(path, exc)) from None
        raise UsageError(f"--transcript {path}: cannot create it: {exc.strerror or exc}") from None


_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


def _unwritable(path: str | Path, exc: OSError) -> str:
    from engine.transcript.writer import TranscriptSpaceError

    if isinstance(exc, TranscriptSpaceError):
        return f"transcript {path}: {exc.strerror}. The change was not put to the gate; nothing was changed"
    return (
        f"transcript {path} could not be written: {exc.strerror or exc}; "
        "the run stopped there, since what it would do could not be recorded"
    )


def _discard(transcript: Any) -> None:
    """Remove a transcript this run created but never started (no event in it, or half of the first)."""
    transcript.close()
    try:
        transcript.path.unlink()
    except OSError:
        pass


def _end(transcript: Any, **fields: Any) -> None:
    """Write run.ended if the disk still lets us (a full one may not), then close; never raises."""
    try:
        transcript.end(**fields)
    except OSError:
        pass
    finally:
        transcript.close()


def template_values(target: Target, run_id: str, request: RunRequest, operator: str) -> dict[str, Any]:
    """The built-in names every template sees: target, run, service, paths."""
    from engine.spec.template import ShellText

    service = {}
    paths: dict[str, str] = {}
    if target.ssh is not None:
        service = {k: ShellText(v) for k, v in vars(target.ssh.service).items() if v}
        paths = dict(target.ssh.paths)
        if target.ssh.service_user:
            paths.setdefault("service_user", target.ssh.service_user)
    return {
        "target": {**target.describe(), "password_file": target.password_file},
        "run": {
            "id": run_id,
            "dry_run": request.dry_run,
            "incident": request.incident,
            "operator": operator,
        },
        "service": service,
        "paths": paths,
        "now": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
