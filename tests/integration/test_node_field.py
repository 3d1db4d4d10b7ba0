"""`node:` without `on:` on redis steps and on `rdb: download`: the step runs on that one node of the deployment
and keeps its usual result (not per-node rows); empty means where the target points. Real redis-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.sandbox.topologies import start_replicated
from engine.steps.redis_step import summary
from tests.conftest import require_binary
from tests.integration.cli_support import events, of_type, runbook, transcript_path

ONE_NODE = """\
id: test/one-node
title: One node
section: Test
description: A read and a change on one named node, results in their usual shape.
params:
  at:
    type: string
    default: ""
    description: HOST:PORT of one node, empty for the target
steps:
  - id: role
    name: ROLE of the named node
    redis:
      command: [ROLE]
      node: "{{ at }}"
    register: role
  - id: save
    name: BGSAVE on the named node
    redis:
      command: [BGSAVE, SCHEDULE]
      node: "{{ at }}"
    confirm: Save on {{ at or 'the target' }}?
"""


@pytest.fixture(scope="module")
def replicated():
    require_binary("redis-server")
    deployment = start_replicated(replicas=1, sentinels=0)
    yield deployment
    deployment.stop()


def _run(tmp_path: Path, *args: str):
    procedure = tmp_path / "p.yaml"
    procedure.write_text(ONE_NODE)
    result = runbook("run", str(procedure), *args, "--json", "--transcripts-dir", str(tmp_path / "t"))
    return result, {s["id"]: s for s in result.json()["steps"]}


def test_a_step_runs_on_the_named_node_with_its_usual_result(replicated, tmp_path: Path):
    replica = replicated.replicas[0]
    address = f"{replica.host}:{replica.port}"
    result, steps = _run(tmp_path, "--redis", replicated.primary.url, "--var", f"at={address}", "--dry-run")
    assert result.code == 0, result.output
    assert steps["role"]["result"][0] == "slave"  # the reply itself, not a list of rows
    assert steps["save"]["outcome"] == "predicted"
    started = {e["step"]["id"]: e for e in of_type(events(transcript_path(result)), "step.started")}
    assert started["save"]["where"] == f"redis://{address}/0"


def test_an_empty_node_is_the_target(replicated, tmp_path: Path):
    result, steps = _run(tmp_path, "--redis", replicated.primary.url, "--dry-run")
    assert result.code == 0, result.output
    assert steps["role"]["result"][0] == "master"


def test_a_node_not_in_the_deployment_is_an_error(replicated, tmp_path: Path):
    result, _ = _run(tmp_path, "--redis", replicated.primary.url, "--var", "at=10.9.9.9:1", "--dry-run")
    assert result.code != 0
    assert "10.9.9.9:1: not a node of the deployment" in result.output


def test_summary_names_the_node():
    assert summary({"command": ["BGSAVE"], "node": "10.0.0.2:6379"}) == "BGSAVE (on node 10.0.0.2:6379)"
    assert summary({"command": ["BGSAVE"], "node": ""}) == "BGSAVE"


def test_discovery_leaves_no_connection_open(replicated):
    """Discovery's own connections are closed when it ends, not when the garbage collector meets them: an
    idle one would be counted as a leaked client (troubleshoot-connection's idle kill)."""
    from engine.adapters.redis_routing import RoutedRedisAdapter
    from engine.targets import redis_from_url

    adapter = RoutedRedisAdapter(redis_from_url(replicated.primary.url, environ={}), allow_mutation=False)
    try:
        topology = adapter.discover()
        assert len(topology.nodes) == 2
        for server in replicated.servers:
            with server.client() as client:
                listed = client.client_list()
                assert [c for c in listed if c["cmd"] in ("role", "info")] == [], listed
    finally:
        adapter.close()
