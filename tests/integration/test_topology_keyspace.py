"""Keyspace procedures on a Redis Cluster: every primary scanned and merged, keys restored on their slot's owner."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from engine.sandbox.seed import seed_somabrain
from engine.sandbox.topologies import start_cluster
from tests.conftest import require_binary
from tests.integration.cli_support import runbook
from tests.integration.test_proc_backup import key_state


@pytest.fixture(scope="module")
def seeded_cluster():
    require_binary("redis-server")
    require_binary("redis-cli")
    cluster = start_cluster(primaries=3, replicas=0)
    client = redis.RedisCluster(host=cluster.nodes[0].host, port=cluster.nodes[0].port, decode_responses=True)
    try:
        summary = seed_somabrain(client)
        yield cluster, client, summary
    finally:
        client.close()
        cluster.stop()


def _run(cluster, tmp_path: Path, *args: str):
    result = runbook(
        "run", *args, "--redis", cluster.nodes[0].url, "--json", "--transcripts-dir", str(tmp_path / "t"), timeout=120
    )
    return result, {s["id"]: s for s in result.json()["steps"]}


def _per_node_counts(cluster) -> list[int]:
    counts = []
    for node in cluster.nodes:
        with node.client() as client:
            counts.append(client.dbsize())
    return counts


def test_audit_ttl_sees_every_shard(seeded_cluster, tmp_path: Path):
    cluster, _, summary = seeded_cluster
    assert all(n > 0 for n in _per_node_counts(cluster)), "the keyspace is spread over every shard"
    result, steps = _run(cluster, tmp_path, "redis/audit-ttl")
    assert result.code in (0, 1), result.output  # 1: the leaks are findings
    audit = steps["audit"]["result"]
    assert audit["scanned"] == summary.keys_total == sum(_per_node_counts(cluster))
    assert sorted(audit["sample"]) == sorted(summary.no_ttl_keys)


def test_tenant_export_and_restore_place_each_key_on_its_owner(seeded_cluster, tmp_path: Path):
    cluster, client, summary = seeded_cluster
    keys = sorted(client.scan_iter(match="tenant:acme:*", count=1000))
    assert len(keys) == summary.per_tenant["acme"]
    before = {k: v[:2] for k, v in key_state(client, "tenant:acme:*").items()}
    out = tmp_path / "exports"
    out.mkdir()
    result, steps = _run(cluster, tmp_path, "redis/backup-tenant", "--var", "tenant=acme", "--var", f"output={out}")
    assert result.code == 0, result.output
    export = steps["export"]["result"]
    assert export["key_count"] == len(keys)
    for key in keys:
        client.delete(key)
    result, _ = _run(
        cluster, tmp_path, "redis/restore-tenant", "--var", f"input={export['path']}", "--var", "tenant=acme", "--yes"
    )
    assert result.code == 0, result.output
    for key in keys:
        owner = cluster.node_for_key(key)
        with owner.client() as direct:
            assert direct.exists(key) == 1, key  # on the node that owns its slot, reachable without redirects
    assert {k: v[:2] for k, v in key_state(client, "tenant:acme:*").items()} == before  # type and value kept
