"""Keyspace procedures on a Redis Cluster: every primary scanned and merged, keys restored on their slot's owner.

The server-side (Lua) path runs on every primary in parallel, each script over its own node's keys, and
its merged figures are the ones a standalone server holding the same keys gives, and the ones the
client-side pipelined path gives on the same cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.adapters.redis import RedisAdapter
from engine.adapters.redis_routing import RoutedRedisAdapter
from engine.errors import ActionFailed
from engine.keyspace import operations, server_side, small_pages
from engine.keyspace.pages import scan_pages
from engine.sandbox import RedisServer, seed_bulk
from engine.sandbox.seed import seed_somabrain
from engine.sandbox.topologies import start_cluster
from engine.targets import RedisEndpoint
from tests.conftest import require_binary
from tests.integration.cli_support import events, of_type, runbook
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


# -- the server-side path, per primary ------------------------------------------------------------
BULK_KEYS = 20_000  # enough for many batches per primary; the correctness, not the speed, is tested here


class _Quiet:
    def advance(self, n: int) -> None:
        pass


@pytest.fixture(scope="module")
def twins():
    """The same seeded keyspace on a 3-primary cluster and on one standalone server."""
    require_binary("redis-server")
    require_binary("redis-cli")
    cluster = start_cluster(primaries=3, replicas=0)
    try:
        single = RedisServer.start()
    except BaseException:
        cluster.stop()
        raise
    client = redis.RedisCluster(host=cluster.nodes[0].host, port=cluster.nodes[0].port, decode_responses=True)
    try:
        for target in (client, single.client()):
            seed_somabrain(target)
            seed_bulk(target, BULK_KEYS, tenants=25)
        yield cluster, single
    finally:
        client.close()
        single.stop()
        cluster.stop()


def _routed(host: str, port: int, **endpoint) -> RoutedRedisAdapter:
    adapter = RoutedRedisAdapter(RedisEndpoint(host, port, **endpoint), allow_mutation=False)
    adapter.discover()
    return adapter


def _eval_ro_calls(cluster) -> dict[int, int]:
    calls = {}
    for node in cluster.nodes:
        with node.client() as client:
            stats = client.info("commandstats")  # the first call sends the script's body, the others its SHA1
            calls[node.port] = sum(
                int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("eval_ro", "evalsha_ro")
            )
    return calls


def _without_seconds(report):
    """TTLs of the biggest keys tick down between runs; everything else must be identical."""
    for rows in report["biggest"].values():
        for row in rows:
            row.pop("ttl", None)
    return report


def _cli(url: str, procedure: str, tmp_path: Path, name: str):
    result = runbook("run", procedure, "--redis", url, "--json", "--transcripts-dir", str(tmp_path / name))
    assert result.code in (0, 1), result.output  # 1: keys without a TTL are findings
    data = result.json()
    step = next(s for s in data["steps"] if s["result"] and "scanned" in s["result"])
    outputs = [e["output"] for e in of_type(events(data["transcript"]), "step.output")]
    return step["result"], next(o for o in outputs if "method:" in o)


def test_audit_and_memory_report_run_server_side_on_every_primary_and_equal_standalone(twins, tmp_path: Path):
    cluster, single = twins
    before = _eval_ro_calls(cluster)
    audit, method = _cli(cluster.nodes[0].url, "redis/audit-ttl", tmp_path, "c-audit")
    after = _eval_ro_calls(cluster)
    assert "server-side (scripts allowed;" in method and "on each of the 3 primaries in parallel" in method, method
    assert all(after[port] - before[port] > 1 for port in before), (before, after)  # batches on every primary
    alone_adapter = _routed(single.host, single.port)
    try:
        alone = server_side.audit_ttl(alone_adapter, "*", sample=20, progress=_Quiet())
        standalone = server_side.memory_report(alone_adapter, "*", top=10, progress=_Quiet())
    finally:
        alone_adapter.close()
    assert audit["scanned"] == alone["scanned"] > BULK_KEYS
    assert {k: audit[k] for k in ("scanned", "without_ttl", "by_tenant")} == {
        k: alone[k] for k in ("scanned", "without_ttl", "by_tenant")
    }
    with single.client() as direct:
        leaks = {k for k in direct.scan_iter(count=1000) if direct.ttl(k) == -1}
    assert len(audit["sample"]) == 20 and set(audit["sample"]) <= leaks

    report, method = _cli(cluster.nodes[0].url, "redis/memory-report", tmp_path, "c-memory")
    assert "server-side" in method and "on each of the 3 primaries in parallel" in method, method
    assert report["scanned"] == standalone["scanned"]
    counts = {name: row["keys"] for name, row in report["by_type"].items()}
    assert counts == {name: row["keys"] for name, row in standalone["by_type"].items()}
    tenants = {name: row["keys"] for name, row in report["by_tenant"].items()}
    assert tenants == {name: row["keys"] for name, row in standalone["by_tenant"].items()}
    # the biggest keys are the same keys; a cluster node stores each key with its slot's bookkeeping,
    # which MEMORY USAGE counts, so the cluster's bytes are the standalone's plus that, never less
    assert {t: [r["key"] for r in rows] for t, rows in report["biggest"].items()} == {
        t: [r["key"] for r in rows] for t, rows in standalone["biggest"].items()
    }
    assert report["total_bytes"] >= standalone["total_bytes"]


def test_per_primary_scripts_give_what_the_client_side_path_gives_on_the_cluster(twins):
    cluster, _ = twins
    adapter = _routed(cluster.nodes[0].host, cluster.nodes[0].port)
    try:
        assert len(adapter.scan_nodes()) == 3 and server_side.available(adapter)
        assert adapter.key_count() == sum(_per_node_counts(cluster))  # the progress line's total: every shard
        before = _eval_ro_calls(cluster)
        pacer = server_side.Pacer(floor=100, ceiling=500)
        fast = server_side.audit_ttl(adapter, "*", sample=10, progress=_Quiet(), start=100, pacer=pacer)
        calls = sum(_eval_ro_calls(cluster).values()) - sum(before.values())
        plain = operations.audit_ttl(adapter, scan_pages(adapter, "*"), sample=10, progress=_Quiet())
        assert {k: fast[k] for k in ("scanned", "without_ttl", "by_tenant")} == {
            k: plain[k] for k in ("scanned", "without_ttl", "by_tenant")
        }
        # the summary adds up every primary's batches: what really reached the servers (a call may ask for
        # fewer keys than the floor when its own clock stopped it, never more than the ceiling)
        assert pacer.calls == calls and 1 <= pacer.smallest <= pacer.largest <= 500
        fast_mem = server_side.memory_report(adapter, "tenant:*", top=5, progress=_Quiet(), start=100)
        plain_mem = operations.memory_report(adapter, scan_pages(adapter, "tenant:*"), top=5, progress=_Quiet())
        assert _without_seconds(fast_mem) == _without_seconds(plain_mem)
    finally:
        adapter.close()


def _scan_calls(cluster) -> dict[int, int]:
    calls = {}
    for node in cluster.nodes:
        with node.client() as client:
            calls[node.port] = int(client.info("commandstats").get("cmdstat_scan", {}).get("calls", 0))
    return calls


def test_small_pages_walk_every_primary_and_give_what_the_client_side_path_gives(twins):
    cluster, _ = twins
    adapter = _routed(cluster.nodes[0].host, cluster.nodes[0].port)
    try:
        plain = operations.audit_ttl(adapter, scan_pages(adapter, "*"), sample=10, progress=_Quiet())
        before = _scan_calls(cluster)
        walked = small_pages.Walked()
        small = small_pages.audit_ttl(adapter, "*", sample=10, progress=_Quiet(), walked=walked)
        after = _scan_calls(cluster)
        assert {k: small[k] for k in ("scanned", "without_ttl", "by_tenant")} == {
            k: plain[k] for k in ("scanned", "without_ttl", "by_tenant")
        }
        # SCAN COUNT 10 on each primary over its own keys: about a tenth of its keys in SCANs, every one
        counts = dict(zip((n.port for n in cluster.nodes), _per_node_counts(cluster), strict=True))
        for port, keys in counts.items():
            assert keys / 10 * 0.5 <= after[port] - before[port] <= keys / 10 * 2 + 1, (port, keys)
        assert walked.keys == small["scanned"] == sum(counts.values())
        plain_mem = operations.memory_report(adapter, scan_pages(adapter, "tenant:*"), top=5, progress=_Quiet())
        small_mem = small_pages.memory_report(
            adapter, "tenant:*", top=5, progress=_Quiet(), walked=small_pages.Walked()
        )
        assert _without_seconds(small_mem) == _without_seconds(plain_mem)
    finally:
        adapter.close()


def test_a_primary_that_refuses_scripts_sends_the_whole_scan_client_side(twins, tmp_path: Path):
    cluster, single = twins
    refusing = cluster.nodes[1]
    for node in cluster.nodes:
        with node.client() as client:
            rules = ["-@scripting"] if node is refusing else []
            client.execute_command("ACL", "SETUSER", "half", "on", ">half-pw", "~*", "&*", "+@all", *rules)
    adapter = _routed(cluster.nodes[0].host, cluster.nodes[0].port, username="half", password="half-pw")
    try:
        assert not server_side.available(adapter)
    finally:
        adapter.close()
    result = runbook(
        "run",
        "redis/audit-ttl",
        "--redis",
        f"redis://half@{cluster.nodes[0].host}:{cluster.nodes[0].port}/0",
        "--json",
        "--transcripts-dir",
        str(tmp_path),
        env={"REDISCLI_AUTH": "half-pw"},
    )
    assert result.code in (0, 1), result.output
    audit = next(s for s in result.json()["steps"] if s["result"] and "without_ttl" in s["result"])["result"]
    outputs = [e["output"] for e in of_type(events(result.json()["transcript"]), "step.output")]
    assert any("client-side" in o and "scripts refused" in o and "3 primaries in parallel" in o for o in outputs)
    with single.client() as direct:
        assert audit["scanned"] == direct.dbsize()
        assert audit["without_ttl"] == sum(1 for k in direct.scan_iter(count=1000) if direct.ttl(k) == -1)


def test_a_failing_primary_ends_the_scan_and_its_error_reaches_the_caller(twins):
    cluster, _ = twins
    adapter = _routed(cluster.nodes[0].host, cluster.nodes[0].port)
    failing = adapter.scan_nodes()[1]
    threads = threading.active_count()
    seen: list[int] = []

    def work(node: RedisAdapter) -> Iterator[int]:
        if node is failing:
            raise ActionFailed("this primary went away")
        for page in RedisAdapter.scan(node, None, 10):  # this node's own keys
            yield len(page)

    try:
        with pytest.raises(ActionFailed, match="went away"):
            for count in adapter.each_scan_node(work):
                seen.append(count)
    finally:
        adapter.close()
    assert threading.active_count() == threads  # every worker has ended with the scan
    assert sum(seen) < sum(_per_node_counts(cluster))  # no silent partial result passed for the whole
