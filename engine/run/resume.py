"""What a stopped run left done, in doubt and to do: read from its transcript, decided without a server.

A step is named by a `StepKey`: the calls it runs inside (each a procedure, its call step and that step's
foreach iteration), its id and its own foreach iteration, so a step of a called procedure or one item of a
loop is told apart from every other. A step (or item) is done when its last `step.finished` says ok: it is
not run again and its registered value comes back from the transcript. A change whose `step.started` has
no `step.finished` is in doubt (the command may or may not have reached the server): it is measured and
put to the gate again, never sent blindly. Secret results are not in the transcript: those steps run
again, as do reads marked `precondition: true`. A transcript written before steps inside a call carried
`call_path` names only its top-level steps unambiguously: its steps inside calls are neither reused nor in doubt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import UsageError
from engine.outcome import Outcome
from engine.spec.model import Effect

Segment = tuple[str, str, int | None]
"""One call on the way to a step: (the calling procedure's id, its call step's id, that step's foreach iteration)."""


@dataclass(frozen=True)
class StepKey:
    """Which visit of which step: unambiguous across calls and foreach items (a goto's revisits share it)."""

    path: tuple[Segment, ...]
    step_id: str
    iteration: int | None = None

    def __str__(self) -> str:
        return " > ".join([*(_item(step, i) for _, step, i in self.path), _item(self.step_id, self.iteration)])


def _item(step_id: str, iteration: int | None) -> str:
    return step_id if iteration is None else f"{step_id}[{iteration}]"


def key_of(step: dict[str, Any]) -> StepKey | None:
    """The key of a transcript's step object; None when it cannot be told apart (a legacy step inside a call)."""
    if "id" not in step:
        return None
    raw = step.get("call_path")
    if raw is None:
        if step.get("call_depth", 0):
            return None
        path: tuple[Segment, ...] = ()
    else:
        try:
            path = tuple((str(s["procedure"]), str(s["step"]), _iteration(s.get("iteration"))) for s in raw)
        except (TypeError, KeyError, AttributeError):
            return None
    return StepKey(path, str(step["id"]), _iteration(step.get("iteration")))


def _iteration(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class DoneStep:
    step_id: str
    result: Any
    effect: str
    blast_radius: dict[str, Any] | None = None
    shrunk: bool = False  # the transcript kept a cut-down result: the step runs again if it is a read
    command: str | None = None  # as its last step.started rendered it: a foreach item reused must render the same


@dataclass(frozen=True)
class InDoubt:
    step_id: str
    effect: str
    command: str
    started_at: str
    approved: bool  # the change had been approved when the run stopped
    key: StepKey | None = None  # which visit: inside which calls, at which foreach item

    def __post_init__(self) -> None:
        if self.key is None:
            object.__setattr__(self, "key", StepKey((), self.step_id))


@dataclass(frozen=True)
class ResumePlan:
    run_id: str
    path: str
    procedure: dict[str, Any]
    engine_version: str
    target: dict[str, Any]
    redis_run_id: str | None
    argv: tuple[str, ...]
    params: dict[str, Any]
    parent_run: str | None
    ended: dict[str, Any] | None
    done: dict[StepKey, DoneStep] = field(default_factory=dict)
    in_doubt: InDoubt | None = None
    fleet: dict[str, Any] | None = None  # a parent run's plan
    children: dict[str, dict[str, Any]] = field(default_factory=dict)  # target -> its last child.finished

    def reuse(self, key: StepKey, step: Any) -> DoneStep | None:
        """The recorded run of `step` (this visit of it: `key`) if it is not to run again, else None."""
        done = self.done.get(key)
        if done is None or step.secret or step.precondition:
            return None
        if done.shrunk and done.effect == str(Effect.READ):
            return None
        return done


def _shrunk(value: Any) -> bool:
    if isinstance(value, str):
        return (value.startswith("<") and value.endswith(" bytes>")) or ("... (" in value and value.endswith(" chars)"))
    if isinstance(value, list):
        return any(isinstance(v, str) and v.startswith("... ") and v.endswith(" more items") for v in value) or any(
            _shrunk(v) for v in value
        )
    if isinstance(value, dict):
        return "..." in value or any(_shrunk(v) for v in value.values())
    return False


_CHANGES = frozenset({str(Effect.WRITE), str(Effect.DESTRUCTIVE)})
"""The effects (as a transcript writes them) of a step that may have changed something."""


def plan_from_events(events: list[dict[str, Any]], path: str) -> ResumePlan:
    if not events or events[0].get("type") != "run.started":
        raise UsageError(f"{path}: not a run transcript (its first line is not run.started)")
    head = events[0]
    done: dict[StepKey, DoneStep] = {}
    open_steps: dict[StepKey, dict[str, Any]] = {}
    commands: dict[StepKey, str] = {}
    approved: set[StepKey] = set()
    identity = None
    children: dict[str, dict[str, Any]] = {}
    ended = None
    for event in events:
        kind = event.get("type")
        key = key_of(event.get("step") or {})
        if kind == "target.identified":
            identity = event.get("redis_run_id")
        elif kind == "run.ended":
            ended = event
        elif kind in ("fleet.child.finished",):
            children[str(event.get("target"))] = event
        elif key is None:
            continue
        elif kind == "step.started":
            open_steps[key] = event
            commands[key] = str(event.get("command") or "")
            approved.discard(key)
        elif kind == "approval.given":
            approved.add(key)
        elif kind == "approval.refused":
            open_steps.pop(key, None)  # refused (a signal at the prompt included): certainly not sent
        elif kind == "step.finished":
            open_steps.pop(key, None)
            if event.get("outcome") == Outcome.OK:
                done[key] = DoneStep(
                    key.step_id,
                    event.get("result"),
                    str(event.get("effect", "read")),
                    event.get("blast_radius"),
                    _shrunk(event.get("result")),
                    commands.get(key),
                )
            else:
                done.pop(key, None)
        elif kind == "step.resumed":
            done[key] = DoneStep(
                key.step_id,
                event.get("result"),
                str(event.get("effect", "read")),
                event.get("blast_radius"),
                command=event.get("command"),
            )
    in_doubt = None
    changes = [(k, e) for k, e in open_steps.items() if e.get("effect") in _CHANGES and e.get("command")]
    if changes:
        key, last = max(changes, key=lambda change: int(change[1].get("seq") or 0))  # the latest started
        in_doubt = InDoubt(
            key.step_id,
            str(last["effect"]),
            str(last.get("command", "")),
            str(last.get("time", "")),
            key in approved,
            key,
        )
    return ResumePlan(
        run_id=str(head.get("run_id")),
        path=path,
        procedure=dict(head.get("procedure") or {}),
        engine_version=str(head.get("engine_version", "")),
        target=dict(head.get("target") or {}),
        redis_run_id=identity,
        argv=tuple(head.get("argv") or ()),
        params=dict(head.get("params") or {}),
        parent_run=head.get("parent_run"),
        ended=ended,
        done=done,
        in_doubt=in_doubt,
        fleet=head.get("fleet"),
        children=children,
    )


def compatible(recorded: str, current: str) -> bool:
    """Same major.minor: a patch release reads and runs the same procedures the same way."""
    return recorded.split(".")[:2] == current.split(".")[:2]


def what_changed(
    plan: ResumePlan, *, procedure_sha256: str | None, engine_version: str, redis_run_id: str | None
) -> list[str]:
    """Each difference between the stopped run's world and today's, said so an operator can judge it."""
    out = []
    recorded_sha = plan.procedure.get("sha256")
    if recorded_sha and procedure_sha256 and recorded_sha != procedure_sha256:
        out.append(
            f"the procedure file {plan.procedure.get('file')} changed: sha256 {recorded_sha[:12]}... "
            f"then, {procedure_sha256[:12]}... now"
        )
    if not compatible(plan.engine_version, engine_version):
        out.append(f"the engine changed from {plan.engine_version} to {engine_version} (not compatible)")
    if plan.redis_run_id and redis_run_id != plan.redis_run_id:
        now = redis_run_id or "not reachable"
        out.append(
            f"the target's Redis is another server process: run_id {plan.redis_run_id} then, {now} now "
            "(restarted, failed over or replaced)"
        )
    return out


def find_transcript(ref: str, directory: Path) -> Path:
    """A transcript path, or a run id looked up under the transcripts directory."""
    path = Path(ref)
    if path.is_file():
        return path
    if "/" in ref or ref.endswith(".jsonl"):
        raise UsageError(f"{ref}: no such transcript")
    found = sorted(p for p in directory.rglob(f"{ref}.jsonl") if p.is_file()) if directory.is_dir() else []
    if not found:
        raise UsageError(f"no transcript of run {ref} under {directory} (give its path, or --transcripts-dir)")
    return found[0]


def load_plan(path: Path) -> ResumePlan:
    from engine.transcript.reader import read_transcript

    try:
        transcript = read_transcript(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not transcript.chain_ok:
        raise UsageError(f"{path}: its hash chain is broken (runbook transcript verify); it cannot be resumed from")
    return plan_from_events(transcript.events, str(path))
