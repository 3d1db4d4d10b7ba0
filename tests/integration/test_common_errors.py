"""The runbook's Common Errors table, each of its five errors provoked against a real server.

A one-step procedure (SET one key, approved with --yes) meets the error through the real CLI: a
password-protected server without REDISCLI_AUTH (NOAUTH), maxmemory 1mb with noeviction filled until
writes fail (OOM), a stopped server (connection refused), a replica (READONLY), and a node of a
three-node Redis Cluster that does not own the key's slot (MOVED). For the first three: the run stops with
exit 4, nothing is written, and the runbook's cause and solution are printed and recorded in the failing
step's `error.advice`. READONLY and MOVED the engine handles as their solutions say (the write goes to the
primary or to the slot's owner), and records it. `runbook explain` is fed what redis-cli printed for the
same command against the same server, as an operator would paste it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.sandbox.redis_server import RedisCluster, RedisServer, SandboxUnavailable, find_binary
from engine.transcript.verify import verify_transcript
from tests.integration.cli_support import CliResult, events, of_type, runbook, transcript_path

KEY = "runbook-probe"
PROCEDURE = """\
id: test/write-one-key
title: Write one key
section: Common Errors
description: SET one key, to meet the runbook's Common Errors against real servers.
requires: [redis]
steps:
  - id: write
    name: Write one key
    redis:
      command: [SET, "runbook-probe", "v"]
    confirm: Write the probe key runbook-probe.
