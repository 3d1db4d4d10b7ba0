"""The conversation at the gate for one change of a run: `approval.requested`, then given or refused.

The gate (engine.run.gate) decides; this records the question and the answer in the transcript, counts
them, and adds what only the run knows: the confirm text rendered now, why `--yes` does not cover a
change repeated too often, the resumed run's change that may or may not have been sent, and the
approval a `restore:` inherits from the change it puts back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import Interrupted
from engine.records import BlastRadius
from engine.run.gate import ApprovalRequest, Decision, Gate
from engine.spec import template
from engine.spec.model import Effect
from engine.steps import get
from engine.transcript.writer import TranscriptWriter, sha256_text

if TYPE_CHECKING:
    from engine.run.runner import RunState, Visit
    from engine.transcript.redact import Redactor

# `--yes` approves one execution of one rendered command, not a loop: past these caps every further
# change is asked on the terminal, or refused (exit 3) when there is none.
MAX_CHANGE_VISITS = 3  # visits of one changing step (in one procedure frame) that reach the gate
MAX_CHANGES_BY_FLAG = 50  # changes approved in one run


@dataclass(frozen=True)
class Change:
    """A change at the gate: as planned, redacted, and measured just now."""

    effect: Effect
    where: str
    command: str
    blast: BlastRadius | None

    @property
    def sha256(self) -> str:
        return sha256_text(self.command)


class Approvals:
    """Every approval of one run: asks the gate, records both sides, keeps the counts in `state`."""

    def __init__(
        self,
        *,
        transcript: TranscriptWriter,
        gate: Gate,
        redactor: Redactor,
        operator_name: str,
        target_name: str,
        state: RunState,
        resume: Any = None,
    ):
        self.transcript = transcript
        self.gate = gate
        self.redactor = redactor
        self.operator_name = operator_name
        self.target_name = target_name
        self.state = state
        self.resume = resume  # engine.run.resume.ResumePlan: its in-doubt change is asked about once, again
        self._doubt_asked = False

    def ask(self, visit: Visit, change: Change) -> str | None:
        """None when the change may go ahead; else why it was refused."""
        step = visit.step
        if get(step.kind).reverts and step.action in visit.frame.approved:
            self._inherited(visit, change)
            return None
        confirm = self._confirm(visit)
        repeat = self._repeat(visit)
        doubt = self._in_doubt(visit)
        if doubt is not None:  # never re-sent on a flag: the operator sees what is there now and decides
            repeat = _doubt_text(doubt)
        extra: dict[str, Any] = {**({"repeat": repeat} if repeat else {}), **({"in_doubt": doubt} if doubt else {})}
        self.transcript.emit(
            "approval.requested",
            step=visit.ref,
            effect=str(change.effect),
            command=change.command,
            command_sha256=change.sha256,
            where=change.where,
            blast_radius=change.blast or {},
            confirm=confirm,
            **extra,
        )
        decision = self._review(visit, change, confirm, repeat)
        if not decision.approved:
            self._refused(visit, change, decision.by, decision.reason, decision.method)
            return decision.reason
        self.state.approvals += 1
        self.transcript.emit(
            "approval.given",
            step=visit.ref,
            by=decision.by,
            method=decision.method,
            command_sha256=change.sha256,
            note=decision.note or None,
        )
        visit.frame.approved.setdefault(
            step.id, {"by": decision.by, "method": decision.method, "command_sha256": change.sha256}
        )
        return None

    def _review(self, visit: Visit, change: Change, confirm: str | None, repeat: str) -> Decision:
        """The gate's decision; a signal (hang-up, Ctrl-C) while asking is recorded as a refusal, then raised."""
        request = ApprovalRequest(
            step_id=visit.step.id,
            step_name=visit.step.name,
            effect=change.effect,
            where=change.where,
            command=change.command,
            command_sha256=change.sha256,
            target_name=self.target_name,
            confirm=confirm,
            blast_radius=change.blast or {},
            repeat=repeat,
        )
        try:
            return self.gate.review(request)
        except Interrupted as exc:
            self._refused(visit, change, self.operator_name, f"interrupted by {exc}", "none")
            raise

    def _refused(self, visit: Visit, change: Change, by: str, reason: str, method: str) -> None:
        self.state.refusals += 1
        self.transcript.emit(
            "approval.refused", step=visit.ref, by=by, reason=reason, method=method, command_sha256=change.sha256
        )

    def _inherited(self, visit: Visit, change: Change) -> None:
        """Putting back what an approved change changed: that approval covers it, and says so."""
        original = visit.frame.approved[visit.step.action]
        self.transcript.emit(
            "approval.requested",
            step=visit.ref,
            effect=str(change.effect),
            command=change.command,
            command_sha256=change.sha256,
            where=change.where,
            blast_radius=change.blast or {},
            confirm=f"put back what '{visit.step.action}' changed",
        )
        self.state.approvals += 1
        self.transcript.emit(
            "approval.given",
            step=visit.ref,
            by=original["by"],
            method="pre-approved",
            command_sha256=change.sha256,
            pre_approved_by={"step": visit.step.action, **original},
        )

    def _confirm(self, visit: Visit) -> str | None:
        if not visit.step.confirm:
            return None
        try:
            return self.redactor.text(str(template.render(visit.step.confirm, visit.values)))
        except template.TemplateError as exc:
            return f"(confirm text failed: {exc})"

    def _repeat(self, visit: Visit) -> str:
        """Why `--yes` does not cover this change: its step changed too often in this run, or the run did."""
        frame, step = visit.frame, visit.step
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

    def _in_doubt(self, visit: Visit) -> dict[str, Any] | None:
        """The resumed run's change that started and never finished, the first time it comes up again."""
        doubt = self.resume.in_doubt if self.resume is not None else None
        if doubt is None or visit.key != doubt.key or self._doubt_asked:
            return None
        self._doubt_asked = True
        return {
            "run": self.resume.run_id,
            "started_at": doubt.started_at,
            "command": doubt.command,
            "was_approved": doubt.approved,
        }


def _doubt_text(doubt: dict[str, Any]) -> str:
    sent = (
        "it had been approved and may or may not have reached the target"
        if doubt["was_approved"]
        else "it had not been approved yet, so it was most likely not sent"
    )
    return (
        f"IN DOUBT: run {doubt['run']} started this change at {doubt['started_at']} and stopped before it "
        f"finished; {sent}. The blast radius below is measured now"
    )


def _nth(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
