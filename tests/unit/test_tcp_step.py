"""The tcp probe against real local sockets: refused, answering, hung; defaults from the target."""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace

import pytest

from engine.errors import UsageError
from engine.spec.model import Effect
from engine.steps.tcp_step import plan, probe
from engine.targets import RedisEndpoint, Target


def _server(reply: bytes | None) -> tuple[socket.socket, int]:
    """A listener that answers each connection's first line with `reply` (None: never answers)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(64)
                if reply is not None:
                    conn.sendall(reply)
                else:
                    conn.recv(64)  # hold the connection open, say nothing

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1]


def test_refused_port_is_named_as_such():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    result = probe("127.0.0.1", port, 1.0, ping=True)
    assert result["connected"] is False and result["reply"] is None
    assert result["error"].startswith("connection refused")


def test_inline_ping_keeps_the_first_reply_line():
    listener, port = _server(b"-NOAUTH Authentication required.\r\n")
    try:
        result = probe("127.0.0.1", port, 1.0, ping=True)
    finally:
        listener.close()
    assert result == {
        "connected": True,
        "error": None,
        "elapsed_ms": result["elapsed_ms"],
        "host": "127.0.0.1",
        "port": port,
        "reply": "-NOAUTH Authentication required.",
    }


def test_a_hung_server_connects_but_does_not_reply():
    listener, port = _server(None)
    try:
        result = probe("127.0.0.1", port, 0.3, ping=True)
        plain = probe("127.0.0.1", port, 0.3)
    finally:
        listener.close()
    assert result["connected"] is True and result["reply"] is None and "no reply to PING" in result["error"]
    assert plain["connected"] is True and plain["error"] is None  # without ping, a connect is all it checks


def _ctx(target: Target) -> SimpleNamespace:
    return SimpleNamespace(connections=SimpleNamespace(target=target))


def test_plan_defaults_to_the_targets_redis_endpoint_and_is_a_read():
    target = Target(name="t", redis=RedisEndpoint(host="10.0.0.5", port=6380))
    action = plan({"ping": True}, _ctx(target))  # type: ignore[arg-type]
    assert action.effect is Effect.READ and action.where == "tcp 10.0.0.5:6380"
    assert action.command == "tcp connect 10.0.0.5:6380 + PING"
    assert plan({"host": "h", "port": "7000"}, _ctx(target)).command == "tcp connect h:7000"  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="no redis endpoint"):
        plan({}, _ctx(Target(name="bare")))  # type: ignore[arg-type]
