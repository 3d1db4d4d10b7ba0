"""A keyspace analysis on a primary with replicas reads an in-sync replica (`read_from: auto`): the figures
are the primary's, the primary's clients never meet the scan, and the step says which node it read and why.
End to end through the CLI on real redis-server processes; where a call landed is read from each node's
INFO commandstats."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from engine.adapters.redis import RedisAdapter
from engine.keyspace import server_side
from engine.sandbox.seed import seed_somabrain
from engine.targets import RedisEndpoint
from tests.conftest import require_binary
from tests.integration.cli_support import CliResult, events, runbook, transcript_path
from tests.integration.test_keyspace_server_side import _Quiet

SCAN_CALLS = ("scan", "eval_ro", "evalsha_ro", "eval", "evalsha", "ttl", "memory|usage", "type")
HEADER = "title: T\nsection: test\ndescription: test procedure\nrequires: [redis]\n"


@pytest.fixture
def replicated(replicated_deployment):
    deployment = replicated_deployment(replicas=2, sentinels=0)
    with deployment.primary.client() as client:
        seed_somabrain(client)
        client.set("leak:forever", "x")  # one key without a TTL, for certain
        assert client.execute_command("WAIT", 2, 0) == 2  # both replicas hold every key before the run
    return deployment


def _address(server) -> str:
    return f"{server.host}:{server.port}"


def _reset_stats(deployment) -> None:
    for server in deployment.servers:
        with server.client() as client:
            client.config_resetstat()


def _scan_calls(server) -> int:
    """How many keyspace-walking commands this node ran since its stats were reset."""
    with server.client() as client:
        stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in SCAN_CALLS)


def _run(tmp_path: Path, procedure: str, *args: str) -> CliResult:
    return runbook(
        "run", procedure, *args, "--json", "--transcripts-dir", str(tmp_path / "transcripts"), timeout=180
    )  # fmt: skip


def _method(result: CliResult) -> str:
    outputs = [e.get("output", "") for e in events(transcript_path(result))]
    return next(o for o in outputs if o.startswith("method:"))


def _truth(server) -> tuple[int, int]:
    """(keys, keys without a TTL) as the primary holds them."""
    with server.client() as client:
        keys = list(client.scan_iter(count=1000))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.ttl(key)
        return len(keys), sum(1 for ttl in pipe.execute() if ttl == -1)


@contextmanager
def _stopped(*servers) -> Iterator[None]:
    """The servers do not answer (SIGSTOP) until the block ends."""
    for server in servers:
        os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for server in servers:
            os.kill(server.pid, signal.SIGCONT)


def _inventory(tmp_path: Path, url: str) -> list[str]:
    """A target whose nodes time out after 1 s: a stopped replica costs the run a second, not ten."""
    path = tmp_path / "inventory.yaml"
    path.write_text(
        "environments:\n  prod:\n    targets:\n      cache:\n        redis:\n"
        f"          url: {url}\n          timeout: 1s\n"
    )
    return ["--inventory", str(path), "--target", "cache"]


@pytest.mark.parametrize("procedure", ["redis/audit-ttl", "redis/memory-report"])
def test_an_analysis_reads_an_in_sync_replica_and_never_scans_the_primary(replicated, tmp_path: Path, procedure):
    keys, without_ttl = _truth(replicated.primary)
    _reset_stats(replicated)

    result = _run(tmp_path, procedure, "--redis", replicated.primary.url)

    assert result.code == 0, result.output  # keys without a TTL are reported (severity info), not failed
    step = result.json()["steps"][0]
    assert step["result"]["scanned"] == keys
    if procedure == "redis/audit-ttl":
        assert step["result"]["without_ttl"] == without_ttl >= 1
    method = _method(result)
    read = [r for r in replicated.replicas if f"on replica {_address(r)}, a replica in sync" in method]
    assert len(read) == 1, method
    assert f"in sync with primary {_address(replicated.primary)}" in method and "primary's clients are spared" in method
    assert _scan_calls(read[0]) > 0
    assert _scan_calls(replicated.primary) == 0  # not one SCAN, script or per-key call on the primary
    assert "no client uses it but its primary's replication stream, so it is paced as an idle server" in method


def test_a_replica_with_clients_of_its_own_is_paced_as_a_busy_server(replicated, tmp_path: Path):
    held = [redis.Redis(host=r.host, port=r.port) for r in replicated.replicas]
    for client in held:
        client.ping()  # an application's pooled connection on each replica, held for the run
    try:
        result = _run(tmp_path, "redis/audit-ttl", "--redis", replicated.primary.url)
    finally:
        for client in held:
            client.close()

    assert result.code == 0, result.output
    method = _method(result)
    assert "on replica " in method and "paced as an idle server" not in method, method


def test_sentinel_s_links_to_a_replica_are_not_clients_of_it(tmp_path: Path):
    require_binary("redis-server")
    result = _run(tmp_path, "redis/audit-ttl", "--sandbox", "replicated")

    assert result.code == 0, result.output
    method = _method(result)
    assert "on replica " in method and "so it is paced as an idle server" in method, method


def test_a_replica_that_does_not_answer_is_passed_over_by_name(replicated, tmp_path: Path):
    stopped, healthy = replicated.replicas
    _reset_stats(replicated)

    with _stopped(stopped):
        result = _run(tmp_path, "redis/audit-ttl", *_inventory(tmp_path, replicated.primary.url))

    assert result.code == 0, result.output
    method = _method(result)
    assert f"on replica {_address(healthy)}, a replica in sync" in method, method
    assert f"passed over {_address(stopped)}: " in method
    assert _scan_calls(healthy) > 0 and _scan_calls(replicated.primary) == 0


def test_without_an_in_sync_replica_the_primary_is_read_and_the_step_says_why(replicated, tmp_path: Path):
    keys, _ = _truth(replicated.primary)
    _reset_stats(replicated)

    with _stopped(*replicated.replicas):
        result = _run(tmp_path, "redis/audit-ttl", *_inventory(tmp_path, replicated.primary.url))

    assert result.code == 0, result.output
    assert result.json()["steps"][0]["result"]["scanned"] == keys
    method = _method(result)
    assert "on the target (no replica in sync (" in method, method
    assert all(f"{_address(r)}: " in method for r in replicated.replicas)
    assert _scan_calls(replicated.primary) > 0


def _procedure(directory: Path, mode: str) -> None:
    (directory / "audit.yaml").write_text(
        f"id: test/audit\n{HEADER}steps:\n  - id: audit\n    name: Audit\n"
        f"    keyspace:\n      audit_ttl: {{match: '*', read_from: {mode}}}\n"
    )


def _run_own(tmp_path: Path, url: str, mode: str) -> CliResult:
    procedures = tmp_path / "procedures"
    procedures.mkdir()
    _procedure(procedures, mode)
    return _run(tmp_path, "test/audit", "--redis", url, "--procedures", str(procedures))


def test_read_from_target_scans_the_primary_itself(replicated, tmp_path: Path):
    _reset_stats(replicated)

    result = _run_own(tmp_path, replicated.primary.url, "target")

    assert result.code == 0, result.output
    assert _method(result).endswith("; on the target (read_from: target)")
    assert _scan_calls(replicated.primary) > 0
    assert all(_scan_calls(r) == 0 for r in replicated.replicas)


def test_read_from_replica_fails_the_step_rather_than_scan_a_lone_primary(redis_server, tmp_path: Path):
    server = redis_server()
    with server.client() as client:
        client.set("k", "v")
        client.config_resetstat()

    result = _run_own(tmp_path, server.url, "replica")

    assert result.code not in (0, 1), result.output
    step = result.json()["steps"][0]
    assert step["outcome"] == "error" and "read_from: replica: the primary has no replica" in step["message"]
    assert _scan_calls(server) == 0


def test_a_replica_given_as_the_target_is_read_where_it_points(replicated, tmp_path: Path):
    replica = replicated.replicas[0]
    _reset_stats(replicated)

    result = _run(tmp_path, "redis/audit-ttl", "--redis", replica.url)

    assert result.code == 0, result.output
    assert _method(result).endswith("; on the target (the target is a replica)")
    assert _scan_calls(replica) > 0 and _scan_calls(replicated.primary) == 0


def test_the_replica_read_is_a_real_copy_a_key_written_to_the_primary_is_counted(replicated, tmp_path: Path):
    with replicated.primary.client() as client:
        client.set("late:no-ttl", "1")
        assert client.execute_command("WAIT", 2, 0) == 2
    keys, without_ttl = _truth(replicated.primary)

    result = _run(tmp_path, "redis/audit-ttl", "--redis", replicated.primary.url, "--var", "pattern=late:*")

    assert result.json()["steps"][0]["result"]["without_ttl"] == 1
    with redis.Redis(host=replicated.primary.host, port=replicated.primary.port) as client:
        assert client.exists("late:no-ttl") == 1  # read, never written
    assert (keys, without_ttl) == _truth(replicated.primary)


class _Writes:
    """Writes to the primary from a thread of the test's, running until the block ends: a replication stream."""

    def __init__(self, server) -> None:
        self.client = redis.Redis(host=server.host, port=server.port)
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.client.set(f"stream:{self.sent % 100}", self.sent)
            self.sent += 1

    def __enter__(self) -> _Writes:
        self.thread.start()
        while self.sent < 10:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.client.close()


