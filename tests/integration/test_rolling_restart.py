"""redis/rolling-restart end to end: a primary, 2 replicas and 3 Sentinels (real redis-server processes on
127.0.0.1), each node "on its own host": an sshd per node on 127.0.0.x with the service script that stops
and starts that node's redis-server, and an inventory whose ssh.nodes maps each node to its host."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.sandbox.node_hosts import NodeHosts, inventory_for_replicated, start_node_hosts
from engine.sandbox.sshd import write_inventory
from engine.sandbox.topologies import Replicated, start_replicated
from engine.transcript.verify import verify_transcript
from tests.conftest import require_binary
from tests.integration.cli_support import REPO, events, of_type, runbook, transcript_path

TARGET = "sandbox/cache"


class Deployment:
    def __init__(self, tmp: Path):
        for binary in ("redis-server", "redis-cli", "sshd", "ssh-keygen"):
            require_binary(binary)
        self.replicated: Replicated = start_replicated(replicas=2, sentinels=3)
        try:
            self.hosts: NodeHosts = start_node_hosts(self.replicated.servers)
        except BaseException:
            self.replicated.stop()
            raise
        self.inventory = write_inventory(tmp / "inventory.yaml", inventory_for_replicated(self.replicated, self.hosts))

    @property
    def servers(self) -> list[Any]:
        return self.replicated.servers

    def stop(self) -> None:
        self.hosts.stop()
        self.replicated.stop()

    def state(self) -> dict[str, dict[str, Any]]:
        """Per node: its pid, its role (and primary), its config file as written now."""
        out = {}
        for server in self.servers:
            with server.client() as client:
                role = client.execute_command("ROLE")
                out[f"{server.host}:{server.port}"] = {
                    "pid": client.info("server")["process_id"],
                    "role": role[0] if role[0] == "master" else (role[0], role[1], int(role[2])),
                    "config": server.config_path.read_text(),
                }
        return out

    def primary(self) -> Any:
        for server in self.servers:
            with server.client() as client:
                if client.execute_command("ROLE")[0] == "master":
                    return server
        raise AssertionError("no primary")


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    found = Deployment(tmp_path)
    yield found
    found.stop()


@pytest.fixture(scope="module")
def untouched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One deployment for the tests that must leave it as they found it (and check they did)."""
    found = Deployment(tmp_path_factory.mktemp("rolling-untouched"))
    yield found
    found.stop()


def _run(dep: Deployment, tmp_path: Path, *args: str):
    result = runbook(
        "run",
        "redis/rolling-restart",
        *("--inventory", str(dep.inventory), "--target", TARGET),
        *args,
        "--json",
        *("--transcripts-dir", str(tmp_path / "transcripts")),
        timeout=600,
    )
    steps: dict[str, list[dict]] = {}
    for step in result.json()["steps"]:
        steps.setdefault(step["id"], []).append(step)
    return result, steps


def test_a_rolling_restart_restarts_every_node_and_fails_over_once(deployment: Deployment, tmp_path: Path):
    old_primary = deployment.replicated.primary
    with old_primary.client() as client:
        for i in range(200):
            client.set(f"tenant:acme:wm:{i}", f"value-{i}")
        client.execute_command("WAIT", 2, 5000)
    before = deployment.state()
    result, steps = _run(deployment, tmp_path, "--yes")
    assert result.code == 0, result.output[-4000:]
    after = deployment.state()

    # every node is a new process, on its own port and data dir
    assert all(after[node]["pid"] != before[node]["pid"] for node in before), (before, after)
    # one restart per node, in topology order: the replicas (by port: all on 127.0.0.1), then the old primary
    old = f"{old_primary.host}:{old_primary.port}"
    replicas = sorted((n for n in before if n != old), key=lambda a: int(a.rsplit(":", 1)[1]))
    evts = events(transcript_path(result))
    started = [e for e in of_type(evts, "step.started") if e["step"]["id"] == "restart"]
    assert [e["where"].split("(node ")[1].split(",")[0] for e in started] == [*replicas, old]
    # each restart ran on that node's own host (its own sshd on 127.0.0.x), gated with its own blast radius
    gated = [e for e in of_type(evts, "approval.requested") if e["step"]["id"] == "restart"]
    assert [e["blast_radius"]["node"] for e in gated] == [*replicas, old]
    hosts = {f"{h.server.host}:{h.server.port}": h.ssh for h in deployment.hosts.hosts}
    for event, node in zip(gated, [*replicas, old], strict=True):
        assert event["blast_radius"]["host"] == f"{hosts[node].user}@{hosts[node].address}:{hosts[node].port}"
        assert event["blast_radius"]["redis"]["process_id"] == before[node]["pid"]
    # a different node is primary, every other one its replica with the link up
    new_primary = deployment.primary()
    new = f"{new_primary.host}:{new_primary.port}"
    assert new != old and new in replicas
    for node, state in after.items():
        if node != new:
            assert state["role"] == ("slave", new_primary.host, new_primary.port), (node, state)
    with new_primary.client() as client:
        links = client.info("replication")
        assert links["connected_slaves"] == 2
        assert all(links[f"slave{i}"]["state"] == "online" for i in range(2))
        # the data written before is still there, and the new primary takes writes
        assert client.dbsize() >= 200 and client.get("tenant:acme:wm:199") == "value-199"
        assert client.set("written-after-the-rolling-restart", "yes")
        client.execute_command("WAIT", 2, 5000)
    for server in deployment.servers:
        with server.client() as client:
            assert client.get("tenant:acme:wm:0") == "value-0"
            assert client.info("replication")["role"] == "master" or (
                client.info("replication")["master_link_status"] == "up"
            )
    # the old primary came back on the config Sentinel rewrote: a replica of the new primary
    assert f"replicaof {new_primary.host} {new_primary.port}" in old_primary.config_path.read_text()
    assert [s["outcome"] for s in steps["failover"]] == ["skipped", "skipped", "ok"]  # before the primary only
    assert [s["outcome"] for s in steps["healthy"]] == ["ok"] * 3
    assert verify_transcript(transcript_path(result)).ok


