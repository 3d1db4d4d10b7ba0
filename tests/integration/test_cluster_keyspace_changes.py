"""The keyspace procedures that change keys, on a Redis Cluster: a TTL by pattern, a tenant's deletion and the
wm-* keys reach every shard (each key on its slot's owner), and what they must not touch stays as it was.

Every test reads the truth from every primary itself (not through the engine) before and after.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.sandbox import RedisCluster
from engine.sandbox.seed import SeedSummary, seed_somabrain
from engine.sandbox.topologies import start_cluster
from tests.conftest import require_binary
from tests.integration.cli_support import runbook


@pytest.fixture
def cluster() -> Iterator[tuple[RedisCluster, SeedSummary]]:
    """A fresh seeded 3-primary cluster per test: each test changes keys."""
    require_binary("redis-server")
    require_binary("redis-cli")
    deployment = start_cluster(primaries=3, replicas=0)
    client = redis.RedisCluster(host=deployment.nodes[0].host, port=deployment.nodes[0].port, decode_responses=True)
    try:
        yield deployment, seed_somabrain(client)
    finally:
        client.close()
        deployment.stop()


def _run(deployment: RedisCluster, tmp_path: Path, *args: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    result = runbook(
        "run", *args, "--redis", deployment.nodes[0].url, "--json", "--transcripts-dir", str(tmp_path / "t"),
        timeout=180,
    )  # fmt: skip
    return result, {s["id"]: s for s in result.json()["steps"]}


def _ttls(deployment: RedisCluster, match: str = "*") -> dict[str, tuple[int, int]]:
    """key -> (TTL, index of the node holding it), read from every primary directly."""
    out = {}
    for index, node in enumerate(deployment.nodes):
        with node.client() as client:
            for key in client.scan_iter(match=match, count=1000):
                out[key] = (client.ttl(key), index)
    return out


def test_a_ttl_by_pattern_reaches_the_keys_of_every_shard_and_no_other(cluster, tmp_path: Path):
    deployment, _ = cluster
    before = _ttls(deployment)
    targets = {k for k, (ttl, _) in before.items() if k.startswith("tenant:acme:") and ttl == -1}
    assert targets and len({before[k][1] for k in before if k.startswith("tenant:acme:")}) > 1, "acme spans shards"

    result, steps = _run(
        deployment, tmp_path, "redis/troubleshoot-memory", "--var", "ttl_pattern=tenant:acme:*", "--var", "ttl=2h",
        "--yes",
    )  # fmt: skip

    assert result.code == 0, result.output
    after = _ttls(deployment)
    assert set(after) == set(before)  # nothing deleted
    for key in targets:
        assert 7000 < after[key][0] <= 7200, key
    others = {k for k, (ttl, _) in before.items() if ttl == -1 and k not in targets}
    assert others and all(after[k][0] == -1 for k in others), "other tenants' keys without TTL keep none"
    assert steps["set-ttl"]["outcome"] == "ok"


def test_deleting_an_old_tenant_deletes_it_on_every_shard_and_keeps_the_others(cluster, tmp_path: Path):
    deployment, summary = cluster
    before = _ttls(deployment)
    globex = {k for k in before if k.startswith("tenant:globex:")}
    assert len(globex) == summary.per_tenant["globex"] and len({before[k][1] for k in globex}) > 1

    result, steps = _run(deployment, tmp_path, "redis/troubleshoot-memory", "--var", "old_tenant=globex", "--yes")

    assert result.code == 0, result.output
    after = _ttls(deployment)
    assert not any(k.startswith("tenant:globex:") for k in after)
    assert set(after) == set(before) - globex
    assert all(after[k][0] == -1 for k, (ttl, _) in before.items() if ttl == -1 and k not in globex)
    assert steps["delete-tenant"]["outcome"] == "ok"


def test_wm_list_extend_and_clear_on_a_cluster(cluster, tmp_path: Path):
    deployment, _ = cluster
    wm = _ttls(deployment, "tenant:*:wm:*")
    assert len({node for _, node in wm.values()}) > 1, "the wm keys span shards"

    listed, steps = _run(deployment, tmp_path, "redis/wm-list")
    assert listed.code == 0, listed.output
    listing = steps["list"]["result"]
    assert listing["count"] == len(wm) and listing["truncated"] is False
    assert {row["key"] for rows in listing["tenants"].values() for row in rows} == set(wm)

    active = "tenant:initech:wm:active"
    extended, _ = _run(deployment, tmp_path, "redis/wm-extend", "--var", "tenant=initech", "--var", "ttl=2h", "--yes")
    assert extended.code == 0, extended.output
    with deployment.nodes[wm[active][1]].client() as owner:
        assert 7000 < owner.ttl(active) <= 7200

    cleared, _ = _run(deployment, tmp_path, "redis/wm-clear", "--var", "tenant=initech", "--yes")
    assert cleared.code == 0, cleared.output
    after = _ttls(deployment, "tenant:*:wm:*")
    assert set(after) == set(wm) - {active}
