"""The adapter owns the deployment: writes reach the primary, key commands the slot owner, on real processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.adapters.redis_routing import RoutedRedisAdapter
from engine.errors import MutationRefused
from engine.sandbox.redis_server import free_port
from engine.sandbox.topologies import start_cluster, start_replicated
from engine.targets import RedisEndpoint
from tests.conftest import require_binary
from tests.integration.cli_support import events, of_type, runbook, transcript_path

SET_KEY = """\
id: test/set-key
title: Set one key
section: Test
description: Sets one key, as an operator's write step would.
steps:
  - id: set
    name: Set the key
    redis:
      command: [SET, "topo:key", "v1"]
    confirm: Set topo:key?
"""


@pytest.fixture(scope="module")
def replicated():
    require_binary("redis-server")
    deployment = start_replicated(replicas=1, sentinels=3)
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def cluster():
    require_binary("redis-server")
    require_binary("redis-cli")
    deployment = start_cluster(primaries=3, replicas=0)
    yield deployment
    deployment.stop()


def _adapter(host: str, port: int, *, allow_mutation: bool = True) -> tuple[RoutedRedisAdapter, list[dict]]:
    recorded: list[dict] = []
    adapter = RoutedRedisAdapter(RedisEndpoint(host, port), allow_mutation=allow_mutation, record=recorded.append)
    adapter.discover()
    return adapter, recorded


def test_a_write_aimed_at_a_replica_uses_the_primary_and_says_so(replicated, tmp_path: Path):
    procedure = tmp_path / "set.yaml"
    procedure.write_text(SET_KEY)
    replica = replicated.replicas[0]
    result = runbook("run", str(procedure), "--redis", replica.url, "--yes", "--transcripts-dir", str(tmp_path / "t"))
    assert result.code == 0, result.output
    assert "READONLY" not in result.output
    primary_address = f"{replicated.primary.host}:{replicated.primary.port}"
    assert f"used primary {primary_address}" in result.stderr  # said to the operator, not only recorded
    with replicated.primary.client() as client:
        assert client.get("topo:key") == "v1"
    evts = events(transcript_path(result))
    discovered = of_type(evts, "topology.discovered")[0]["topology"]
    assert discovered["kind"] == "replicated"
    assert {n["role"] for n in discovered["nodes"]} == {"primary", "replica"}
    changed = of_type(evts, "topology.changed")
    primary = f"{replicated.primary.host}:{replicated.primary.port}"
    assert any(
        "target resolved to a replica" in e["reason"] and f"used primary {primary}" in e["reason"] for e in changed
    )


def test_a_stale_view_meets_readonly_and_the_write_goes_to_the_primary(replicated):
    """The topology known says the node written to is a primary (as before a failover): READONLY comes back,
    the adapter asks again, and the write lands on the real primary."""
    replica = replicated.replicas[0]
    adapter, recorded = _adapter(replica.host, replica.port)
    try:
        adapter.topology = None  # what a run knew before the deployment changed under it
        assert adapter.call(["SET", "topo:stale", "v2"]) in (True, "OK")
        with replicated.primary.client() as client:
            assert client.get("topo:stale") == "v2"
        assert any(e.get("reason", "").startswith("READONLY") for e in recorded)
        assert any("used primary" in e.get("reason", "") for e in recorded)
    finally:
        adapter.close()


def test_sentinel_target_runs_on_the_primary_and_records_quorum(replicated, tmp_path: Path):
    args = [a for s in replicated.sentinel_addresses for a in ("--sentinel", f"{s[0]}:{s[1]}")]
    result = runbook(
        "run", "redis/health-check", *args, "--master", replicated.master_name, "--transcripts-dir", str(tmp_path)
    )
    assert result.code == 0, result.output
    evts = events(transcript_path(result))
    topology = of_type(evts, "topology.discovered")[0]["topology"]
    assert topology["kind"] == "sentinel"
    assert topology["sentinel"]["quorum_ok"] is True and topology["sentinel"]["quorum"] == 2
    assert len(topology["sentinel"]["answered"]) == 3
    primary = f"{replicated.primary.host}:{replicated.primary.port}"
    assert [n["address"] for n in topology["nodes"] if n["role"] == "primary"] == [primary]
    started = of_type(evts, "step.started")[0]
    assert primary in started["where"]


def test_sentinel_in_the_inventory_with_its_own_password(replicated, tmp_path: Path):
    inventory = tmp_path / "inventory.yaml"
    addresses = ", ".join(f'"{h}:{p}"' for h, p in replicated.sentinel_addresses)
    inventory.write_text(
        "environments:\n  prod:\n    targets:\n      cache:\n        redis:\n"
        f"          sentinel: {{addresses: [{addresses}], master: {replicated.master_name}, "
        "password_env: SENTINEL_PW}\n"
    )
    result = runbook(
        "run",
        "redis/health-check",
        "--inventory",
        str(inventory),
        "--target",
        "cache",
        "--transcripts-dir",
        str(tmp_path / "t"),
        env={"SENTINEL_PW": "not-needed-here-s3cret"},
    )
    assert result.code == 0, result.output
    path = transcript_path(result)
    assert "not-needed-here-s3cret" not in path.read_text()
    assert of_type(events(path), "topology.discovered")[0]["topology"]["kind"] == "sentinel"


def test_an_unreachable_deployment_is_recorded_and_the_run_goes_on(tmp_path: Path):
    port = free_port()
    result = runbook(
        "run", "redis/health-check", "--redis", f"redis://127.0.0.1:{port}", "--transcripts-dir", str(tmp_path)
    )
    evts = events(transcript_path(result))
    found = of_type(evts, "topology.discovered")[0]
    assert "error" in found and "topology" not in found
    assert of_type(evts, "step.started"), "the procedure ran its steps after discovery failed"
    assert result.code == 4  # the procedure's own first step found the server down, as before


def _owner(cluster, key: str):
    return cluster.node_for_key(key)


def _node_id(server) -> str:
    with server.client() as client:
        return client.execute_command("CLUSTER", "MYID")


def test_key_commands_go_to_the_slot_owner_on_a_cluster(cluster):
    seed = cluster.nodes[0]
    adapter, _ = _adapter(seed.host, seed.port)
    try:
        keys = [f"tenant:t{i}:cache:1" for i in range(12)]
        for key in keys:
            assert adapter.call(["SET", key, "x"]) in (True, "OK")
        owners = {_owner(cluster, k).port for k in keys}
        assert len(owners) > 1, "the keys spread over several shards"
        for key in keys:
            with _owner(cluster, key).client() as client:
                assert client.get(key) == "x"
        scanned = sorted(k for page in adapter.scan("tenant:t*") for k in page)
        assert scanned == sorted(keys)  # every primary scanned, merged
        replies = adapter.pipeline_calls([["GET", k] for k in keys])
        assert replies == [b"x"] * len(keys) or replies == ["x"] * len(keys)
    finally:
        adapter.close()


def test_moved_is_followed_after_a_resharding_and_recorded(cluster):
    """One slot moves to another shard after the run learnt the topology: MOVED, refresh, the right node."""
    seed = cluster.nodes[0]
    adapter, recorded = _adapter(seed.host, seed.port)
    key = "reshard:{moving}"
    source = _owner(cluster, key)
    dest = next(n for n in cluster.nodes if n.port != source.port)
    try:
        assert adapter.call(["SET", key, "before"]) in (True, "OK")
        with source.client() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        _move_slot(cluster, slot, key, source, dest)  # held: the slot stays moved until the test ends
        assert adapter.call(["GET", key]) == "before"  # the adapter still thinks `source` owns it
        assert adapter.call(["SET", key, "after"]) in (True, "OK")
        with dest.client() as client:
            assert client.get(key) == "after"
        moved = [e for e in recorded if e.get("reason", "").startswith("MOVED")]
        assert moved and "topology" in moved[0]
        owner = next(n for n in moved[0]["topology"]["nodes"] if any(a <= slot <= b for a, b in n.get("slots", [])))
        assert owner["address"] == f"{dest.host}:{dest.port}"
    finally:
        adapter.close()


def test_ask_is_followed_with_asking_while_a_slot_migrates(cluster):
    seed = cluster.nodes[0]
    adapter, recorded = _adapter(seed.host, seed.port)
    key = "migrating:{ask}"
    source = _owner(cluster, key)
    dest = next(n for n in cluster.nodes if n.port != source.port)
    with source.client() as client:
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
    try:
        assert adapter.call(["SET", key, "v"]) in (True, "OK")
        with dest.client() as d:
            d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(source))
        with source.client() as s:
            s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(dest))
            s.execute_command("MIGRATE", dest.host, dest.port, key, 0, 5000)
        # held: the slot stays half-migrated; the key now lives only on `dest`, which needs ASKING
        assert adapter.call(["GET", key]) == "v"
        assert any(e.get("reason", "").startswith("ASK") for e in recorded)
    finally:
        for node in (source, dest):
            with node.client() as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", _node_id(dest))
        adapter.close()


def test_a_dry_run_cluster_adapter_sends_reads_and_refuses_writes(cluster):
    seed = cluster.nodes[0]
    adapter, _ = _adapter(seed.host, seed.port, allow_mutation=False)
    try:
        with pytest.raises(MutationRefused):
            adapter.call(["SET", "dry:key", "x"])
        assert adapter.call(["CLUSTER", "INFO"])
    finally:
        adapter.close()


def _move_slot(cluster, slot: int, key: str, source, dest) -> None:
    """What `redis-cli --cluster reshard` does for one slot: IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE."""
    source_id, dest_id = _node_id(source), _node_id(dest)
    with dest.client() as d:
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    with source.client() as s:
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dest_id)
        s.execute_command("MIGRATE", dest.host, dest.port, key, 0, 5000)
    for node in cluster.nodes:
        with node.client() as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dest_id)


def test_sentinels_that_name_no_primary_are_an_unreachable_target_not_a_data_node(tmp_path: Path, redis_server):
    sentinel_like = redis_server()  # answers, but knows no master: SENTINEL is not even a command here
    result = runbook(
        "run",
        "redis/health-check",
        "--sentinel",
        f"{sentinel_like.host}:{sentinel_like.port}",
        "--master",
        "nobody",
        "--transcripts-dir",
        str(tmp_path),
    )
    assert result.code == 4, result.output
    evts = events(transcript_path(result))
    assert "error" in of_type(evts, "topology.discovered")[0]
    assert "no primary for 'nobody'" in result.output
