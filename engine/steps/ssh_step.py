"""`ssh:` steps: a shell command on the target's host.

Destructive unless the step declares its effect. `effect: read` is a claim the engine checks: the
rendered command must be proven read-only (engine/adapters/shell_effects.py), else the step runs as
a `write`, through the gate (and is predicted, not run, in a dry-run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.spec.model import Effect
from engine.spec.params import parse_duration
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.run.context import StepContext

SCHEMA = {
    "type": "object",
    "description": "A shell command on the target's SSH host. Every {{ }} value is shell-quoted by the engine.",
    "additionalProperties": False,
    "required": ["run"],
    "properties": {
        "run": {
            "type": "string",
            "description": "The command line; {{ service.stop }} inserts the inventory's "
            "trusted service command unquoted.",
        },
        "timeout": {
            "type": ["string", "number"],
            "format": "duration",
            "description": "Command timeout (default: the host's).",
        },
        "check": {
            "type": "boolean",
            "default": True,
            "description": "A non-zero exit status fails the step (false: it is data for expect).",
        },
    },
}


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    adapter = ctx.connections.ssh()
    command = body["run"]
    effect = ctx.step.effect if ctx.step.effect is not None else Effect.DESTRUCTIVE
    unproven = None
    if effect is Effect.READ:
        verdict = adapter.proves_read(command)
        if not verdict:  # a read label the command does not prove: gated as a change, never run unasked
            effect, unproven = Effect.WRITE, f"effect: read, but {verdict.reason}"
    timeout = parse_duration(body["timeout"]) if body.get("timeout") is not None else None

    def execute() -> dict[str, Any]:
        return adapter.run(command, effect=effect, timeout=timeout).as_data()

    def output(result: dict[str, Any]) -> str | None:
        text = result["stdout"] + (f"\n[stderr]\n{result['stderr']}" if result["stderr"].strip() else "")
        return text or None

    def failed(result: dict[str, Any]) -> str | None:
        if body.get("check", True) and result["exit_status"] != 0:
            err = result["stderr"].strip().splitlines()[-1:] or result["stdout"].strip().splitlines()[-1:]
            return f"exit status {result['exit_status']}" + (f": {err[0]}" if err else "")
        return None

    def changes(blast: Any, result: Any) -> list[dict[str, Any]]:
        return [{"kind": "command", "command": command, "host": adapter.endpoint.address}]

    return Action(
        effect,
        adapter.where,
        command,
        execute,
        output=output,
        failed=failed,
        changes=changes,
        measure=lambda: {"host": adapter.endpoint.address, **({"not_read_only": unproven} if unproven else {})},
    )


class SshKind(StepKind):
    name = "ssh"
    schema = SCHEMA
    description = "A command on the target's host over SSH (paramiko), host key checked."
    shell_fields = frozenset({"run"})
    effect_declared = True
    number_fields = {"timeout": "duration"}

    def plan(self, body: Any, ctx: StepContext) -> Action:
        return plan(body, ctx)

    def static_effect(self, body: Any) -> Effect | None:
        return None  # the step's `effect:` says it (effect_declared)

    def summary(self, body: Any) -> str:
        return body["run"]


register(SshKind())
