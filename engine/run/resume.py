"""What a stopped run left done, in doubt and to do: read from its transcript, decided without a server.

A step is done when its last `step.finished` (top level, not an item of a loop) says ok: it is not run
again and its registered value comes back from the transcript. A change whose `step.started` has no
`step.finished` is in doubt (the command may or may not have reached the server): it is measured and
put to the gate again, never sent blindly. Secret results are not in the transcript: those steps run
again, as do reads marked `precondition: true`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import UsageError
from engine.outcome import Outcome
from engine.spec.model import Effect


@dataclass(frozen=True)
class DoneStep:
    step_id: str
    result: Any
    effect: str
    blast_radius: dict[str, Any] | None = None
    shrunk: bool = False  # the transcript kept a cut-down result: the step runs again if it is a read


@dataclass(frozen=True)
class InDoubt:
    step_id: str
    effect: str
    command: str
    started_at: str
    approved: bool  # the change had been approved when the run stopped


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
    done: dict[str, DoneStep] = field(default_factory=dict)
    in_doubt: InDoubt | None = None
    fleet: dict[str, Any] | None = None  # a parent run's plan
    children: dict[str, dict[str, Any]] = field(default_factory=dict)  # target -> its last child.finished

    def reuse(self, step: Any) -> DoneStep | None:
        """The recorded run of `step` if it is not to run again, else None."""
        done = self.done.get(step.id)
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
    done: dict[str, DoneStep] = {}
    open_steps: dict[str, dict[str, Any]] = {}
    approved: set[str] = set()
    identity = None
    children: dict[str, dict[str, Any]] = {}
    ended = None
    for event in events:
        kind = event.get("type")
        step = event.get("step") or {}
        top = step.get("call_depth", 0) == 0 and step.get("iteration") is None
        if kind == "target.identified":
            identity = event.get("redis_run_id")
        elif kind == "run.ended":
            ended = event
        elif kind in ("fleet.child.finished",):
            children[str(event.get("target"))] = event
        elif not top or "id" not in step:
            continue
        elif kind == "step.started":
            open_steps[step["id"]] = event
            approved.discard(step["id"])
        elif kind == "approval.given":
            approved.add(step["id"])
        elif kind == "approval.refused":
            open_steps.pop(step["id"], None)  # refused (a signal at the prompt included): certainly not sent
        elif kind == "step.finished":
            open_steps.pop(step["id"], None)
            if event.get("outcome") == Outcome.OK:
                done[step["id"]] = DoneStep(
                    step["id"],
                    event.get("result"),
                    str(event.get("effect", "read")),
                    event.get("blast_radius"),
                    _shrunk(event.get("result")),
                )
            else:
                done.pop(step["id"], None)
        elif kind == "step.resumed":
            done[step["id"]] = DoneStep(
                step["id"], event.get("result"), str(event.get("effect", "read")), event.get("blast_radius")
            )
    in_doubt = None
    changes = [e for e in open_steps.values() if e.get("effect") in _CHANGES and e.get("command")]
    if changes:
        last = changes[-1]
        in_doubt = InDoubt(
            last["step"]["id"],
            str(last["effect"]),
            str(last.get("command", "")),
            str(last.get("time", "")),
            last["step"]["id"] in approved,
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
