"""`ssh:` steps: a shell command on the target's host, or on the host a Redis node of the deployment runs on.

Destructive unless the step declares its effect. `effect: read` is a claim the engine checks: the
rendered command must be proven read-only (engine/adapters/shell_effects.py), else the step runs as
a `write`, through the gate (and is predicted, not run, in a dry-run).

`on: node` (with `node: HOST:PORT`) or `on: primary` picks the host from the inventory's `ssh.nodes`
(else the node's own host), with the vocabulary of redis steps; `service: restart` runs that host's own
inventory service command, so a node whose host has other service commands is never driven by the
target's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import TargetError, UsageError
from engine.spec.model import Effect
from engine.spec.params import parse_duration
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.errors import SourceError
    from engine.run.context import StepContext
    from engine.spec.kinds import CheckContext
    from engine.spec.yamlsource import Located
    from engine.topology.model import Node

SERVICE = ("start", "stop", "restart", "status", "logs")
ON = ("primary", "node")

SCHEMA = {
    "type": "object",
    "description": "A shell command on the target's SSH host, or (on:) on the host a Redis node runs on. "
    "Exactly one of run, service. Every {{ }} value is shell-quoted by the engine.",
    "additionalProperties": False,
    "operations": ["run", "service"],
    "oneOf": [{"required": ["run"]}, {"required": ["service"]}],
    "properties": {
        "run": {
            "type": "string",
            "description": "The command line; {{ service.stop }} inserts the inventory's "
            "trusted service command unquoted.",
        },
        "service": {
            "enum": list(SERVICE),
            "description": "Run the host's own inventory service command (ssh.service, or the node's in "
            "ssh.nodes): the way to drive a node's service with on:.",
        },
        "on": {
            "enum": list(ON),
            "description": "Where it runs: primary (the host of the deployment's primary found at run start) "
            "or node (the host of the Redis node named by `node:`): the inventory's ssh.nodes entry for that "
            "node, else the node's own host with the target's ssh settings.",
        },
        "node": {"type": "string", "description": "With on: node: HOST:PORT of one Redis node (a template)."},
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


def _node(body: dict[str, Any], ctx: StepContext) -> Node | None:
    """The Redis node whose host the step runs on (None: the target's own ssh host)."""
    on = body.get("on")
    if on is None:
        if body.get("node") is not None:
            raise UsageError("ssh: `node:` needs `on: node`")
        return None
    from engine.topology.model import Node

    deployment = ctx.connections.deployment()
    if on == "primary":
        nodes = deployment.nodes_for("primary")
        if len(nodes) != 1:
            raise TargetError(f"ssh on: primary: the deployment has {len(nodes)} primaries; name one with on: node")
        return nodes[0]
    name = str(body.get("node") or "")
    try:
        return deployment.nodes_for("node", name)[0]
    except TargetError:
        ssh = ctx.connections.target.ssh
        if ssh is not None and name in ssh.nodes:  # the inventory vouches for it (a node down at run start)
            host, _, port = name.rpartition(":")
            return Node(host, int(port), "not discovered")
        raise


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    node = _node(body, ctx)
    try:
        adapter = ctx.connections.ssh(node.address if node is not None else None)
    except TargetError as exc:  # say which node's host could not be reached, keeping the kind of error
        if node is None:
            raise
        raise type(exc)(f"node {node.address}: {exc}") from None
    if body.get("service"):
        command = getattr(adapter.endpoint.service, body["service"]) or ""
        if not command:
            on = f" of node {node.address}" if node is not None else ""
            raise UsageError(f"ssh: the inventory gives no service.{body['service']} for the host{on}")
    else:
        command = body["run"]
    effect = ctx.step.effect if ctx.step.effect is not None else Effect.DESTRUCTIVE
    unproven = None
    if effect is Effect.READ:
        verdict = adapter.proves_read(command)
        if not verdict:  # a read label the command does not prove: gated as a change, never run unasked
            effect, unproven = Effect.WRITE, f"effect: read, but {verdict.reason}"
    timeout = parse_duration(body["timeout"]) if body.get("timeout") is not None else None
    where = adapter.where + (f" (node {node.address}, {node.role})" if node is not None else "")
    named = f"{node.address}: " if node is not None else ""

    def execute() -> dict[str, Any]:
        return adapter.run(command, effect=effect, timeout=timeout).as_data()

    def output(result: dict[str, Any]) -> str | None:
        text = result["stdout"] + (f"\n[stderr]\n{result['stderr']}" if result["stderr"].strip() else "")
        return text or None

    def failed(result: dict[str, Any]) -> str | None:
        if body.get("check", True) and result["exit_status"] != 0:
            err = result["stderr"].strip().splitlines()[-1:] or result["stdout"].strip().splitlines()[-1:]
            return f"{named}exit status {result['exit_status']}" + (f": {err[0]}" if err else "")
        return None

    def changes(blast: Any, result: Any) -> list[dict[str, Any]]:
        change = {"kind": "command", "command": command, "host": adapter.endpoint.address}
        return [{**change, "node": node.address} if node is not None else change]

    def measure() -> dict[str, Any]:
        out: dict[str, Any] = {"host": adapter.endpoint.address}
        if node is not None:
            out.update(node=node.address, role=node.role, redis=_node_state(ctx, node.address))
        return {**out, **({"not_read_only": unproven} if unproven else {})}

    return Action(effect, where, command, execute, output=output, failed=failed, changes=changes, measure=measure)


def _node_state(ctx: StepContext, address: str) -> dict[str, Any]:
    """What a change on the node's host puts at stake, read from the node: its role, clients, keys."""
    try:
        redis = ctx.connections.deployment().node_adapter(address)
        info = {**redis.info("replication"), **redis.info("clients"), **redis.info("server")}
        keys = redis.info("keyspace")
    except Exception as exc:  # a node that is down is what some procedures are there to fix
        from engine.common_errors import error_text

        return {"reachable": False, "error": error_text(exc)}
    return {
        "reachable": True,
        "role": info.get("role"),
        "process_id": info.get("process_id"),
        "connected_clients": info.get("connected_clients"),
        "connected_replicas": info.get("connected_slaves"),
        "keys": sum(v.get("keys", 0) for v in keys.values() if isinstance(v, dict)),
    }


def validate(body: Any, located: Located, path: tuple[Any, ...]) -> list[SourceError]:
    """With on:, `{{ service.* }}` and `{{ paths.* }}` would be the target's host's, not the node's."""
    if not isinstance(body, dict):
        return []
    errors = []
    if body.get("on") == "node" and not body.get("node"):
        errors.append(located.error((*path, "ssh", "on"), "on: node needs `node: HOST:PORT` naming the node"))
    if body.get("on") != "node" and body.get("node") is not None:
        errors.append(located.error((*path, "ssh", "node"), "`node:` is only for on: node"))
    run = body.get("run")
    if body.get("on") is not None and isinstance(run, str) and ("service." in run or "paths." in run):
        errors.append(
            located.error(
                (*path, "ssh", "run"),
                "with on:, {{ service.* }} and {{ paths.* }} name the target's own host, not the node's: "
                "use `service: start|stop|restart|status|logs` (the node's host's own command)",
            )
        )
    return errors


class SshKind(StepKind):
    name = "ssh"
    schema = SCHEMA
    description = "A command over SSH (paramiko), host key checked: on the target's host, or on a Redis node's (on:)."
    shell_fields = frozenset({"run"})
    effect_declared = True
    number_fields = {"timeout": "duration"}

    def plan(self, body: Any, ctx: StepContext) -> Action:
        return plan(body, ctx)

    def static_effect(self, body: Any) -> Effect | None:
        return None  # the step's `effect:` says it (effect_declared)

    def validate(self, body: Any, located: Located, path: tuple[Any, ...], context: CheckContext) -> list[SourceError]:
        return validate(body, located, path)

    def summary(self, body: Any) -> str:
        text = body.get("run") or f"service {body.get('service')}"
        return text + (
            f" (on {body['on']}{' ' + str(body['node']) if body.get('node') else ''})" if body.get("on") else ""
        )


register(SshKind())
