# ruff: noqa: E501 - CLUSTER NODES lines are long by nature
"""Replication and cluster replies as data: real reply shapes, and garbage that only ever gives ValueError."""

from __future__ import annotations

import random

import pytest

from engine.topology import parse
from engine.topology.model import Topology

NODES = """\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-a slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 slave,fail 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 disconnected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
"""


def test_cluster_nodes_reads_roles_slots_links_and_skips_migrating_slots():
    nodes = {n.port: n for n in parse.cluster_nodes(NODES)}
    assert nodes[30001].role == "primary" and nodes[30001].slots == ((0, 5460),)
    assert nodes[30004].primary == "127.0.0.1:30001" and nodes[30004].host == "127.0.0.1"
    assert nodes[30006].health == "fail"
    topology = Topology("cluster", tuple(nodes.values()), "seed")
    assert sum(n.slot_count for n in topology.primaries) == parse.TOTAL_SLOTS
    assert topology.slot_owner(12182).port == 30003


def test_role_replies():
    assert parse.role(["master", 3129659, [["127.0.0.1", "9001", "3129242"]]])["replicas"] == [
        ("127.0.0.1", 9001, 3129242)
    ]
    replica = parse.role([b"slave", b"127.0.0.1", 9000, b"connected", 3167038])
    assert replica["primary"] == ("127.0.0.1", 9000) and replica["offset"] == 3167038
    assert parse.role(["sentinel", ["somabrain"]])["masters"] == ["somabrain"]


def test_info_replication_entries_raw_and_parsed():
    raw = {"role": "master", "slave0": "ip=10.0.0.2,port=6380,state=online,offset=42,lag=1"}
    parsed = {"slave0": {"ip": "10.0.0.3", "port": 6381, "state": "online", "offset": 7, "lag": 0}}
    assert parse.replicas_from_info(raw)[0] == {
        "host": "10.0.0.2",
        "port": 6380,
        "state": "online",
        "offset": 42,
        "lag": 1,
    }
    assert parse.replicas_from_info(parsed)[0]["port"] == 6381


SHAPES = [
    ["master", 1, [["h", "1", "2"]]],
    ["slave", "h", 1, "connected", 5],
    [["slots", [0, 5460], "nodes", [["id", "x", "port", 1, "ip", "h", "role", "master", "replication-offset", 1]]]],
    NODES,
]


def _mutate(rng: random.Random, value):
    if isinstance(value, list) and value and rng.random() < 0.7:
        copy = list(value)
        at = rng.randrange(len(copy))
        choice = rng.random()
        if choice < 0.3:
            del copy[at]
        elif choice < 0.6:
            copy[at] = rng.choice([None, 7, -1, 10**30, "x", b"\xff", [], {}, 1.5, "nan"])
        else:
            copy[at] = _mutate(rng, copy[at])
        return copy
    if isinstance(value, str):
        chars = list(value)
        for _ in range(rng.randint(1, 8)):
            if chars:
                chars[rng.randrange(len(chars))] = rng.choice(["", " ", "\n", ":", "@", "-", "[", "x", "9"])
        return "".join(chars)
    return rng.choice([None, 0, "", [], value])


@pytest.mark.parametrize("parser", [parse.role, parse.cluster_shards, parse.cluster_nodes, parse.sentinel_replicas])
def test_fuzzed_replies_raise_only_value_error(parser):
    rng = random.Random(20261129)
    for _ in range(3000):
        reply = _mutate(rng, rng.choice(SHAPES))
        try:
            parser(reply)
        except ValueError:
            pass
