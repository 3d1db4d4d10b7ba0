"""Pure grading of per-node results, routing keys and Sentinel addresses: no servers."""

from __future__ import annotations

import pytest

from engine.adapters.redis_routing import _key_of
from engine.errors import UsageError
from engine.targets import parse_address
from engine.topology.grade import cluster_nodes_text, cluster_state, imbalance, replication_lag


def _row(node, result, outcome="ok", role="replica"):
    return {"node": node, "role": role, "outcome": outcome, "result": result, "error": None}


PRIMARY = [_row("10.0.0.1:6379", {"master_repl_offset": 5000}, role="primary")]


def _replica(node, offset, link="up", io=1):
    return _row(
        node,
        {
            "master_host": "10.0.0.1",
            "master_port": 6379,
            "master_link_status": link,
            "master_last_io_seconds_ago": io,
            "slave_repl_offset": offset,
        },
    )


def test_replication_lag_in_bytes_against_its_own_primary_and_alerts():
    rows = replication_lag(
        PRIMARY,
        [
            _replica("r1:1", 5000),
            _replica("r2:1", 1000),
            _replica("r3:1", 5000, link="down"),
            _replica("r4:1", 5000, io=99),
        ],
        max_bytes=100,
        max_seconds=30,
    )
    by = {r["node"]: r for r in rows}
    assert by["r1:1"]["bytes"] == 0 and not by["r1:1"]["alert"]
    assert by["r2:1"]["bytes"] == 4000 and by["r2:1"]["alert"]
    assert by["r3:1"]["alert"] and by["r4:1"]["alert"]
    assert all(r["primary"] == "10.0.0.1:6379" for r in rows)


def test_a_replica_that_did_not_answer_is_left_to_the_caller():
    assert replication_lag(PRIMARY, [_row("r1:1", None, outcome="error")]) == []


NODES = (
    "a 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [5461->-b]\n"
    "b 10.0.0.2:7000@17000 master - 0 0 2 connected 5461-10922\n"
    "c 10.0.0.3:7000@17000 master,fail - 0 0 2 connected\n"
    "d 10.0.0.4:7000@17000 slave a 0 0 1 connected\n"
)


def test_cluster_state_counts_coverage_failures_open_slots_and_epoch_collisions():
    info = [_row("10.0.0.1:7000", "cluster_state:ok\r\n"), _row("10.0.0.2:7000", "cluster_state:fail\r\n")]
    state = cluster_state(info, [_row("10.0.0.1:7000", NODES, role="primary")])
    assert state["ok"] is False and state["states"]["10.0.0.2:7000"] == "fail"
    assert state["slots_covered"] == 10923 and state["slots_missing"] == 16384 - 10923
    assert state["failing"] == [{"node": "10.0.0.3:7000", "flags": ["fail", "master"]}]
    assert state["open_slots"] == [{"node": "10.0.0.1:7000", "slot": "5461->-b"}]
    assert state["epoch_collisions"] == {"2": ["10.0.0.2:7000", "10.0.0.3:7000"]}


def test_a_failed_primary_that_still_lists_its_slots_does_not_cover_them():
    # Redis keeps a FAILed primary's slots on it until a replica takes over: they are served by nobody
    view = (
        "a 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n"
        "b 10.0.0.2:7000@17000 master - 0 0 2 connected 5461-10922\n"
        "c 10.0.0.3:7000@17000 master,fail - 0 0 3 disconnected 10923-16383\n"
    )
    state = cluster_state([_row("10.0.0.1:7000", "cluster_state:fail\r\n")], [_row("10.0.0.1:7000", view)])
    assert state["slots_covered"] == 10923 and state["slots_missing"] == 16384 - 10923


def test_cluster_nodes_text_skips_lines_it_cannot_read():
    assert cluster_nodes_text("garbage\n") == []


def test_imbalance_is_largest_over_smallest():
    assert imbalance([_row("a", 10), _row("b", 30), _row("c", None, outcome="error")])["ratio"] == 3
    assert imbalance([_row("a", {"used_memory": 0}), _row("b", {"used_memory": 0})], "used_memory")["ratio"] is None
    assert imbalance([])["ratio"] is None


@pytest.mark.parametrize(
    ("argv", "key"),
    [(["GET", "k"], "k"), (["MEMORY", "USAGE", "k"], "k"), (["OBJECT", "FREQ", "k"], "k"), (["PING"], None)],
)
def test_the_key_a_pipelined_command_is_routed_by(argv, key):
    assert _key_of(argv) == key


@pytest.mark.parametrize("bad", ["host", "host:", ":26379", "host:0", "host:99999", "host:port", "a b:1"])
def test_sentinel_addresses_are_host_port(bad):
    with pytest.raises(UsageError, match="is not HOST:PORT"):
        parse_address(bad, "--sentinel")


def test_a_sentinel_address_parses():
    assert parse_address("10.0.0.5:26379", "--sentinel") == ("10.0.0.5", 26379)


def _inventory(tmp_path, redis_block: str):
    path = tmp_path / "inv.yaml"
    path.write_text("environments:\n  prod:\n    targets:\n      cache:\n        redis:\n" + redis_block)
    return path


def test_inventory_sentinel_target_with_its_own_password(tmp_path):
    from engine.targets import load_inventory, target_from_inventory

    path = _inventory(
        tmp_path,
        "          password_env: DATA_PW\n"
        "          sentinel:\n            addresses: ['10.0.0.5:26379', '10.0.0.6:26379']\n"
        "            master: somabrain\n            password_env: SENTINEL_PW\n",
    )
    target = target_from_inventory(load_inventory(path), "cache", environ={"DATA_PW": "d", "SENTINEL_PW": "s"})
    assert target.sentinel is not None and target.sentinel.master == "somabrain"
    assert target.sentinel.addresses == (("10.0.0.5", 26379), ("10.0.0.6", 26379))
    assert (target.redis.password, target.sentinel.password) == ("d", "s")  # separate credentials
    assert target.describe()["sentinel"] == {"addresses": ["10.0.0.5:26379", "10.0.0.6:26379"], "master": "somabrain"}


def test_inventory_redis_needs_a_url_or_sentinel(tmp_path):
    from engine.targets import load_inventory

    with pytest.raises(UsageError) as caught:
        load_inventory(_inventory(tmp_path, "          password_env: X\n"))
    assert "missing required field 'url' or 'sentinel'" in str(caught.value.errors[0].message)