def test_a_replica_s_replication_stream_is_not_taken_for_clients_when_nobody_else_uses_it(replicated):
    with replicated.primary.client() as client:
        pipe = client.pipeline(transaction=False)
        for i in range(20_000):
            pipe.set(f"bulk:{i}", i)
        pipe.execute()
        assert client.execute_command("WAIT", 2, 0) == 2
    replica = replicated.replicas[0]
    adapter = RedisAdapter(RedisEndpoint(host=replica.host, port=replica.port), allow_mutation=False)
    plain, alone = server_side.Pacer(), server_side.Pacer(stream_only=True)
    try:
        with _Writes(replicated.primary) as writes:
            counted = server_side.audit_ttl(adapter, "bulk:*", sample=0, progress=_Quiet(), start=100, pacer=plain)
            paced = server_side.audit_ttl(adapter, "bulk:*", sample=0, progress=_Quiet(), start=100, pacer=alone)
            assert not writes.stop.is_set()  # the stream ran through both scans: the test ends it only now
    finally:
        adapter.close()

    assert counted["scanned"] == paced["scanned"] == 20_000
    assert plain.state is not None and alone.state is not None
    assert plain.state.busy_calls > 0  # the primary's writes, replayed on the replica, count as others' commands
    assert alone.state.busy_calls == 0 and alone.state.top_budget_s == server_side.IDLE_BUDGET_S
