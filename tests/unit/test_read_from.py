"""Which node a keyspace analysis reads (engine/keyspace/read_from.py): pure decisions, no servers."""

from __future__ import annotations

import pytest

from engine.keyspace.read_from import (
    MAX_IO_SECONDS,
    MAX_LAG_BYTES,
    ReadFromError,
    ReplicaState,
    choose,
    why_not,
)

PRIMARY = "10.0.0.1:6379"


def _in_sync(address: str, offset: int = 1000, **overrides) -> ReplicaState:
    fields = {"link": "up", "io_seconds": 1, "offset": offset, "role": "slave", **overrides}
    return ReplicaState(address, **fields)


def _choose(mode: str, replicas, offset: int | None = 1000, **kw):
    return choose(
        mode, target_is_replica=kw.pop("target_is_replica", False), primary=PRIMARY, primary_offset=offset,
        replicas=replicas, **kw,
    )  # fmt: skip


def test_info_replies_are_read_as_redis_py_and_raw_text_give_them():
    parsed = ReplicaState.from_info(
        "r:1",
        {"role": "slave", "master_link_status": "up", "master_last_io_seconds_ago": 0,
         "master_sync_in_progress": 0, "slave_repl_offset": 42},
        {"loading": 0},
    )  # fmt: skip
    raw = ReplicaState.from_info(
        "r:1",
        {b"role": b"slave", "master_link_status": b"up", "master_last_io_seconds_ago": "0",
         "master_sync_in_progress": "0", "slave_repl_offset": "42"},
        {"loading": "0"},
    )  # fmt: skip
    assert parsed.link == "up" and parsed.offset == 42 and not parsed.loading and not parsed.syncing
    assert (raw.link, raw.offset, raw.io_seconds) == ("up", 42, 0)
    assert ReplicaState.from_info("r:1", {"slave_repl_offset": "x"}).offset is None  # never a traceback


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (_in_sync("r:1", error="TimeoutError: no answer"), "TimeoutError: no answer"),
        (_in_sync("r:1", role="master"), "it says it is a master"),
        (_in_sync("r:1", loading=True), "loading its dataset"),
        (_in_sync("r:1", link="down"), "link down"),
        (_in_sync("r:1", link=None), "link unknown"),
        (_in_sync("r:1", syncing=True), "a full sync in progress"),
        (_in_sync("r:1", io_seconds=MAX_IO_SECONDS + 1), f"last heard from its primary {MAX_IO_SECONDS + 1} s ago"),
        (_in_sync("r:1", io_seconds=-1), "last heard from its primary -1 s ago"),
        (_in_sync("r:1", offset=None), "its offset is unknown"),
        (_in_sync("r:1", offset=1000 - MAX_LAG_BYTES - 1), f"{MAX_LAG_BYTES + 1:,} bytes behind"),
    ],
)
def test_a_replica_is_passed_over_with_the_reason(state, reason):
    assert why_not(state, 1000) == reason


def test_a_replica_within_the_limits_is_in_sync_even_when_read_ahead_of_the_primary():
    assert why_not(_in_sync("r:1", offset=1000 - MAX_LAG_BYTES), 1000) is None
    assert why_not(_in_sync("r:1", offset=2000, io_seconds=MAX_IO_SECONDS), 1000) is None  # read after the primary


def test_auto_reads_the_least_behind_replica_and_names_those_passed_over():
    replicas = [_in_sync("r:1", offset=900), _in_sync("r:2", link="down"), _in_sync("r:3", offset=990)]
    node = _choose("auto", replicas)
    assert node.address == "r:3"
    assert f"in sync with primary {PRIMARY} (10 bytes behind)" in node.reason
    assert "passed over r:2: link down" in node.reason


def test_ties_go_to_the_first_address_so_the_choice_is_stable():
    assert _choose("auto", [_in_sync("r:2"), _in_sync("r:1")]).address == "r:1"


def test_auto_reads_the_target_without_an_in_sync_replica_and_says_why():
    node = _choose("auto", [_in_sync("r:1", link="down"), _in_sync("r:2", loading=True)])
    assert node.address is None
    assert node.reason == "no replica in sync (r:1: link down; r:2: loading its dataset)"
    assert _choose("auto", []).reason == "no replica"


def test_replica_mode_fails_instead_of_falling_back_to_the_primary():
    with pytest.raises(ReadFromError, match=r"no replica in sync \(r:1: link down\)"):
        _choose("replica", [_in_sync("r:1", link="down")])
    with pytest.raises(ReadFromError, match="the primary has no replica"):
        _choose("replica", [])
    with pytest.raises(ReadFromError, match="Cluster"):
        _choose("replica", [], cluster=True)
    assert _choose("replica", [_in_sync("r:1")]).address == "r:1"


def test_target_mode_a_replica_target_and_a_cluster_read_where_the_target_points():
    replicas = [_in_sync("r:1")]
    assert _choose("target", replicas).address is None
    assert _choose("auto", replicas, target_is_replica=True).reason == "the target is a replica"
    assert _choose("replica", replicas, target_is_replica=True).address is None
    assert _choose("auto", replicas, cluster=True).address is None


def test_an_unknown_mode_is_an_error_naming_the_modes():
    with pytest.raises(ReadFromError, match="auto, target, replica"):
        _choose("nearest", [])
