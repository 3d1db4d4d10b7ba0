"""`on:` on redis steps, on real deployments: per-node results, a change gated once per node, dry-runs inert."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.sandbox.topologies import start_cluster, start_replicated
from tests.conftest import require_binary
from tests.integration.cli_support import events, of_type, runbook, transcript_path

ON_NODES = """\
id: test/on-nodes
title: On nodes
section: Test
description: Reads on every node, a change on each replica, a read of one named node.
params:
  one:
    type: string
    description: HOST:PORT of one node
steps:
  - id: repl
    name: Replication on every node
    redis:
      info: replication
      on: all
    register: repl
    expect:
      - that: every(repl, "value.outcome == 'ok'")
        message: a node did not answer
  - id: tune
    name: repl-timeout on each replica
    redis:
      command: [CONFIG, SET, repl-timeout, "61"]
      on: replicas
    register: tuned
    confirm: Set repl-timeout on {{ node.address }}?
  - id: one
    name: One named node
    redis:
      command: [ROLE]
      on: node
      node: "{{ one }}"
    register: role
"""

EACH_PRIMARY = """\
id: test/each-primary
title: Keys per shard
section: Test
description: DBSIZE of every shard's primary.
steps:
  - id: sizes
    name: Keys per shard
    redis:
      command: [DBSIZE]
      on: each primary
    register: sizes
"""


@pytest.fixture(scope="module")
def replicated():
    require_binary("redis-server")
    deployment = start_replicated(replicas=2, sentinels=1)
    yield deployment
    deployment.stop()


def _timeouts(deployment) -> dict[int, str]:
    out = {}
    for server in deployment.servers:
        with server.client() as client:
            out[server.port] = client.config_get("repl-timeout")["repl-timeout"]
    return out


def _run(tmp_path: Path, text: str, *args: str):
    procedure = tmp_path / "p.yaml"
    procedure.write_text(text)
    result = runbook("run", str(procedure), *args, "--json", "--transcripts-dir", str(tmp_path / "t"))
    return result, events(transcript_path(result))


def test_on_nodes_reads_each_node_and_changes_each_replica_with_its_own_gate(replicated, tmp_path: Path):
    before = _timeouts(replicated)
    assert set(before.values()) == {"60"}
    primary = replicated.primary
    one = replicated.replicas[1]
    result, evts = _run(tmp_path, ON_NODES, "--redis", primary.url, "--yes", "--var", f"one={one.host}:{one.port}")
    assert result.code == 0, result.output
    steps = {s["id"]: s for s in result.json()["steps"]}
    rows = steps["repl"]["result"]
    assert [r["role"] for r in rows] == ["primary", "replica", "replica"]
    assert all(r["outcome"] == "ok" and r["error"] is None for r in rows)
    assert rows[1]["result"]["master_link_status"] == "up"
    # the change ran once per replica, in order, each approved on its own
    after = _timeouts(replicated)
    assert after[primary.port] == "60"
    assert all(after[r.port] == "61" for r in replicated.replicas)
    requested = [e for e in of_type(evts, "approval.requested") if e["step"]["id"] == "tune"]
    assert [r["where"].split(" ")[0] for r in requested] == [f"{r.host}:{r.port}" for r in replicated.replicas]
    assert len([e for e in of_type(evts, "approval.given") if e["step"]["id"] == "tune"]) == 2
    (role_row,) = next(s for s in result.json()["steps"] if s["id"] == "one")["result"]
    assert role_row["node"] == f"{one.host}:{one.port}" and role_row["result"][0] == "slave"
    for server in replicated.replicas:  # leave the module's deployment as it was
        with server.client() as client:
            client.config_set("repl-timeout", "60")


def test_a_dry_run_changes_nothing_on_any_node(replicated, tmp_path: Path):
    one = replicated.replicas[0]
    result, _evts = _run(
        tmp_path, ON_NODES, "--redis", replicated.primary.url, "--dry-run", "--var", f"one={one.host}:{one.port}"
    )
    assert result.code == 0, result.output
    assert set(_timeouts(replicated).values()) == {"60"}
    tune = [s for s in result.json()["steps"] if s["id"] == "tune"]
    assert [s["outcome"] for s in tune] == ["predicted", "predicted"]


def test_a_node_not_in_the_deployment_is_an_error_naming_the_known_ones(replicated, tmp_path: Path):
    result, _ = _run(tmp_path, ON_NODES, "--redis", replicated.primary.url, "--yes", "--var", "one=10.9.9.9:1")
    assert result.code != 0
    assert "10.9.9.9:1: not a node of the deployment" in result.output
    for server in replicated.replicas:
        with server.client() as client:
            client.config_set("repl-timeout", "60")


def test_each_primary_of_a_cluster(tmp_path: Path):
    require_binary("redis-cli")
    cluster = start_cluster(primaries=3, replicas=0)
    try:
        total = 0
        for i in range(30):
            node = cluster.node_for_key(f"k{i}")
            with node.client() as client:
                client.set(f"k{i}", "v")
            total += 1
        result, _ = _run(tmp_path, EACH_PRIMARY, "--redis", cluster.nodes[0].url)
        assert result.code == 0, result.output
        rows = result.json()["steps"][0]["result"]
        assert len(rows) == 3 and {r["role"] for r in rows} == {"primary"}
        assert sum(r["result"] for r in rows) == total
    finally:
        cluster.stop()


def test_a_change_on_primary_of_a_cluster_runs_once_per_shard(tmp_path: Path):
    require_binary("redis-cli")
    cluster = start_cluster(primaries=3, replicas=0)
    try:
        text = (
            EACH_PRIMARY.replace("[DBSIZE]", "[CONFIG, SET, lazyfree-lazy-user-del, 'yes']")
            .replace("on: each primary", "on: primary")
            .replace("    register: sizes\n", "    register: sizes\n    confirm: On {{ node.address }}?\n")
        )
        result, evts = _run(tmp_path, text, "--redis", cluster.nodes[0].url, "--yes")
        assert result.code == 0, result.output
        rows = next(s for s in result.json()["steps"] if s["id"] == "sizes")
        assert len(of_type(evts, "approval.given")) == 3
        for node in cluster.nodes:
            with node.client() as client:
                assert client.config_get("lazyfree-lazy-user-del")["lazyfree-lazy-user-del"] == "yes"
        assert rows["outcome"] == "ok"
    finally:
        cluster.stop()
