"""Each door refuses a change in a dry-run by itself, and redis-py's errors are mapped in one table.

No server is needed: every refusal here happens before anything leaves the process (the address
used is a closed port; reaching it would be the bug).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import redis

from engine.adapters.http import HttpAdapter
from engine.adapters.local import LocalFiles, find_program
from engine.adapters.redis import RedisAdapter
from engine.adapters.redis_errors import Site, translate
from engine.errors import ActionFailed, MutationRefused, TargetError
from engine.spec.model import Effect
from engine.targets import RedisEndpoint

CLOSED = "127.0.0.1"  # with port 9: nothing below may try to reach it (a refusal comes first)


def test_local_files_refuse_every_write_in_a_dry_run(tmp_path: Path) -> None:
    target = tmp_path / "password.txt"
    dry = LocalFiles(allow_mutation=False)
    with pytest.raises(MutationRefused, match="dry-run: refused to write"):
        dry.write_file(target, b"secret", mode=0o600)
    with pytest.raises(MutationRefused, match="dry-run: refused to write"):
        dry.write_new(tmp_path, "dump.rdb", lambda fh: fh.write(b"REDIS"))
    assert list(tmp_path.iterdir()) == []
    assert dry.stat(str(target))["exists"] is False  # reads stay allowed
    LocalFiles(allow_mutation=True).write_file(target, b"secret", mode=0o600)
    assert target.read_bytes() == b"secret" and oct(target.stat().st_mode & 0o777) == "0o600"
    assert dry.read_text(target) == "secret" and dry.glob(str(tmp_path / "*.txt")) == [str(target)]


def test_find_program_finds_what_is_installed_and_says_none_otherwise() -> None:
    assert find_program("sh") is not None
    assert find_program("no-such-program-anywhere") is None


@pytest.mark.parametrize(("method", "effect"), [("POST", Effect.READ), ("DELETE", Effect.READ), ("GET", Effect.WRITE)])
def test_http_refuses_a_non_read_in_a_dry_run_whatever_the_caller_claims(method: str, effect: Effect) -> None:
    with pytest.raises(MutationRefused, match=f"dry-run: refused to send {method}"):
        HttpAdapter(allow_mutation=False).request(method, f"http://{CLOSED}:9/x", timeout=0.1, effect=effect)


def test_the_replication_socket_is_never_opened_in_a_dry_run() -> None:
    adapter = RedisAdapter(RedisEndpoint(CLOSED, 9), allow_mutation=False)
    with pytest.raises(MutationRefused, match=r"dry-run: refused to send PSYNC to redis://127\.0\.0\.1:9/0"):
        adapter.full_sync(io.BytesIO(), timeout=0.1)


SITE = Site("redis://h:1/0", 2.0)


@pytest.mark.parametrize(
    ("exc", "site", "kind", "message"),
    [
        (redis.ConnectionError("Error 111 connecting"), SITE, TargetError, "redis://h:1/0: connection lost: Error 111"),
        (
            redis.ConnectionError("Error 111 connecting"),
            Site("redis://h:1/0", 2.0, connecting=True),
            TargetError,
            "redis://h:1/0: cannot connect: Error 111",
        ),
        (redis.TimeoutError("Timeout reading"), SITE, TargetError, "redis://h:1/0: timed out after 2s: Timeout"),
        (redis.AuthenticationError("WRONGPASS invalid"), SITE, TargetError, "authentication failed: WRONGPASS"),
        (redis.BusyLoadingError("Redis is loading"), SITE, TargetError, "redis://h:1/0: LOADING Redis is loading"),
        (redis.ResponseError("NOPERM no permissions"), SITE, ActionFailed, "NOPERM no permissions"),
        (
            redis.ResponseError("ERR unknown command"),
            Site("redis://h:1/0", 2.0, doing="MONITOR"),
            ActionFailed,
            "MONITOR: ERR unknown command",
        ),
        (
            redis.ConnectionError("Connection closed by server."),
            Site("redis://h:1/0", 2.0, doing="MONITOR"),
            TargetError,
            "redis://h:1/0: MONITOR: connection lost: Connection closed",
        ),
    ],
)
def test_one_table_maps_redis_py_errors(exc: redis.RedisError, site: Site, kind: type, message: str) -> None:
    found = translate(exc, site)
    assert type(found) is kind
    assert str(found).startswith(message) if message.startswith("redis") else message in str(found)


def test_a_refused_connection_carries_the_runbooks_advice() -> None:
    found = translate(redis.ConnectionError("Error 111 connecting to h:1. Connection refused."), SITE)
    assert found.advice  # the Common Errors entry for a refused connection
