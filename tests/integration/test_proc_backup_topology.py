"""redis/backup-snapshot and redis/backup-full on a primary with replicas: the snapshot is taken on a replica
in sync (the primary does not fork), on the primary when asked or when no replica is in sync; end to end on
real redis-server processes."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from engine.sandbox.seed import seed_somabrain
from engine.sandbox.topologies import start_cluster, start_replicated
from tests.conftest import require_binary
from tests.integration.cli_support import CliResult, events, of_type, runbook, transcript_path


@pytest.fixture
def replicated():
    require_binary("redis-server")
    deployment = start_replicated(replicas=2, sentinels=0)
    with deployment.primary.client() as client:
        seed_somabrain(client)
        offset = client.info("replication")["master_repl_offset"]
    for replica in deployment.replicas:  # held until the seeded keys reached every replica
        with replica.client() as client:
            while client.info("replication")["slave_repl_offset"] < offset:
                pass
    yield deployment
    deployment.stop()


def _address(server) -> str:
    return f"{server.host}:{server.port}"


def _run(tmp_path: Path, procedure: str, *args: str) -> CliResult:
    return runbook("run", procedure, *args, "--json", "--transcripts-dir", str(tmp_path / "transcripts"), timeout=180)


def _steps(result: CliResult) -> dict[str, dict]:
    return {s["id"]: s for s in result.json()["steps"]}


def _lastsaves(servers) -> dict[str, int]:
    out = {}
    for server in servers:
        with server.client() as client:
            out[_address(server)] = int(client.lastsave().timestamp())
    return out


def _stat(server, field: str) -> int:
    with server.client() as client:
        return int(client.info("persistence" if field.startswith("rdb_") else "stats")[field])


def test_snapshot_is_taken_on_a_replica_in_sync_and_the_primary_does_not_fork(replicated, tmp_path: Path):
    primary = replicated.primary
    before = _lastsaves(replicated.servers)
    primary_saves = _stat(primary, "rdb_saves")

    result = _run(tmp_path, "redis/backup-snapshot", "--redis", primary.url, "--yes")

    assert result.code == 0, result.output
    steps = _steps(result)
    choice = steps["choose"]["result"]
    replicas = {_address(r): r for r in replicated.replicas}
    assert choice["role"] == "replica" and choice["node"] in replicas, choice
    chosen = replicas[choice["node"]]
    assert f"snapshot on replica {choice['node']}: replica in sync (link up" in result.output
    assert f"the primary {_address(primary)} does not fork" in result.output
    after = _lastsaves(replicated.servers)
    assert after[choice["node"]] > before[choice["node"]]  # the replica saved
    assert after[_address(primary)] == before[_address(primary)]  # the primary did not
    assert _stat(primary, "rdb_saves") == primary_saves
    other = next(a for a in replicas if a != choice["node"])
    assert after[other] == before[other]
    # the file verified is the chosen replica's own dump, in its own dir
    rdb = chosen.directory / "dump.rdb"
    assert steps["where"]["result"]["rdb_path"] == str(rdb)
    assert steps["size-local"]["result"]["exists"] and steps["size-local"]["result"]["size"] == rdb.stat().st_size
    started = next(e for e in of_type(events(transcript_path(result)), "step.started") if e["step"]["id"] == "bgsave")
    assert started["where"] == f"redis://{choice['node']}/0" and started["command"] == "BGSAVE SCHEDULE"
    check = subprocess.run([require_binary("redis-check-rdb"), str(rdb)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_snapshot_on_the_primary_when_asked(replicated, tmp_path: Path):
    primary = replicated.primary
    before = _lastsaves(replicated.servers)

    result = _run(tmp_path, "redis/backup-snapshot", "--redis", primary.url, "--var", "use_primary=true", "--yes")

    assert result.code == 0, result.output
    choice = _steps(result)["choose"]["result"]
    assert choice == {**choice, "role": "primary", "node": _address(primary)}
    assert "use_primary=true" in result.output
    after = _lastsaves(replicated.servers)
    assert after[_address(primary)] > before[_address(primary)]
    assert all(after[_address(r)] == before[_address(r)] for r in replicated.replicas)
    assert (primary.directory / "dump.rdb").exists()


def test_snapshot_on_the_primary_when_no_replica_is_in_sync(tmp_path: Path):
    require_binary("redis-server")
    deployment = start_replicated(replicas=1, sentinels=0)
    try:
        primary, replica = deployment.primary, deployment.replicas[0]
        inventory = tmp_path / "inventory.yaml"
        inventory.write_text(
            "environments:\n  prod:\n    targets:\n      cache:\n        redis:\n"
            f"          url: {primary.url}\n          timeout: 1s\n"
        )
        before = _lastsaves(deployment.servers)
        os.kill(replica.pid, signal.SIGSTOP)  # held until the run is over: it answers nothing
        try:
            result = _run(
                tmp_path, "redis/backup-snapshot", "--inventory", str(inventory), "--target", "cache", "--yes"
            )
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        assert result.code == 0, result.output
        choice = _steps(result)["choose"]["result"]
        assert choice["role"] == "primary" and choice["node"] == _address(primary), choice
        assert f"no replica in sync (link up, within 1048576 bytes and 30s); not answering: {_address(replica)}" in (
            result.output
        )
        after = _lastsaves(deployment.servers)
        assert after[_address(primary)] > before[_address(primary)]
        assert after[_address(replica)] == before[_address(replica)]
    finally:
        deployment.stop()


def test_snapshot_dry_run_on_the_replica_changes_nothing(replicated, tmp_path: Path):
    saves = {_address(s): _stat(s, "rdb_saves") for s in replicated.servers}
    result = _run(tmp_path, "redis/backup-snapshot", "--redis", replicated.primary.url, "--dry-run")
    assert result.code == 0, result.output
    steps = _steps(result)
    assert steps["choose"]["result"]["role"] == "replica"
    assert steps["bgsave"]["outcome"] == "predicted"
    assert {_address(s): _stat(s, "rdb_saves") for s in replicated.servers} == saves


def test_backup_full_streams_from_a_replica_in_sync(replicated, tmp_path: Path):
    primary = replicated.primary
    out = tmp_path / "backup"
    full_syncs = {_address(s): _stat(s, "sync_full") for s in replicated.servers}

    result = _run(tmp_path, "redis/backup-full", "--redis", primary.url, "--var", f"output_dir={out}", "--yes")

    assert result.code == 0, result.output
    steps = _steps(result)
    choice = steps["choose"]["result"]
    assert choice["role"] == "replica" and choice["node"] in {_address(r) for r in replicated.replicas}, choice
    assert f"dump from replica {choice['node']}: replica in sync" in result.output
    dump = steps["download"]["result"]
    assert dump["source"].split("://", 1)[1].startswith(choice["node"])
    after = {_address(s): _stat(s, "sync_full") for s in replicated.servers}
    assert after[choice["node"]] == full_syncs[choice["node"]] + 1  # the replica served the full sync
    assert after[_address(primary)] == full_syncs[_address(primary)]  # the primary did not fork for it
    assert steps["check"]["result"]["ok"] and steps["check"]["result"]["keys"] >= 91
    assert Path(dump["path"]).parent == out


def test_backup_full_from_the_primary_when_asked(replicated, tmp_path: Path):
    primary = replicated.primary
    out = tmp_path / "backup"
    before = _stat(primary, "sync_full")
    result = _run(
        tmp_path, "redis/backup-full", "--redis", primary.url, "--var", f"output_dir={out}",
        "--var", "use_primary=true", "--yes",
    )  # fmt: skip
    assert result.code == 0, result.output
    assert _steps(result)["choose"]["result"]["node"] == _address(primary)
    assert _stat(primary, "sync_full") == before + 1


def test_snapshot_through_sentinel_uses_a_replica(tmp_path: Path):
    require_binary("redis-server")
    deployment = start_replicated(replicas=1, sentinels=1)
    try:
        replica = deployment.replicas[0]
        before = _lastsaves(deployment.servers)
        args = [a for h, p in deployment.sentinel_addresses for a in ("--sentinel", f"{h}:{p}")]
        result = _run(tmp_path, "redis/backup-snapshot", *args, "--master", deployment.master_name, "--yes")
        assert result.code == 0, result.output
        steps = _steps(result)
        assert steps["choose"]["result"]["node"] == _address(replica)
        after = _lastsaves(deployment.servers)
        assert after[_address(replica)] > before[_address(replica)]
        assert after[_address(deployment.primary)] == before[_address(deployment.primary)]
        assert steps["size-local"]["result"]["size"] == (replica.directory / "dump.rdb").stat().st_size
    finally:
        deployment.stop()


def test_snapshot_on_a_cluster_is_the_target_node_and_says_it_is_one_shard(tmp_path: Path):
    require_binary("redis-cli")
    cluster = start_cluster(primaries=3, replicas=0)
    try:
        seed = cluster.nodes[0]
        others = [n for n in cluster.nodes if n.port != seed.port]
        before = _lastsaves(cluster.nodes)
        result = _run(tmp_path, "redis/backup-snapshot", "--redis", seed.url, "--yes")
        assert result.code == 0, result.output
        choice = _steps(result)["choose"]["result"]
        assert choice["node"] == "" and choice["role"] == "primary"
        assert "holds only its own shard of 3; run this on each shard" in result.output
        after = _lastsaves(cluster.nodes)
        assert after[_address(seed)] > before[_address(seed)]
        assert all(after[_address(n)] == before[_address(n)] for n in others)
    finally:
        cluster.stop()
