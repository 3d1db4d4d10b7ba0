""" "Redis is down" when the primary died and Sentinel already promoted a replica: redis/emergency-service-down and
redis/troubleshoot-connection say so (which node was promoted, that clients must follow Sentinel) and restart
nothing; end to end on real redis-server, Sentinel and sshd processes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from engine.sandbox.sshd import install_redis_service, inventory_for, write_inventory
from engine.sandbox.topologies import Replicated, start_replicated
from tests.conftest import require_binary
from tests.integration.cli_support import CliResult, events, of_type, runbook, transcript_path

SAFETY_NET = 120.0  # a broken Sentinel, not a timing expectation: the test waits on the condition itself


@pytest.fixture
def sentinel_world(sshd_host, tmp_path: Path):
    """A primary, two replicas and three Sentinels; the inventory names one node (the primary unless told),
    its host over SSH and the Sentinels, as an operator's inventory does."""
    require_binary("redis-server")
    deployment = start_replicated(replicas=2, sentinels=3)

    def make(named=None) -> tuple[Replicated, Path]:
        server = named or deployment.primary
        host = sshd_host()
        service = install_redis_service(host, server)
        data = inventory_for(server, host, service)
        facet = data["environments"]["sandbox"]["targets"]["sandbox"]["redis"]
        facet["sentinel"] = {
            "addresses": [f"{h}:{p}" for h, p in deployment.sentinel_addresses],
            "master": deployment.master_name,
        }
        facet["timeout"] = "2s"
        return deployment, write_inventory(tmp_path / "inventory.yaml", data)

    try:
        yield make
    finally:
        deployment.stop()


def _address(server) -> str:
    return f"{server.host}:{server.port}"


def _run(inventory: Path, tmp_path: Path, procedure: str, *args: str) -> CliResult:
    return runbook(
        "run", procedure, "--inventory", str(inventory), "--target", "sandbox", "--json",
        "--transcripts-dir", str(tmp_path / "transcripts"), *args, timeout=180,
    )  # fmt: skip


def _steps(result: CliResult) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in result.json()["steps"]}


def _kill_primary_and_wait_for_promotion(deployment: Replicated) -> str:
    """SIGKILL the primary and hold until the failover is over: every Sentinel names the same new primary, that
    node says it is a master, no failover is in progress, and Sentinel lists the old primary as down."""
    old = _address(deployment.primary)
    deployment.primary.kill()
    deadline = time.monotonic() + SAFETY_NET
    while True:
        named = set()
        settled = True
        for sentinel in deployment.sentinels:
            with sentinel.client() as client:
                host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", deployment.master_name)
                named.add(f"{host}:{port}")
                master = client.execute_command("SENTINEL", "MASTER", deployment.master_name)
                settled = settled and "failover_in_progress" not in master["flags"]  # redis-py parses it
                replicas = client.execute_command("SENTINEL", "REPLICAS", deployment.master_name)
                down = {r["name"] for r in replicas if "s_down" in r["flags"]}
                settled = settled and old in down
        if len(named) == 1 and old not in named and settled:
            (new,) = named
            server = next(s for s in deployment.replicas if _address(s) == new)
            with server.client() as client:
                if client.execute_command("ROLE")[0] == "master":
                    return new
        assert time.monotonic() < deadline, f"Sentinel did not promote a replica of {old}"
        time.sleep(0.05)


def test_service_down_says_sentinel_promoted_a_replica_and_restarts_nothing(sentinel_world, tmp_path: Path):
    deployment, inventory = sentinel_world()
    old = _address(deployment.primary)
    new = _kill_primary_and_wait_for_promotion(deployment)

    result = _run(inventory, tmp_path, "redis/emergency-service-down", "--yes")

    assert result.code == 1, result.output  # a finding: the primary is down, the service is not
    steps = _steps(result)
    failover = steps["failover"]["result"]
    assert failover["promoted"] is True
    assert failover["old_primary"] == old and failover["new_primary"] == new
    assert f"the primary {old} is down and Sentinel already promoted the replica {new}, which answers" in (
        result.output
    )
    assert f'Clients must ask Sentinel for the primary of "{deployment.master_name}"' in result.output
    assert steps["restart"]["outcome"] == "skipped"
    assert "inactive" in steps["status"]["summary"]
    assert deployment.primary.pid is None  # not restarted
    assert not of_type(events(transcript_path(result)), "approval.requested")
    promoted = next(s for s in deployment.replicas if _address(s) == new)
    with promoted.client() as client:
        assert client.execute_command("ROLE")[0] == "master"


def test_connection_troubleshooting_says_sentinel_promoted_a_replica_and_restarts_nothing(
    sentinel_world, tmp_path: Path
):
    deployment, inventory = sentinel_world()
    old = _address(deployment.primary)
    new = _kill_primary_and_wait_for_promotion(deployment)

    result = _run(inventory, tmp_path, "redis/troubleshoot-connection", "--yes")

    assert result.code == 1, result.output
    steps = _steps(result)
    assert steps["tcp"]["result"]["connected"] is False  # the address the inventory names is dead
    failover = steps["failover"]["result"]
    assert failover == {**failover, "promoted": True, "old_primary": old, "new_primary": new}
    assert f"Sentinel already promoted the replica {new}" in result.output
    assert steps["restart"]["outcome"] == "skipped"
    assert deployment.primary.pid is None
    assert not of_type(events(transcript_path(result)), "approval.requested")


def test_a_healthy_sentinel_deployment_is_not_reported_as_failed_over(sentinel_world, tmp_path: Path):
    deployment, inventory = sentinel_world()
    result = _run(inventory, tmp_path, "redis/emergency-service-down")
    assert result.code == 0, result.output
    steps = _steps(result)
    assert steps["failover"]["result"]["promoted"] is False
    assert steps["failover"]["result"]["new_primary"] == _address(deployment.primary)
    assert steps["restart"]["outcome"] == "skipped"


def test_a_dead_replica_is_not_taken_for_a_failover(sentinel_world, tmp_path: Path):
    deployment, _ = sentinel_world()
    dead = deployment.replicas[0]
    _, inventory = sentinel_world(dead)  # the inventory names the replica that dies
    dead.kill()
    deadline = time.monotonic() + SAFETY_NET
    while True:  # held until Sentinel sees it down
        with deployment.sentinels[0].client() as client:
            replicas = client.execute_command("SENTINEL", "REPLICAS", deployment.master_name)
        if any(r["name"] == _address(dead) and "s_down" in r["flags"] for r in replicas):
            break
        assert time.monotonic() < deadline, "Sentinel did not see the replica down"
        time.sleep(0.05)

    result = _run(inventory, tmp_path, "redis/emergency-service-down")

    steps = _steps(result)
    failover = steps["failover"]["result"]
    assert failover["promoted"] is False and failover["old_primary"] == "", failover
    assert _address(dead) in failover["down"] and failover["new_primary"] == _address(deployment.primary)
    assert steps["failover"]["expectations"][0]["held"] is True
    assert "already promoted" not in result.stderr
