"""The runbook's Common Errors table: Redis error texts to cause and solution, and `runbook explain`."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from redis._parsers.base import BaseParser

from engine.cli.main import main
from engine.common_errors import KNOWN_ERRORS, explain
from engine.errors import TargetError
from engine.steps import get
from engine.targets import RedisEndpoint
from engine.transcript.redact import Redactor

KNOWN = {k.code: k for k in KNOWN_ERRORS}

# Replies exactly as a Redis 7 server sends them (after the leading '-'), and the client-side texts.
REDIS_7 = [
    ("NOAUTH", "NOAUTH Authentication required."),
    ("WRONGPASS", "WRONGPASS invalid username-password pair or user is disabled."),
    ("OOM", "OOM command not allowed when used memory > 'maxmemory'."),
    ("READONLY", "READONLY You can't write against a read only replica."),
    ("MOVED", "MOVED 3999 127.0.0.1:6381"),
    ("LOADING", "LOADING Redis is loading the dataset in memory"),
    ("BUSY", "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."),
    ("BUSY", "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."),
    ("MASTERDOWN", "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
    ("CROSSSLOT", "CROSSSLOT Keys in request don't hash to the same slot"),
]
CONNECTION_REFUSED = [
    "Error 111 connecting to 127.0.0.1:6379. Connection refused.",
    "Could not connect to Redis at 127.0.0.1:6379: Connection refused",
    "Error 111 connecting to localhost:6379. Connection refused.",
]
UNRELATED = [
    "",
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "BUSYKEY Target key name already exists.",
    "BUSYGROUP Consumer Group name already exists",
    "ERR unknown command 'FOO', with args beginning with: ",
    "NOSCRIPT No matching script. Please use EVAL.",
    "NOPERM User default has no permissions to run the 'flushall' command",
    "ERR value is not an integer or out of range",
    "everything is fine",
]


def test_table_codes_are_unique() -> None:
    assert len(KNOWN) == len(KNOWN_ERRORS)


@pytest.mark.parametrize(("code", "text"), REDIS_7, ids=[f"{c}-{i}" for i, (c, _) in enumerate(REDIS_7)])
def test_redis_7_error_maps_to_its_code(code: str, text: str) -> None:
    found = explain(text)
    assert found is not None
    assert found.code == code


@pytest.mark.parametrize("text", CONNECTION_REFUSED)
def test_connection_refused_maps_to_connrefused(text: str) -> None:
    found = explain(text)
    assert found is not None
    assert found.code == "CONNREFUSED"
    assert found.cause == "Redis service down"


@pytest.mark.parametrize("text", UNRELATED)
def test_unrelated_text_maps_to_none(text: str) -> None:
    assert explain(text) is None


def test_cli_explain_prints_cause_and_solution() -> None:
    result = CliRunner().invoke(main, ["explain", "OOM command not allowed when used memory > 'maxmemory'."])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "OOM"
    assert "cause: Memory limit exceeded" in lines
    assert f"solution: {KNOWN['OOM'].solution}" in lines
    assert "Increase memory or clear cache" in result.output


def test_cli_explain_unknown_text_exits_1() -> None:
    result = CliRunner().invoke(main, ["explain", "WRONGTYPE Operation against a key holding the wrong kind of value"])
    assert result.exit_code == 1
    assert "not in the runbook's Common Errors table" in result.output


# -- the same errors as redis-py raises them, on their way to the operator ---------------------------------
# redis-py strips the error code from the message of the exception it raises (OOM, READONLY, MOVED, LOADING,
# MASTERDOWN, CROSSSLOT ...), so what a step meets is not the text above. The runbook's advice should still
# reach the operator. A fake client raises exactly what redis-py's parser builds from the server's reply.
class _FakeClient:
    def __init__(self, error: Exception):
        self.error = error

    def execute_command(self, *args: Any) -> Any:
        raise self.error


def _advice_for_step_failing_with(reply: str) -> str | None:
    from engine.adapters.redis import RedisAdapter

    adapter = RedisAdapter(RedisEndpoint(host="192.0.2.1", port=1), allow_mutation=True)
    adapter._client = _FakeClient(BaseParser.parse_error(reply))  # never connects
    ctx = SimpleNamespace(connections=SimpleNamespace(redis=lambda: adapter), redactor=Redactor())
    action = get("redis").plan({"command": ["SET", "k", "v"]}, ctx)
    with pytest.raises(TargetError) as info:
        action.execute()
    return info.value.advice


_STEP_CASES = [
    pytest.param(
        code,
        text,
        id=f"{code}-{i}",
    )
    for i, (code, text) in enumerate(REDIS_7)
]


@pytest.mark.parametrize(("code", "reply"), _STEP_CASES)
def test_step_error_from_redis_py_carries_the_runbook_advice(code: str, reply: str) -> None:
    advice = _advice_for_step_failing_with(reply)
    assert advice is not None
    assert KNOWN[code].cause in advice


def test_connect_to_a_loading_server_advises_waiting_not_restarting(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.adapters.redis import RedisAdapter

    def first_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise BaseParser.parse_error("LOADING Redis is loading the dataset in memory")

    # nothing is sent: the loading server is simulated at connect's first command (COMMAND; no PING before it)
    monkeypatch.setattr(redis.Redis, "execute_command", first_command)
    adapter = RedisAdapter(RedisEndpoint(host="192.0.2.1", port=1), allow_mutation=True)
    with pytest.raises(TargetError) as info:
        adapter.connect()
    assert info.value.advice is not None
    assert KNOWN["LOADING"].cause in info.value.advice
