"""`tcp:` steps: can the engine open a TCP connection to Redis (the runbook's `telnet redis-host 6379`)?

Connects and closes; with `ping: true` it also sends an inline PING, unauthenticated, and keeps the
first reply line, as an operator typing into telnet would. That separates "nothing listens / a firewall
drops it" (no connection), "hung" (connected, no reply) and "alive but refusing us" (`-NOAUTH`,
`-DENIED` protected mode, `-ERR max number of clients`, `-LOADING`), which a client library's PING
folds into one error. PING changes nothing, so the step is a read. It never fails: the result says what
happened and `expect` grades it. The socket is the TCP adapter's (engine/adapters/tcp.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.adapters.tcp import probe
from engine.errors import UsageError
from engine.spec.model import Effect
from engine.spec.params import parse_duration
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.run.context import StepContext

DEFAULT_TIMEOUT = 3.0

SCHEMA = {
    "type": "object",
    "description": "A TCP connect probe from the engine; result: {connected, error, elapsed_ms, host, port, reply}.",
    "additionalProperties": False,
    "properties": {
        "host": {"type": "string", "description": "Host to connect to (default: the target's Redis host)."},
        "port": {"type": ["integer", "string"], "description": "Port (default: the target's Redis port)."},
        "timeout": {
            "type": ["string", "number"],
            "format": "duration",
            "description": "Connect (and reply) timeout (default 3s).",
        },
        "ping": {
            "type": "boolean",
            "default": False,
            "description": "Also send an unauthenticated inline PING; `reply` is its first line (+PONG, -NOAUTH ...).",
        },
    },
}


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    endpoint = ctx.connections.target.redis
    host = body.get("host") or (endpoint.host if endpoint else None)
    port = body.get("port") or (endpoint.port if endpoint else None)
    if not host or not port:
        raise UsageError(f"tcp: no host/port given and target '{ctx.connections.target.name}' has no redis endpoint")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise UsageError(f"tcp: port must be a number, got '{port}'") from None
    timeout = parse_duration(body["timeout"]) if body.get("timeout") is not None else DEFAULT_TIMEOUT
    ping = bool(body.get("ping", False))
    command = f"tcp connect {host}:{port}" + (" + PING" if ping else "")
    return Action(Effect.READ, f"tcp {host}:{port}", command, lambda: probe(host, port, timeout, ping))


class TcpKind(StepKind):
    name = "tcp"
    schema = SCHEMA
    description = "A TCP connect probe from the engine (default: the target's Redis endpoint)."
    number_fields = {"timeout": "duration"}

    plan = staticmethod(plan)

    def summary(self, body: Any) -> str:
        return f"tcp connect {body.get('host', '<redis host>')}:{body.get('port', '<redis port>')}"


register(TcpKind())