"""

# The runbook's Common Errors table: error -> (cause, how its solution starts), verbatim.
RUNBOOK = {
    "NOAUTH": ("Missing/wrong password", "Set AUTH"),
    "OOM": ("Memory limit exceeded", "Increase memory or clear cache"),
    "CONNREFUSED": ("Redis service down", "Restart service"),
    "READONLY": ("Connected to replica", "Connect to master instance"),
    "MOVED": ("Redis cluster topology changed", "Update client cluster configuration"),
}


@dataclass
class Provoked:
    """One error met for real: the CLI run, its transcript, and what redis-cli printed for the same SET."""

    code: str
    result: CliResult
    events: list[dict[str, Any]]
    redis_cli: str
    written: Callable[[], bool]  # did the key get written anywhere?
    servers: list[Any] = field(default_factory=list)

    @property
    def write_step(self) -> dict[str, Any]:
        return next(e for e in of_type(self.events, "step.finished") if e["step"]["id"] == "write")


def _require(*names: str) -> None:
    for name in names:
        try:
            find_binary(name)
        except SandboxUnavailable as exc:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(str(exc))
            pytest.skip(str(exc))


def _redis_cli(host: str, port: int, *args: str) -> str:
    proc = subprocess.run(
        [find_binary("redis-cli"), "-h", host, "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"},
    )
    return (proc.stdout + proc.stderr).strip()


def _provoke(code: str, tmp: Path, host: str, port: int, written: Callable[[], bool], **extra: Any) -> Provoked:
    (tmp / "write-one-key.yaml").write_text(PROCEDURE)
    cli_text = _redis_cli(host, port, "SET", KEY, "v")
    result = runbook(
        "run",
        "test/write-one-key",
        "--procedures",
        str(tmp),
        "--redis",
        f"redis://{host}:{port}/0",
        "--yes",
        "--transcripts-dir",
        str(tmp / "transcripts"),
    )
    return Provoked(code, result, events(transcript_path(result)), cli_text, written, **extra)


@pytest.fixture(scope="module")
def noauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provoked]:
    _require("redis-server", "redis-cli")
    server = RedisServer.start(password="common-errors-pw")
    try:
        yield _provoke(
            "NOAUTH",
            tmp_path_factory.mktemp("noauth"),
            server.host,
            server.port,
            lambda: server.client().exists(KEY) == 1,
        )
    finally:
        server.stop()


@pytest.fixture(scope="module")
def oom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provoked]:
    _require("redis-server", "redis-cli")
    server = RedisServer.start(config={"maxmemory": "1mb", "maxmemory-policy": "noeviction"})
    try:
        client = server.client()
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for i in range(100_000):  # fill until writes fail
                client.set(f"cache:{i}", "x" * 1000)
        keys = client.dbsize()
        yield _provoke(
            "OOM",
            tmp_path_factory.mktemp("oom"),
            server.host,
            server.port,
            lambda: client.exists(KEY) == 1 or client.dbsize() != keys,
        )
    finally:
        server.stop()


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provoked]:
    _require("redis-server", "redis-cli")
    server = RedisServer.start()
    server.stop()  # a server that was there and is down: its port now refuses connections
    yield _provoke("CONNREFUSED", tmp_path_factory.mktemp("refused"), server.host, server.port, lambda: False)


@pytest.fixture(scope="module")
def readonly(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provoked]:
    _require("redis-server", "redis-cli")
    master = RedisServer.start()
    replica = RedisServer.start(replica_of=(master.host, master.port))
    try:
        yield _provoke(
            "READONLY",
            tmp_path_factory.mktemp("readonly"),
            replica.host,
            replica.port,
            lambda: master.client().exists(KEY) == 1 or replica.client().exists(KEY) == 1,
        )
    finally:
        replica.stop()
        master.stop()


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provoked]:
    _require("redis-server", "redis-cli")
    cluster = RedisCluster.start(nodes=3)
    try:
        owner = cluster.node_for_key(KEY)
        other = next(n for n in cluster.nodes if n.port != owner.port)
        provoked = _provoke(
            "MOVED",
            tmp_path_factory.mktemp("moved"),
            other.host,
            other.port,
            lambda: any(n.client().dbsize() for n in cluster.nodes),
            servers=[owner],
        )
        yield provoked
    finally:
        cluster.stop()


CASES = ["noauth", "oom", "refused"]
ROUTED = ["readonly", "moved"]  # the engine does what the runbook's solution says: the write lands where it must


def _case(request: pytest.FixtureRequest, name: str) -> Provoked:
    return request.getfixturevalue(name)


# -- the run stops, says what the server said, and changes nothing ------------------------------------------
SERVER_TEXT = {
    "noauth": "NOAUTH",
    "oom": "OOM command not allowed when used memory > 'maxmemory'",
    "refused": "Connection refused",
    "readonly": "READONLY You can't write against a read only replica",
    "moved": "MOVED",
}


@pytest.mark.parametrize("name", CASES)
def test_error_stops_the_run_with_exit_4_and_writes_nothing(request: pytest.FixtureRequest, name: str) -> None:
    case = _case(request, name)
    result = case.result
    assert result.code == 4, result.output
    step = case.write_step
    assert step["outcome"] == "error"
    message = step["error"]["message"]
    assert SERVER_TEXT[name] in message
    assert SERVER_TEXT[name] in result.stdout  # printed under the step
    ended = case.events[-1]
    assert ended["type"] == "run.ended" and ended["outcome"] == "error" and ended["exit_code"] == 4
    assert message in ended["error"]
    assert not case.written()
    assert verify_transcript(transcript_path(result)).ok


@pytest.mark.parametrize("name", ROUTED)
def test_readonly_and_moved_are_handled_by_the_engine_and_recorded(request: pytest.FixtureRequest, name: str) -> None:
    case = _case(request, name)
    assert case.result.code == 0, case.result.output
    assert case.write_step["outcome"] == "ok"
    assert "READONLY" not in case.result.output and "MOVED" not in case.result.output
    assert case.written()
    changed = of_type(case.events, "topology.changed")
    if name == "readonly":
        assert any("target resolved to a replica" in e["reason"] and "used primary" in e["reason"] for e in changed)
    assert verify_transcript(transcript_path(case.result)).ok


def test_moved_lands_on_the_node_that_owns_the_slot(moved: Provoked) -> None:
    owner = moved.servers[0]
    slot = owner.client().cluster("KEYSLOT", KEY)
    assert moved.redis_cli == f"MOVED {slot} {owner.host}:{owner.port}"  # what redis-cli (no -c) meets
    assert owner.client().get(KEY) == "v"


# -- and the runbook's cause and solution come with it ------------------------------------------------------
@pytest.mark.parametrize("name", CASES)
def test_error_prints_and_records_the_runbook_cause_and_solution(request: pytest.FixtureRequest, name: str) -> None:
    case = _case(request, name)
    cause, solution = RUNBOOK[case.code]
    advice = case.write_step["error"]["advice"]
    assert advice is not None, f"no advice recorded for {case.write_step['error']['message']!r}"
    assert cause in advice and solution in advice
    printed = [line.strip() for line in case.result.stdout.splitlines() if line.strip().startswith("advice:")]
    assert printed == [f"advice: {advice}"]


# -- runbook explain, fed what redis-cli printed -------------------------------------------------------------
@pytest.mark.parametrize("name", CASES + ROUTED)
def test_explain_gives_the_runbook_cause_and_solution_for_the_real_error(
    request: pytest.FixtureRequest, name: str
) -> None:
    case = _case(request, name)
    assert case.redis_cli, "redis-cli printed nothing"
    result = runbook("explain", case.redis_cli)
    assert result.code == 0, (case.redis_cli, result.output)
    lines = result.stdout.splitlines()
    cause, solution = RUNBOOK[case.code]
    assert lines[0] == case.code
    assert f"cause: {cause}" in lines
    assert any(line.startswith(f"solution: {solution}") for line in lines), lines
