"""May this step run? Asked for every non-read step, after it is rendered and its blast radius measured.

write: the operator answers y/N. destructive: the operator types the target's name. `--yes` approves
and says so, one execution of one rendered command at a time, and not past the runner's caps on
repeated changes (`repeat`): those are asked on the terminal, or refused. No terminal and no `--yes`:
refused before anything is sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import click

from engine.errors import StoppedError
from engine.printable import printable
from engine.records import BlastRadius
from engine.run.operator import Operator
from engine.spec.model import Effect


@dataclass(frozen=True)
class ApprovalRequest:
    step_id: str
    step_name: str
    effect: Effect
    where: str
    command: str
    command_sha256: str
    target_name: str
    confirm: str | None = None
    blast_radius: BlastRadius = field(default_factory=lambda: BlastRadius())
    repeat: str = ""  # why --yes does not cover this one (a change repeated past the cap); empty: it does


@dataclass(frozen=True)
class Decision:
    approved: bool
    by: str
    method: str  # flag | yes | typed-target | all-remaining | none
    reason: str = ""
    note: str = ""  # all-remaining: which answer covers this approval


ALL_REMAINING_ANSWER = "all remaining"


class Gate:
    """`rollout`: a target of a rolling run, where the operator may answer "all remaining" (recorded as
    method all-remaining); `covered_by` ("OPERATOR@RUN"): such an answer given on an earlier target."""

    def __init__(self, operator: Operator, *, rollout: bool = False, covered_by: str | None = None):
        self.operator = operator
        self.rollout = rollout
        self.covered_by = covered_by

    def review(self, request: ApprovalRequest) -> Decision:
        op = self.operator
        if self.covered_by and not request.repeat:
            by, _, run = self.covered_by.partition("@")
            return Decision(True, by, "all-remaining", note=f"covered by '{ALL_REMAINING_ANSWER}' in run {run}")
        if op.assume_yes and not request.repeat:
            return Decision(True, "flag", "flag")
        if not op.interactive:
            if request.repeat:
                return Decision(False, op.name, "none", f"{request.repeat}; no terminal to ask on")
            return Decision(False, op.name, "none", "no terminal and no --yes")
        try:
            op.tell(render_request(request), display_safe=True)
            if self.rollout:
                return self._rollout_answer(request)
            if request.effect is Effect.DESTRUCTIVE:
                ok = op.type_exact(
                    f"  Type the target name '{printable(request.target_name)}' to proceed", request.target_name
                )
                return (
                    Decision(True, op.name, "typed-target")
                    if ok
                    else Decision(False, op.name, "typed-target", "wrong target name typed")
                )
            ok = op.confirm("  Proceed?")
        except StoppedError as exc:
            return Decision(False, op.name, "none", str(exc))
        return Decision(True, op.name, "yes") if ok else Decision(False, op.name, "yes", "declined")

    def _rollout_answer(self, request: ApprovalRequest) -> Decision:
        """As usual, or "all remaining": this change here and on every target the rollout has left."""
        op = self.operator
        destructive = request.effect is Effect.DESTRUCTIVE
        expected = request.target_name if destructive else "y"
        question = (
            f"  Type the target name '{printable(request.target_name)}' to proceed"
            if destructive
            else "  Proceed? [y/N]"
        ) + f" (or '{ALL_REMAINING_ANSWER}' for this and every remaining target)"
        answer = op._prompt(question, default="").strip()
        if answer == ALL_REMAINING_ANSWER:
            return Decision(True, op.name, "all-remaining")
        ok = answer == expected or (not destructive and answer.lower() == "yes")
        method = "typed-target" if destructive else "yes"
        if ok:
            return Decision(True, op.name, method)
        return Decision(False, op.name, method, "wrong target name typed" if destructive else "declined")


def render_request(request: ApprovalRequest) -> str:
    """The panel an operator reads before approving: what, where, how bad, measured now.

    Every field can hold text from outside (procedure file, params, server data): each goes through
    `printable` before it is styled, so only our own colours reach the terminal.
    """
    colour = "red" if request.effect is Effect.DESTRUCTIVE else "yellow"
    lines = [
        "",
        click.style(f"  {request.effect.marker} {printable(request.step_name)}", fg=colour, bold=True),
        f"  target : {printable(request.target_name)} ({printable(request.where)})",
        f"  command: {printable(request.command)}",
    ]
    if request.confirm:
        lines.append(f"  why    : {printable(request.confirm, multiline=True)}")
    if request.repeat:
        lines.append(click.style(f"  again  : {printable(request.repeat)}", fg=colour, bold=True))
    lines.extend(f"  {printable(line)}" for line in render_blast_radius(request.blast_radius))
    return "\n".join(lines)


def _human(size: int) -> str:
    from engine.spec.template import human_bytes

    return human_bytes(size)


def render_blast_radius(blast: BlastRadius) -> list[str]:
    if not blast:
        return []
    out = ["blast radius (measured now):"]
    if "config" in blast:
        for name, change in blast["config"].items():
            out.append(f"  CONFIG {name}: {change.get('current')!r} -> {change.get('new')!r}")
    keys = blast.get("keys")
    if isinstance(keys, list):
        for key in keys:
            if key.get("exists"):
                ttl = "no TTL" if key.get("ttl") == -1 else f"TTL {key.get('ttl')}s"
                out.append(
                    f"  {key['key']}: {key.get('type')}, {key.get('length')} items, {key.get('memory')} bytes, {ttl}"
                )
            elif key.get("error"):
                out.append(f"  {key['key']}: could not be measured ({key['error']})")
            else:
                out.append(f"  {key['key']}: does not exist")
        if blast.get("key_count", 0) > len(keys):
            out.append(f"  ... {blast.get('key_count', 0) - len(keys)} more keys")
    elif "keys" in blast:
        out.append(
            f"  keys affected: {blast['keys']}"
            + (f" ({blast['used_memory_human']} in use)" if blast.get("used_memory_human") else "")
        )
    if "sample" in blast:
        size = f", {_human(blast['bytes'])}" if isinstance(blast.get("bytes"), int) else ""
        out.append(f"  matching keys: {blast.get('count'):,}{size} (sample: {', '.join(blast['sample'][:10])})")
    if blast.get("over_cap"):
        out.append(f"  OVER max_keys ({blast.get('max_keys')}): this step will be refused, nothing changed")
    rest = {
        k: v
        for k, v in blast.items()
        if k
        not in {
            "config",
            "keys",
            "key_count",
            "sample",
            "count",
            "used_memory",
            "used_memory_human",
            "keyspace",
            "bytes",
            "over_cap",
        }
    }
    if rest:
        out.append("  " + json.dumps(rest, default=str)[:500])
    return out
