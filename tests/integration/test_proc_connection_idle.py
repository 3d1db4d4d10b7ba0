"""redis/troubleshoot-connection's idle-connection kill, end to end: refused, dry-run, approved, capped.

A real redis-server and sshd (the rehearsal world: the same Redis behind an inventory target); a leaking
client leaves named connections idle, next to a blocked BLPOP worker and a pub/sub subscriber that are
just as idle but doing their job, and must survive every mode.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from engine.rehearsal.world import World, WorldSpec
from tests.integration.cli_support import events, of_type, runbook

PROC = "redis/troubleshoot-connection"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    w = World.start(WorldSpec(http=False))
    try:
        yield w
    finally:
        w.stop()


class Leak:
    """`count` idle connections named `leaky-pool`, plus a blocked worker and a subscriber (never leaks)."""

    def __init__(self, world: World, count: int):
        self.world = world
        self.leaked = []
        self.leaked_ids: list[int] = []
        for _ in range(count):
            client = world.client(single_connection_client=True)
            client.client_setname("leaky-pool")
            self.leaked.append(client)
            self.leaked_ids.append(int(client.client_id()))
        assert world.redis is not None
        where = {"host": world.redis.host, "port": world.redis.port}
        self.worker = redis.Redis(**where, client_name="queue-worker", single_connection_client=True)
        self.worker_id = int(self.worker.client_id())
        self.blocked = threading.Thread(target=self._block, daemon=True)
        self.blocked.start()
        self.subscriber = redis.Redis(**where, client_name="subscriber")  # names the pub/sub connection too
        self.pubsub = self.subscriber.pubsub()
        self.pubsub.subscribe("tenant:acme:events")
        deadline = time.monotonic() + 60  # a safety net: the worker blocks as soon as its thread runs
        while "queue-worker" not in self._blocked_names():
            assert time.monotonic() < deadline, "the worker never blocked in BLPOP"
            time.sleep(0.02)
        time.sleep(2.2)  # everyone idle >= 2 s (Redis counts whole seconds)

    def _blocked_names(self) -> list[str]:
        with self.world.client() as client:
            return [c["name"] for c in client.client_list() if c["cmd"] == "blpop"]

    def _block(self) -> None:
        try:
            self.worker.blpop(["tenant:acme:queue"], timeout=0)  # held until close() pushes
        except redis.RedisError:
            pass

    def names(self) -> list[str]:
        with self.world.client() as client:
            return sorted(c["name"] for c in client.client_list() if c["name"])

    def close(self) -> None:
        for client in self.leaked:
            client.close()
        self.pubsub.close()
        self.subscriber.close()
        with self.world.client() as client:
            client.lpush("tenant:acme:queue", "done")  # wake the worker, then let it go
        self.blocked.join(timeout=5)
        self.worker.close()
        with self.world.client() as client:
            client.delete("tenant:acme:queue")


@pytest.fixture
def leak(world: World) -> Iterator[Any]:
    made: list[Leak] = []

    def make(count: int) -> Leak:
        made.append(Leak(world, count))
        return made[-1]

    yield make
    for item in made:
        item.close()


def run(world: World, tmp_path: Any, *args: str, **variables: Any) -> Any:
    argv = ["run", PROC, "--inventory", str(world.inventory_path), "--target", "rehearsal"]
    argv += ["--transcripts-dir", str(tmp_path / "transcripts"), "--json", *args]
    for name, value in variables.items():
        argv += ["--var", f"{name}={value}"]
    return runbook(*argv, timeout=120)


def steps(result: Any) -> dict[str, dict[str, Any]]:
    return {e["step"]["id"]: e for e in of_type(events(result.json()["transcript"]), "step.finished")}


def test_approved_disconnects_exactly_the_idle_leaked_connections(world, leak, tmp_path):
    leaked = leak(30)
    with world.client() as client:
        run_id = client.info("server")["run_id"]
    result = run(world, tmp_path, "--yes", idle_seconds=2)
    with world.client() as client:  # Redis answered throughout: no restart cut every connection
        assert client.info("server")["run_id"] == run_id
    assert result.code == 1, result.output  # the leak is a finding
    done = steps(result)
    assert "30 of" in done["idle-clients"]["summary"] and "leaky-pool 30" in done["idle-clients"]["summary"]
    assert done["kill-idle"]["effect"] == "destructive"
    assert done["kill-idle"]["blast_radius"]["idle_clients"] == 30
    assert done["kill-idle"]["blast_radius"]["by_name"] == {"leaky-pool": 30}
    assert done["kill-idle"]["result"]["killed"] == 30
    assert (
        done["kill-idle"]["changes"][0]["kind"] == "clients_killed" and done["kill-idle"]["changes"][0]["count"] == 30
    )
    assert [x["held"] for x in done["verify-idle"]["expectations"]] == [True, True]
    # exactly the leaked connections were cut: never the blocked worker or the subscriber, idle as long
    assert sorted(done["kill-idle"]["result"]["ids"]) == sorted(leaked.leaked_ids)
    assert leaked.worker_id not in done["kill-idle"]["result"]["ids"]
    assert "subscriber" in leaked.names()
    if leaked.blocked.is_alive():  # still waiting in BLPOP (its thread ends only if its connection does)
        assert "queue-worker" in leaked.names()
    with pytest.raises(redis.ConnectionError):
        leaked.leaked[0].ping()  # a leaked client really was cut


def test_refused_without_a_terminal_and_dry_run_kill_nothing(world, leak, tmp_path):
    leaked = leak(12)
    refused = run(world, tmp_path, idle_seconds=2)
    assert refused.code == 3, refused.output
    assert leaked.names().count("leaky-pool") == 12

    rehearsal = run(world, tmp_path, "--dry-run", idle_seconds=2)
    assert rehearsal.code == 1, rehearsal.output
    done = steps(rehearsal)
    assert done["kill-idle"]["outcome"] == "predicted"
    assert done["kill-idle"]["predicted_changes"][0]["count"] == 12
    assert leaked.names().count("leaky-pool") == 12
    assert leaked.leaked[0].ping()


def test_more_idle_connections_than_max_kill_is_refused_and_kills_none(world, leak, tmp_path):
    leaked = leak(8)
    result = run(world, tmp_path, "--yes", idle_seconds=2, max_kill=5)
    assert result.code != 0
    done = steps(result)
    assert done["kill-idle"]["outcome"] == "error"
    assert "8 idle clients, more than max_clients=5: refused, nothing killed" in done["kill-idle"]["error"]["message"]
    assert leaked.names().count("leaky-pool") == 8


def test_a_healthy_server_with_nothing_idle_long_enough_is_left_alone(world, tmp_path):
    result = run(world, tmp_path, "--yes")  # default idle_seconds 300: nothing qualifies
    assert result.code == 0, result.output
    done = steps(result)
    assert done["idle-clients"]["result"]["matched"] == 0
    assert "kill-idle" not in done  # skipped, never asked
