"""A replicated rehearsal world with `ssh: true`: every node on its own SSH host (real sshd per node on
127.0.0.x, the service script driving that node's redis-server), the inventory's `ssh.nodes`, the gate
watch letting an approved node restart come back by itself but not a restart or change nobody approved,
and teardown leaving no process, a node the service script restarted (not our child) included.
The shipped rolling-restart scenarios themselves run in the catalog gate (tests/integration/test_rehearsal.py);
here the failure one runs again to count its processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from engine.rehearsal import scenario as scenarios
from engine.rehearsal.rehearse import GateWatch, _seed, rehearse
from engine.rehearsal.world import World, WorldSpec, address
from engine.sandbox.redis_server import pid_alive
from engine.targets import load_inventory, target_from_inventory
from tests.conftest import require_binary


@pytest.fixture(autouse=True)
def _binaries():
    for binary in ("redis-server", "redis-cli", "sshd", "ssh-keygen"):
        require_binary(binary)


def _pid(world: World, node: str) -> int:
    with world.client(node=node) as client:
        return int(client.info("server")["process_id"])


def _service(world: World, node: str, action: str) -> subprocess.CompletedProcess[str]:
    """The node's own host's service command (the host is this machine: run it here)."""
    assert world.node_hosts is not None
    host = world.node_hosts.of(world.node(node))
    return subprocess.run(getattr(host.service, action), shell=True, capture_output=True, text=True, timeout=60)


def test_a_replicated_world_with_ssh_gives_every_node_its_own_host_and_stops_them_all():
    world = World.start(WorldSpec(topology="replicated", replicas=1, sentinels=1, ssh=True))
    try:
        values = world.template_values()
        target = target_from_inventory(load_inventory(world.inventory_path), "rehearsal")
        assert target.sentinel is not None  # found through Sentinel, as without ssh
        assert target.ssh is not None and sorted(target.ssh.nodes) == sorted(values["nodes"])
        assert world.node_hosts is not None
        hosts = {h.address: h for h in world.node_hosts.hosts}
        assert sorted(hosts) == sorted(values["nodes"])
        assert len({h.ssh.address for h in hosts.values()}) == 2  # one loopback address per node
        for node, endpoint in target.ssh.nodes.items():
            assert (endpoint.host, endpoint.port) == (hosts[node].ssh.address, hosts[node].ssh.port)
            assert endpoint.service.restart == hosts[node].service.restart  # that node's own script
        own = hosts[values["primary"]]  # the target's own host is the primary's
        assert (target.ssh.host, target.ssh.port) == (own.ssh.address, own.ssh.port) and world.ssh is own.ssh
        assert values["run_ids"].keys() == set(values["nodes"])
        # the world's settings are in each node's config file: a restart keeps them
        replica = values["replicas"][0]
        assert "repl-diskless-load swapdb" in world.node(replica).config_path.read_text()
        old = _pid(world, replica)
        done = _service(world, replica, "restart")
        assert done.returncode == 0, done.stdout + done.stderr
        restarted = _pid(world, replica)
        assert restarted != old
        with world.client(node=replica) as client:
            assert client.config_get("repl-diskless-load")["repl-diskless-load"] == "swapdb"
        sshd = [h.ssh.pid for h in hosts.values()]
        dirs = [h.ssh.directory for h in hosts.values()] + [n.directory for n in world.nodes]
        assert all(p is not None and pid_alive(p) for p in sshd)
    finally:
        world.stop()
    # every sshd, every redis-server (the one the service script restarted, not our child, too), every dir
    assert [p for p in [*sshd, restarted] if p is not None and pid_alive(p)] == []
    assert [d for d in dirs if d.exists()] == [] and not world.directory.exists()


def test_a_standalone_world_keeps_its_one_host():
    world = World.start(WorldSpec(http=False))
    try:
        target = target_from_inventory(load_inventory(world.inventory_path), "rehearsal")
        assert world.node_hosts is None and world.ssh is not None
        assert target.ssh is not None and target.ssh.nodes == {}
        raw = yaml.safe_load(world.inventory_path.read_text())
        assert "nodes" not in raw["environments"]["sandbox"]["targets"]["rehearsal"]["ssh"]  # as before
    finally:
        world.stop()


def _approve(transcript: Path, step: str) -> None:
    with transcript.open("a") as fh:
        fh.write(json.dumps({"type": "approval.given", "step": {"id": step}}) + "\n")


def test_the_gate_watch_lets_an_approved_restart_come_back_but_not_an_unapproved_one():
    world = World.start(WorldSpec(topology="replicated", replicas=2, sentinels=1, ssh=True))
    try:
        _seed(world, {"tenants": ["acme"], "cache_per_tenant": 3})
        first, second = world.template_values()["replicas"]
        transcript = world.directory / "watch.jsonl"
        transcript.write_text("")
        watch = GateWatch(world, transcript)
        # approved for `first` (its blast radius names the node), but it restarts only after that step ended
        _approve(transcript, "restart")
        watch(SimpleNamespace(id="restart", effect="destructive", blast_radius={"node": first}))
        assert _service(world, first, "stop").returncode == 0
        watch(SimpleNamespace(id="back", effect="read", blast_radius=None))  # down: its restart goes on
        assert _service(world, first, "start").returncode == 0
        watch(SimpleNamespace(id="back", effect="read", blast_radius=None))  # a new process: still that restart
        world.settle()
        watch(SimpleNamespace(id="caught-up", effect="read", blast_radius=None))
        assert watch.violations == []
        # a restart of a node no approved step named is a violation, naming the node
        assert _service(world, second, "restart").returncode == 0
        watch(SimpleNamespace(id="sneaky-restart", effect="read", blast_radius=None))
        assert len(watch.violations) == 1, watch.violations
        assert f"{second}: redis restarted (run_id changed)" in watch.violations[0]
        # and the approved node's restart covers its coming back, not a change made to it afterwards
        with world.client(node=first) as client:
            client.config_set("maxmemory", "64mb")
        watch(SimpleNamespace(id="sneaky-config", effect="read", blast_radius=None))
        assert len(watch.violations) == 2 and f"{first}: config maxmemory" in watch.violations[1]
    finally:
        world.stop()


def test_the_replica_that_will_not_start_rehearses_as_expected_and_leaves_no_process(tmp_path, monkeypatch):
    """The shipped failure scenario: not resolved as it expects (exit 4), the run stopped at the broken
    replica; every sshd and redis-server of its world is gone afterwards."""
    (shipped,) = scenarios.find("redis/rolling-restart", "replica-will-not-start")
    seen: dict[str, Any] = {}
    start = World.start.__func__  # type: ignore[attr-defined]

    def capture(cls: type[World], spec: WorldSpec) -> World:
        world = start(cls, spec)
        assert world.node_hosts is not None
        seen["sshd"] = [h.ssh.pid for h in world.node_hosts.hosts]
        seen["servers"] = list(world.nodes) + list(world.sentinels)
        seen["dirs"] = [h.ssh.directory for h in world.node_hosts.hosts] + [n.directory for n in world.nodes]
        seen["world"] = world
        return world

    monkeypatch.setattr(World, "start", classmethod(capture))
    pids: dict[str, int | None] = {}

    def each_step(record: Any) -> None:  # the processes as they are during the run (restarted ones included)
        for server in seen["servers"]:
            pids[f"{server.host}:{server.port}:{server.config_path}"] = server.pid

    result = rehearse(shipped, transcripts_dir=tmp_path / "t", on_step=each_step)
    assert result.passed, result.why_not_passed
    assert result.verdict == "no, as expected" and result.exit_code == 4
    assert result.dry_run_changes == [] and result.ungated_changes == []
    world = seen["world"]
    order = world.template_values()["replicas"]
    events = [json.loads(line) for line in Path(result.transcript).read_text().splitlines()]
    restarts = [e for e in events if e["type"] == "approval.given" and e["step"]["id"] == "restart"]
    assert len(restarts) == 2  # the first replica, then the broken one; never the primary
    assert [p for p in [*seen["sshd"], *pids.values()] if p is not None and pid_alive(p)] == []
    assert [d for d in seen["dirs"] if d.exists()] == [] and not world.directory.exists()
    assert order == sorted(order, key=lambda a: int(a.rsplit(":", 1)[1]))  # the restart order (one host)
    assert address(world.redis) not in order
