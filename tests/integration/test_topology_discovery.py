"""Discovery of real deployments: a primary with replicas, Sentinel, and a Cluster with replicas."""

from __future__ import annotations

import os
import signal
import socket

import pytest
import redis

from engine.sandbox.topologies import start_cluster, start_replicated
from engine.topology.discover import DiscoveryError, discover, discover_sentinel
from engine.topology.parse import cluster_nodes
from tests.conftest import require_binary


def connect(host: str, port: int) -> redis.Redis:
    return redis.Redis(host=host, port=port, decode_responses=True, socket_timeout=10, socket_connect_timeout=5)


@pytest.fixture(scope="module")
def replicated():
    require_binary("redis-server")
    deployment = start_replicated(replicas=2, sentinels=3)
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def cluster():
    require_binary("redis-server")
    require_binary("redis-cli")
    deployment = start_cluster(primaries=3, replicas=1)
    yield deployment
    deployment.stop()


def test_a_standalone_server_is_standalone(redis_server):
    server = redis_server()
    topology = discover((server.host, server.port), connect)
    assert topology.kind == "standalone"
    assert [n.address for n in topology.nodes] == [f"{server.host}:{server.port}"]
    assert topology.primary is not None and topology.primary.role == "primary"


def test_a_replica_seed_finds_the_primary_and_every_replica(replicated):
    seed = replicated.replicas[1]
    topology = discover((seed.host, seed.port), connect)
    assert topology.kind == "replicated"
    primary = topology.primary
    assert primary is not None and primary.port == replicated.primary.port
    assert sorted(n.port for n in topology.replicas_of(primary)) == sorted(r.port for r in replicated.replicas)
    assert all(n.link == "up" for n in topology.replicas)
    assert any("is a replica of" in note for note in topology.notes)  # said plainly, recorded


def test_sentinel_names_the_primary_and_checks_quorum(replicated):
    topology = discover_sentinel(replicated.sentinel_addresses, replicated.master_name, connect)
    assert topology.kind == "sentinel"
    assert topology.primary is not None and topology.primary.port == replicated.primary.port
    view = topology.sentinel
    assert view is not None and view.quorum_ok is True and view.quorum == 2
    assert len(view.answered) == 3 and not view.unreachable and not view.disagreement
    assert topology.as_json()["sentinel"]["quorum_message"].startswith("OK")


def test_an_unreachable_sentinel_is_recorded_and_an_unknown_master_is_an_error(replicated):
    dead = ("127.0.0.1", replicated.primary.port + 0)  # a Redis that is no Sentinel answers with an error
    closed = ("127.0.0.1", 1)  # nothing listens on port 1
    topology = discover_sentinel([*replicated.sentinel_addresses[:2], closed, dead], replicated.master_name, connect)
    assert topology.primary is not None and topology.primary.port == replicated.primary.port
    assert "127.0.0.1:1" in topology.sentinel.unreachable
    with pytest.raises(DiscoveryError, match="no Sentinel named a primary"):
        discover_sentinel(replicated.sentinel_addresses, "no-such-master", connect)
    with pytest.raises(DiscoveryError, match="is a Sentinel"):
        host, port = replicated.sentinel_addresses[0]
        discover((host, port), connect)


def test_a_cluster_is_found_from_any_node_with_slots_and_replicas(cluster):
    for seed in (cluster.nodes[0], cluster.nodes[-1]):
        topology = discover((seed.host, seed.port), connect)
        assert topology.kind == "cluster"
        assert len(topology.primaries) == 3 and len(topology.replicas) == 3
        assert sum(n.slot_count for n in topology.primaries) == 16384
        for replica in topology.replicas:
            assert topology.node(replica.primary) is not None
        owner = topology.slot_owner(12182)  # CLUSTER KEYSLOT foo
        with connect(owner.host, owner.port) as client:
            assert int(client.execute_command("CLUSTER", "COUNTKEYSINSLOT", 12182)) >= 0
            assert client.execute_command("CLUSTER", "KEYSLOT", "foo") == 12182


def test_cluster_nodes_and_cluster_shards_agree(cluster):
    """The pre-7.0 path (CLUSTER NODES) sees the same shape as CLUSTER SHARDS."""
    seed = cluster.nodes[0]
    shards = discover((seed.host, seed.port), connect)
    with connect(seed.host, seed.port) as client:
        nodes = cluster_nodes(client.execute_command("CLUSTER", "NODES"))
    assert {(n.address, n.role, n.slots, n.primary) for n in nodes} == {
        (n.address, n.role, n.slots, n.primary) for n in shards.nodes
    }


def test_a_replica_that_does_not_answer_is_reported_not_fatal(replicated):
    """The replica is frozen (SIGSTOP) by the test, so the primary still lists it while it cannot answer."""
    frozen = replicated.replicas[0]

    def impatient(host: str, port: int) -> redis.Redis:
        return redis.Redis(host=host, port=port, decode_responses=True, socket_timeout=1, socket_connect_timeout=1)

    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        topology = discover((replicated.primary.host, replicated.primary.port), impatient)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    listed = {n.port: n for n in topology.replicas}
    assert listed[frozen.port].link == "unreachable"
    assert listed[replicated.replicas[1].port].link == "up"
    assert any(str(frozen.port) in note for note in topology.notes)


def test_a_seed_that_accepts_and_never_answers_is_told_from_one_that_refuses(redis_server):
    """The run asks a hung seed nothing more before its first step (session: target.identified unasked);
    a refused or healthy seed keeps the usual path."""
    from engine.run.context import Connections
    from engine.targets import RedisEndpoint, Target

    def connections(port: int) -> Connections:
        endpoint = RedisEndpoint(host="127.0.0.1", port=port, timeout=1.0)
        return Connections(Target(name="t", redis=endpoint), allow_mutation=False)

    server = redis_server()
    healthy = connections(server.port)
    assert "topology" in healthy.discover() and healthy.seed_timed_out is False
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)  # accepts (the kernel does), never answers: held until SIGCONT
    try:
        hung = connections(server.port)
        assert "TimeoutError" in hung.discover()["error"] and hung.seed_timed_out is True
    finally:
        os.kill(server.pid, signal.SIGCONT)
    with socket.socket() as held:  # bound, never listening: connections are refused, and no one else gets the port
        held.bind(("127.0.0.1", 0))
        refused = connections(held.getsockname()[1])
        assert "error" in refused.discover() and refused.seed_timed_out is False
