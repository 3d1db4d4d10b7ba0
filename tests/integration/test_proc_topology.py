"""redis/replication-health, redis/cluster-health, redis/failover and the per-node health-check, end to end
on real redis-server and Sentinel processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from engine.sandbox.topologies import start_cluster, start_replicated
from tests.conftest import require_binary
from tests.integration.cli_support import events, of_type, runbook, transcript_path
from tests.integration.replication_support import replica_link_down


def _run(tmp_path: Path, procedure: str, *args: str, timeout: float = 180):
    result = runbook(
        "run", procedure, *args, "--json", "--transcripts-dir", str(tmp_path / "transcripts"), timeout=timeout
    )
    steps: dict[str, dict] = {}
    for step in result.json()["steps"]:
        steps.setdefault(step["id"], step)
    return result, steps


def _sentinel_args(deployment) -> list[str]:
    args = [a for h, p in deployment.sentinel_addresses for a in ("--sentinel", f"{h}:{p}")]
    return [*args, "--master", deployment.master_name]


def _roles(servers) -> dict[int, str]:
    out = {}
    for server in servers:
        with server.client() as client:
            out[server.port] = client.execute_command("ROLE")[0]
    return out


def _inventory(tmp_path: Path, deployment, timeout: str = "1s") -> Path:
    path = tmp_path / "inventory.yaml"
    addresses = ", ".join(f'"{h}:{p}"' for h, p in deployment.sentinel_addresses)
    path.write_text(
        "environments:\n  prod:\n    targets:\n      cache:\n        redis:\n"
        f"          url: redis://{deployment.primary.host}:{deployment.primary.port}\n"
        f"          timeout: {timeout}\n"
        f"          sentinel: {{addresses: [{addresses}], master: {deployment.master_name}}}\n"
    )
    return path


@pytest.fixture
def replicated(replicated_deployment):
    return replicated_deployment(replicas=2, sentinels=3)


@pytest.fixture
def cluster():
    require_binary("redis-server")
    require_binary("redis-cli")
    deployment = start_cluster(primaries=3, replicas=1)
    yield deployment
    deployment.stop()


# -- health-check and replication-health --------------------------------------------------------------
def test_health_check_has_a_row_per_node_and_one_verdict(replicated, tmp_path: Path):
    result, steps = _run(tmp_path, "redis/health-check", *_sentinel_args(replicated))
    assert result.code == 0, result.output
    rows = steps["nodes"]["result"]
    assert sorted(r["node"] for r in rows) == sorted(f"{s.host}:{s.port}" for s in replicated.servers)
    assert [r["role"] for r in rows].count("replica") == 2
    assert all(r["outcome"] == "ok" for r in rows)


def test_health_check_fails_when_a_replica_link_is_down(replicated, tmp_path: Path):
    replica = replicated.replicas[0]
    with replica_link_down(replicated):
        result, steps = _run(tmp_path, "redis/health-check", "--redis", replica.url)
    assert result.code == 1, result.output
    rows = {r["node"]: r for r in steps["nodes"]["result"]}
    assert rows[f"{replicated.primary.host}:{replicated.primary.port}"]["outcome"] == "error"  # NOAUTH
    assert f"replica {replica.host}:{replica.port}: link to its primary is down" in result.output


def test_replication_health_grades_every_replica(replicated, tmp_path: Path):
    result, steps = _run(tmp_path, "redis/replication-health", *_sentinel_args(replicated), "--var", "window=0.5s")
    assert result.code == 0, result.output
    lag = steps["grade"]["result"]["lag"]
    assert sorted(row["node"] for row in lag) == sorted(f"{r.host}:{r.port}" for r in replicated.replicas)
    assert all(row["link"] == "up" and not row["alert"] for row in lag)


def test_replication_health_names_a_replica_that_stopped_answering(replicated, tmp_path: Path):
    stopped = replicated.replicas[1]
    os.kill(stopped.pid, signal.SIGSTOP)  # held until the run is over
    try:
        inventory = _inventory(tmp_path, replicated)
        result, _ = _run(
            tmp_path,
            "redis/replication-health",
            "--inventory",
            str(inventory),
            "--target",
            "cache",
            "--var",
            "window=0.5s",
        )
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
    assert result.code == 1, result.output
    assert f"{stopped.host}:{stopped.port}" in result.output


# -- cluster-health -------------------------------------------------------------------------------------
def test_cluster_health_on_a_whole_cluster_and_with_a_slot_left_open(cluster, tmp_path: Path):
    seed = cluster.nodes[0]
    result, steps = _run(tmp_path, "redis/cluster-health", "--redis", seed.url)
    assert result.code == 0, result.output
    state = steps["grade"]["result"]["state"]
    assert state["ok"] and state["slots_covered"] == 16384 and not state["failing"] and not state["open_slots"]
    assert len(steps["keys"]["result"]) == 3
    # a slot left open by a resharding is named (held: set by the test, closed after)
    owner = cluster.node_for_key("{a}")
    with owner.client() as client:
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", "{a}"))
        other = next(n for n in cluster.nodes if n.port != owner.port)
        with other.client() as o:
            other_id = o.execute_command("CLUSTER", "MYID")
        client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", other_id)
    try:
        result, steps = _run(tmp_path, "redis/cluster-health", "--redis", seed.url)
        assert result.code == 1, result.output  # a finding (a warning), not an outage
        assert "Slots left open by a resharding" in result.output
        opened = steps["grade"]["result"]["state"]["open_slots"]
        assert any(str(slot) in o["slot"] for o in opened), opened
    finally:
        with owner.client() as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")


# -- failover -----------------------------------------------------------------------------------------
def test_failover_through_sentinel_promotes_a_replica_and_the_old_primary_rejoins(replicated, tmp_path: Path):
    old = replicated.primary
    result, steps = _run(tmp_path, "redis/failover", *_sentinel_args(replicated), "--var", "max_offset_lag=0", "--yes")
    assert result.code == 0, result.output
    roles = _roles(replicated.servers)
    assert roles[old.port] == "slave"
    assert list(roles.values()).count("master") == 1
    new = steps["new_primary_sentinel"]["result"][0]["result"]
    assert roles[int(new[1])] == "master"
    assert steps["writable_sentinel"]["outcome"] == "ok"
    run_id = result.json()["run_id"]
    with next(s for s in replicated.servers if s.port == int(new[1])).client() as client:
        assert client.get(f"runbook:failover-probe:{run_id}") == "ok"
    _assert_converged(steps, "converged_sentinel", f"{old.host}:{old.port}", f"{new[0]}:{new[1]}")


def _assert_converged(steps: dict, step_id: str, old_primary: str, new_primary: str) -> None:
    """Both offsets were read after the failover and the old primary's caught up exactly (run with
    max_offset_lag=0: the until polled until one reading of both nodes was equal)."""
    assert steps[step_id.replace("converged", "offsets")]["outcome"] == "ok"
    converged = steps[step_id]
    assert converged["outcome"] == "ok", converged
    values = converged["result"]
    assert values["new_primary"] == new_primary
    assert isinstance(values["new_offset"], int) and isinstance(values["old_offset"], int), values
    assert values["new_offset"] > 0 and values["old_offset"] == values["new_offset"], values
    rows = {row["node"]: row for row in steps[step_id.replace("converged", "offsets")]["result"]}
    assert rows[old_primary]["result"]["role"] == "slave"
    assert rows[new_primary]["result"]["role"] == "master"


def test_failover_refused_when_the_only_replica_lags(tmp_path: Path):
    require_binary("redis-server")
    deployment = start_replicated(replicas=1, sentinels=1)
    try:
        replica = deployment.replicas[0]
        os.kill(replica.pid, signal.SIGSTOP)  # held: it answers nothing and falls behind until SIGCONT
        try:
            with deployment.primary.client() as client:
                client.set("written-while-the-replica-is-stopped", "x" * 1000)
            inventory = _inventory(tmp_path, deployment)
            result, steps = _run(
                tmp_path, "redis/failover", "--inventory", str(inventory), "--target", "cache", "--yes"
            )
            roles_primary = _roles([deployment.primary])
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        assert result.code == 1, result.output
        assert "Refused: no replica of" in result.output
        assert steps["readiness"]["outcome"] == "failed"
        assert "failover_sentinel" not in steps  # never reached the gate
        assert roles_primary[deployment.primary.port] == "master"
        evts = events(transcript_path(result))
        assert not of_type(evts, "approval.requested")
    finally:
        deployment.stop()


def test_failover_on_a_cluster_promotes_the_named_replica(cluster, tmp_path: Path):
    with cluster.nodes[0].client() as client:
        view = client.execute_command("CLUSTER", "NODES")
    replica_line = next(line for line in view.splitlines() if " slave " in line or ",slave " in line)
    address = replica_line.split()[1].split("@")[0]
    result, steps = _run(
        tmp_path,
        "redis/failover",
        "--redis",
        cluster.nodes[0].url,
        *("--var", f"replica={address}", "--var", "max_offset_lag=0", "--yes"),
    )
    assert result.code == 0, result.output
    port = int(address.rsplit(":", 1)[1])
    promoted = next(n for n in cluster.nodes if n.port == port)
    assert _roles([promoted])[port] == "master"
    # the probe went to the promoted node itself (its hash tag is in that shard), read back, then deleted
    written = steps["writable_cluster"]
    assert written["outcome"] == "ok" and written["result"][0]["node"] == address, written
    key = f"runbook:failover-probe:{steps['shape']['result']['probe_tag']}:{result.json()['run_id']}"
    with promoted.client() as client:
        assert client.execute_command("CLUSTER", "KEYSLOT", key) in _owned_slots(client)
        assert client.exists(key) == 0  # deleted after reading back
    assert steps["probe_read_cluster"]["result"][0]["result"] == "ok"
    assert steps["probe_delete_cluster"]["outcome"] == "ok"
    assert steps["probe_delete_cluster"]["result"][0]["result"] == 1
    old_primary = replica_line.split()[3]
    old_address = next(line.split()[1].split("@")[0] for line in view.splitlines() if line.startswith(old_primary))
    _assert_converged(steps, "converged_cluster", old_address, address)


def _owned_slots(client) -> set[int]:
    """Every slot the node a client talks to serves, from CLUSTER SHARDS/NODES as it says now."""
    myself = next(line for line in client.execute_command("CLUSTER", "NODES").splitlines() if "myself" in line)
    owned: set[int] = set()
    for part in myself.split()[8:]:
        if part.startswith("["):
            continue
        start, _, end = part.partition("-")
        owned.update(range(int(start), int(end or start) + 1))
    return owned


@pytest.mark.parametrize("kind", ["sentinel", "cluster"])
def test_failover_dry_run_changes_nothing_on_any_node(kind, tmp_path: Path, request):
    deployment = request.getfixturevalue("replicated" if kind == "sentinel" else "cluster")
    servers = deployment.servers if kind == "sentinel" else deployment.nodes
    before = _roles(servers)
    if kind == "sentinel":
        args = _sentinel_args(deployment)
    else:
        with deployment.nodes[0].client() as client:
            view = client.execute_command("CLUSTER", "NODES")
        replica = next(line for line in view.splitlines() if "slave" in line.split()[2]).split()[1].split("@")[0]
        args = ["--redis", deployment.nodes[0].url, "--var", f"replica={replica}"]
    keys_before = _keys(servers)
    result, steps = _run(tmp_path, "redis/failover", *args, "--dry-run")
    assert result.code == 0, result.output
    assert _roles(servers) == before
    assert _keys(servers) == keys_before  # no probe key written anywhere
    changing = [s for s in result.json()["steps"] if s["effect"] in ("write", "destructive")]
    assert changing and all(s["outcome"] == "predicted" for s in changing)
    probes = ["writable_sentinel"] if kind == "sentinel" else ["writable_cluster", "probe_delete_cluster"]
    assert all(steps[p]["outcome"] == "predicted" for p in probes)
    # the offsets are read once, not polled, and not graded: nothing failed over to converge
    assert steps[f"offsets_{kind}"]["outcome"] == "ok"
    assert steps[f"converged_{kind}"]["outcome"] == "ok"
    if kind == "cluster":
        assert steps["probe_read_cluster"]["outcome"] == "skipped"


def _keys(servers) -> dict[int, list[str]]:
    out = {}
    for server in servers:
        with server.client() as client:
            out[server.port] = sorted(client.keys("*"))
    return out