# A fault written into the node's config file: the running process does not reread it, its restart does.
FAULTS = {
    # the service cannot start it: the restart command fails (exit 1), the run errors (exit 4)
    "start_fails": ("this-directive-does-not-exist yes\n", [], 4),
    # it starts but never syncs (AUTH refused by its primary, which has no password; Sentinel does not
    # touch masterauth): the run waits `timeout` for the link, then fails naming it (exit 1)
    "never_syncs": ("masterauth not-the-password\n", ["--var", "timeout=10s"], 1),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_node_that_does_not_come_back_stops_the_run_there(deployment: Deployment, tmp_path: Path, fault: str):
    line, args, code = FAULTS[fault]
    before = deployment.state()
    old = f"{deployment.replicated.primary.host}:{deployment.replicated.primary.port}"
    first, second = sorted((n for n in before if n != old), key=lambda a: int(a.rsplit(":", 1)[1]))
    broken = next(s for s in deployment.servers if f"{s.host}:{s.port}" == second)
    with broken.config_path.open("a") as config:
        config.write(line)
    result, steps = _run(deployment, tmp_path, "--yes", *args)
    assert result.code == code, result.output[-4000:]
    outcome = next(line for line in result.output.splitlines() if line.startswith("outcome:"))
    assert second in outcome, outcome
    if fault == "start_fails":
        assert [s["outcome"] for s in steps["restart"]] == ["ok", "failed"]
        assert steps["restart"][1]["message"].startswith(f"{second}: exit status 1: Bad directive")
    else:
        assert [s["outcome"] for s in steps["restart"]] == ["ok", "ok"]
        assert [s["outcome"] for s in steps["healthy"]] == ["ok", "failed"]
        message = steps["healthy"][1]["message"]
        assert f"{second} is back" in message and "has not caught up within 10s" in message, message
        assert f"The rolling restart stopped at {second}; not restarted: {old}" in " ".join(message.split())
    # the failure is said plainly, with where the run stopped and what it did not touch
    (note,) = steps["stopped-at"]
    assert f"{first} restarted" in note["result"] and f"{old} not restarted" in note["result"], note
    assert "failover" not in steps or all(s["outcome"] == "skipped" for s in steps["failover"])
    pids = {}
    for server in deployment.servers:
        address = f"{server.host}:{server.port}"
        if address == second and fault == "start_fails":
            continue  # down
        with server.client() as client:
            pids[address] = client.info("server")["process_id"]
            role = client.execute_command("ROLE")[0]
        assert role == ("master" if address == old else "slave")
    assert fault == "start_fails" or pids[second] != before[second]["pid"]
    assert pids[first] != before[first]["pid"]  # restarted before the failing one
    assert pids[old] == before[old]["pid"]  # the primary was never touched, nor failed over
    evts = events(transcript_path(result))
    assert evts[-1]["type"] == "run.ended" and evts[-1]["outcome"] != "ok"
    assert verify_transcript(transcript_path(result)).ok


def test_without_sentinel_the_primary_is_never_restarted(deployment: Deployment, tmp_path: Path):
    """No Sentinel, no planned failover: refused before anything, or with replicas_only the replicas alone."""
    plain = write_inventory(
        tmp_path / "plain.yaml",
        inventory_for_replicated(deployment.replicated, deployment.hosts, through_sentinel=False),
    )
    deployment.inventory = plain
    before = deployment.state()
    refused, steps = _run(deployment, tmp_path, "--yes")
    assert refused.code == 1, refused.output[-3000:]
    assert "--var replicas_only=true to restart the replicas only" in refused.output
    assert steps["shape"][0]["result"]["kind"] == "replicated" and "restart" not in steps
    assert deployment.state() == before
    result, steps = _run(deployment, tmp_path, "--yes", "--var", "replicas_only=true")
    assert result.code == 0, result.output[-3000:]
    after = deployment.state()
    old = f"{deployment.replicated.primary.host}:{deployment.replicated.primary.port}"
    assert after[old] == before[old]  # same process, still the primary
    assert all(after[n]["pid"] != before[n]["pid"] and after[n]["role"] == before[n]["role"] for n in after if n != old)
    assert len(steps["restart"]) == 2
    assert [s["outcome"] for s in steps["failover"]] == ["skipped", "skipped"]  # no failover without Sentinel


def test_a_dry_run_changes_nothing_on_any_node(untouched: Deployment, tmp_path: Path):
    before = untouched.state()
    result, steps = _run(untouched, tmp_path, "--dry-run")
    assert result.code == 0, result.output[-4000:]
    assert untouched.state() == before  # pids, roles and config files
    assert [s["outcome"] for s in steps["restart"]] == ["predicted"] * 3
    changing = [s for s in result.json()["steps"] if s["effect"] in ("write", "destructive")]
    assert changing and all(s["outcome"] == "predicted" for s in changing)
    for server in untouched.servers:
        with server.client() as client:
            assert not client.keys("runbook:failover-probe:*")


def test_refusing_the_first_restart_ends_cleanly_and_changes_nothing(untouched: Deployment, tmp_path: Path):
    pexpect = pytest.importorskip("pexpect")
    before = untouched.state()
    child = pexpect.spawn(
        sys.executable,
        [
            *("-m", "engine.cli", "run", "redis/rolling-restart"),
            *("--inventory", str(untouched.inventory), "--target", TARGET),
            *("--transcripts-dir", str(tmp_path / "transcripts"), "--operator", "carol"),
        ],
        cwd=str(REPO),
        encoding="utf-8",
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"},
    )
    child.expect(r"Type the target name '.*' to proceed")
    panel = child.before
    child.sendline("no")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3, panel + (child.before or "")
    first = sorted(before, key=lambda a: int(a.rsplit(":", 1)[1]))
    assert "redis-service restart" in panel
    assert any(node in panel for node in first)
    assert untouched.state() == before
    (path,) = (tmp_path / "transcripts").rglob("*.jsonl")
    evts = events(path)
    (refused,) = of_type(evts, "approval.refused")
    assert refused["step"]["id"] == "restart"
    assert evts[-1]["type"] == "run.ended" and evts[-1]["outcome"] == "refused"
    assert verify_transcript(path).ok


STATUS_ON = """\
id: test/status-on
title: The service status of a node's host
section: test
description: test
requires: [redis, ssh]
params:
  node: {type: string, default: ""}
steps:
  - id: primary
    name: Status on the primary's host
    effect: read
    ssh: {service: status, on: primary}
    register: primary
  - id: node
    name: Status on a named node's host
    when: node != ''
    effect: read
    ssh: {service: status, on: node, node: "{{ node }}"}
    register: named
"""


def test_a_read_runs_on_the_named_nodes_own_host(untouched: Deployment, tmp_path: Path):
    """`on: primary` and `on: node` reach the node's own host (its sshd, its service script) in a dry-run too:
    the host's status command is a read by the inventory's word; a node of no deployment is refused by name."""
    (tmp_path / "procs").mkdir()
    (tmp_path / "procs" / "status-on.yaml").write_text(STATUS_ON)
    primary = untouched.replicated.primary
    replica = untouched.replicated.replicas[0]
    base = [
        *("run", "test/status-on", "--procedures", str(tmp_path / "procs")),
        *("--inventory", str(untouched.inventory), "--target", TARGET, "--json", "--dry-run"),
        *("--transcripts-dir", str(tmp_path / "transcripts")),
    ]
    result = runbook(*base, "--var", f"node={replica.host}:{replica.port}")
    assert result.code == 0, result.output[-3000:]
    steps = {s["id"]: s for s in result.json()["steps"]}
    assert f"active (running) pid {primary.pid}" in steps["primary"]["result"]["stdout"]
    assert f"active (running) pid {replica.pid}" in steps["node"]["result"]["stdout"]
    evts = events(transcript_path(result))
    where = {e["step"]["id"]: e["where"] for e in of_type(evts, "step.started")}
    host = untouched.hosts.of(replica).ssh
    assert where["node"] == f"ssh {host.user}@{host.address}:{host.port} (node {replica.host}:{replica.port}, replica)"
    stranger = runbook(*base, "--var", "node=127.0.0.1:1")
    assert stranger.code == 4, stranger.output[-3000:]
    assert "on: node 127.0.0.1:1: not a node of the deployment (known: " in stranger.output
