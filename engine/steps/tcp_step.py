"""`tcp:` steps: can the engine open a TCP connection to Redis (the runbook's `telnet redis-host 6379`)?

Connects and closes; with `ping: true` it also sends an inline PING, unauthenticated, and keeps the
first reply line, as an operator typing into telnet would. That separates "nothing listens / a firewall
drops it" (no connection), "hung" (connected, no reply) and "alive but refusing us" (`-NOAUTH`,
`-DENIED` protected mode, `-ERR max number of clients`, `-LOADING`), which a client library's PING
folds into one error. PING changes nothing, so the step is a read. It never fails: the result says what
happened and `expect` grades it.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.spec.model import Effect
from engine.spec.params import parse_duration
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.context import StepContext

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


def probe(host: str, port: int, timeout: float, ping: bool = False) -> dict[str, Any]:
    """One connect attempt; the error is named the way an operator reads it (refused, timed out, ...)."""
    started = time.monotonic()
    error = reply = None
    connected_ms = None
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            connected_ms = round((time.monotonic() - started) * 1000, 1)
            if ping:
                reply, error = _ping(sock, timeout)
    except TimeoutError:
        error = f"timed out after {timeout:g}s (a firewall dropping packets, or the host is down)"
    except ConnectionRefusedError:
        error = "connection refused (nothing listens on that port, or a firewall rejects it)"
    except socket.gaierror as exc:
        error = f"cannot resolve {host}: {exc.strerror or exc}"
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            error = f"no route to {host}: {exc.strerror}"
        else:
            error = exc.strerror or str(exc)
    return {
        "connected": connected_ms is not None,
        "error": error,
        "elapsed_ms": connected_ms if connected_ms is not None else round((time.monotonic() - started) * 1000, 1),
        "host": host,
        "port": port,
        "reply": reply,
    }


def _ping(sock: socket.socket, timeout: float) -> tuple[str | None, str | None]:
    """Send `PING\\r\\n`, read one line: (reply, None) or (None, why there is none)."""
    try:
        sock.sendall(b"PING\r\n")
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data and len(data) < 4096:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(4096)
            if not chunk:
                return None, "connected, but the server closed the connection without a reply"
            data += chunk
    except TimeoutError:
        return None, f"connected, but no reply to PING within {timeout:g}s (Redis hung or busy?)"
    except OSError as exc:
        return None, f"connected, but the PING failed: {exc.strerror or exc}"
    return data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace"), None


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

    def plan(self, body: Any, ctx: StepContext) -> Action:
        return plan(body, ctx)

    def summary(self, body: Any) -> str:
        return f"tcp connect {body.get('host', '<redis host>')}:{body.get('port', '<redis port>')}"


register(TcpKind())
