"""redis/key-metrics on a primary with replicas: a graded row per node, each metric's worst node named, the
replicas' link and lag graded, one verdict naming the worst node; end to end on real redis-server processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import redis

from engine.sandbox.topologies import start_cluster
from tests.conftest import require_binary
from tests.integration.cli_support import CliResult, runbook
from tests.integration.replication_support import replica_link_down


@pytest.fixture
def replicated(replicated_deployment):
    return replicated_deployment(replicas=2, sentinels=0)


def _address(server) -> str:
    return f"{server.host}:{server.port}"


def _run(tmp_path: Path, *args: str) -> CliResult:
    return runbook(
        "run", "redis/key-metrics", *args, "--var", "interval=1s", "--json",
        "--transcripts-dir", str(tmp_path / "transcripts"), timeout=180,
    )  # fmt: skip


def _steps(result: CliResult) -> dict[str, dict]:
    return {s["id"]: s for s in result.json()["steps"]}


def _rows(result: CliResult) -> dict[str, dict]:
    """The per-node rows: one `nodes` entry per node (a foreach over the second sample)."""
    return {s["result"]["node"]: s["result"] for s in result.json()["steps"] if s["id"] == "nodes"}


def test_every_node_is_graded_and_a_healthy_deployment_passes(replicated, tmp_path: Path):
    result = _run(tmp_path, "--redis", replicated.primary.url)

    assert result.code == 0, result.output
    steps = _steps(result)
    rows = _rows(result)
    assert sorted(rows) == sorted(_address(s) for s in replicated.servers)
    assert rows[_address(replicated.primary)]["role"] == "primary"
    for replica in replicated.replicas:
        row = rows[_address(replica)]
        assert row["role"] == "replica" and row["answered"]
        assert row["replication"]["link"] == "up" and row["link_grade"] == "normal" and row["lag_grade"] == "normal"
        assert row["memory_grade"] == "normal" and row["clients_count"] >= 1
        assert f"{_address(replica)} replica: memory normal" in result.output
    assert rows[_address(replicated.primary)]["link_grade"] == "n/a"
    verdict = steps["verdict"]["result"]
    assert verdict["alerts"] == [] and verdict["node_count"] == 3 and verdict["worst_node"] is None
    assert "3 nodes, every one within the normal ranges" in result.output
    assert verdict["grades"]["replica_link"] == "normal" and verdict["grades"]["replica_lag"] == "normal"
    assert steps["replication"]["outcome"] == "ok"


def test_a_replica_with_too_many_clients_is_the_worst_node_and_named(replicated, tmp_path: Path):
    busy = replicated.replicas[1]
    held = [redis.Redis(host=busy.host, port=busy.port) for _ in range(8)]
    for client in held:
        client.ping()  # held open for the run: connections on the replica only
    try:
        result = _run(
            tmp_path, "--redis", replicated.primary.url, "--var", "clients_alert=5", "--var", "clients_normal=3"
        )
    finally:
        for client in held:
            client.close()

    assert result.code == 1, result.output
    steps = _steps(result)
    rows = _rows(result)
    assert rows[_address(busy)]["clients_grade"] == "alert"
    assert rows[_address(replicated.primary)]["clients_grade"] != "alert"
    assert steps["clients"]["result"]["grade"] == "alert" and steps["clients"]["result"]["count"] >= 8
    verdict = steps["verdict"]["result"]
    assert verdict["alerts"] == ["clients"]
    assert verdict["worst_node"] == _address(busy) and verdict["worst_alerts"] == ["clients"]
    assert f"connected clients on {_address(busy)} (replica) (alert > 5)" in result.output
    assert f"worst {_address(busy)} (replica: clients)" in result.output


def test_a_replica_whose_link_is_down_is_an_alert(replicated, tmp_path: Path):
    replica = replicated.replicas[0]
    with replica_link_down(replicated):
        # seeded from the replica: discovery asks its primary (with the password) and lists both replicas
        result = _run(tmp_path, "--redis", replica.url)

    assert result.code == 1, result.output
    steps = _steps(result)
    rows = _rows(result)
    row = rows[_address(replica)]
    assert row["answered"] and row["link_grade"] == "alert" and row["lag_grade"] == "alert"
    assert "replica_link" in steps["verdict"]["result"]["alerts"]
    assert f"replica {_address(replica)}: link to its primary is down" in result.output


def test_a_node_that_does_not_answer_is_named(replicated, tmp_path: Path):
    stopped = replicated.replicas[1]
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "environments:\n  prod:\n    targets:\n      cache:\n        redis:\n"
        f"          url: {replicated.primary.url}\n          timeout: 1s\n"
    )
    os.kill(stopped.pid, signal.SIGSTOP)  # held until the run is over
    try:
        result = _run(tmp_path, "--inventory", str(inventory), "--target", "cache")
    finally:
        os.kill(stopped.pid, signal.SIGCONT)

    assert result.code == 1, result.output
    steps = _steps(result)
    rows = _rows(result)
    assert rows[_address(stopped)]["answered"] is False
    assert "answering" in steps["verdict"]["result"]["alerts"]
    assert steps["verdict"]["result"]["worst_node"] == _address(stopped)
    assert f"{_address(stopped)} (replica) did not answer" in result.output


def test_every_node_of_a_cluster_is_graded(tmp_path: Path):
    require_binary("redis-cli")
    cluster = start_cluster(primaries=3, replicas=1)
    try:
        result = _run(tmp_path, "--redis", cluster.nodes[0].url)
    finally:
        cluster.stop()

    assert result.code == 0, result.output
    rows = _rows(result)
    assert sorted(rows) == sorted(f"{n.host}:{n.port}" for n in cluster.nodes)
    assert [r["role"] for r in rows.values()].count("replica") == 3
    assert all(r["link_grade"] == "normal" for r in rows.values() if r["role"] == "replica")
    verdict = _steps(result)["verdict"]["result"]
    assert verdict["node_count"] == 6 and verdict["alerts"] == []
