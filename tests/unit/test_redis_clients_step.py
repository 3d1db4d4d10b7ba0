"""`redis_clients` candidate selection: what Redis's own `timeout` would reap, never this run's connection."""

from __future__ import annotations

from engine.parsers.redis_text import parse_client_list
from engine.steps import get
from engine.steps.redis_clients_step import describe, idle_candidates, static_effect

LIST = "\n".join(
    [
        "id=3 addr=10.0.0.5:40001 name=leaky-pool age=900 idle=890 flags=N db=0 cmd=ping",
        "id=4 addr=10.0.0.5:40002 name=leaky-pool age=900 idle=12 flags=N db=0 cmd=get",
        "id=5 addr=10.0.0.6:40003 name= age=700 idle=650 flags=N db=0 cmd=set",
        "id=6 addr=10.0.0.7:40004 name=worker age=800 idle=800 flags=b db=0 cmd=blpop",
        "id=7 addr=10.0.0.8:40005 name=sub age=800 idle=800 flags=P db=0 cmd=subscribe",
        "id=8 addr=10.0.0.9:40006 name=replica age=800 idle=800 flags=S db=0 cmd=replconf",
        "id=9 addr=10.0.0.9:40007 name=watch age=800 idle=800 flags=O db=0 cmd=monitor",
        "id=10 addr=10.0.0.1:40008 name=runbook age=800 idle=800 flags=N db=0 cmd=client",
    ]
)


def test_only_idle_normal_clients_other_than_our_own_are_candidates():
    found = idle_candidates(parse_client_list(LIST), idle_min=300, own_id=10)
    assert [c["id"] for c in found] == [3, 5]  # not the active one, blocked, pub/sub, replica, MONITOR, ours


def test_the_threshold_is_inclusive_and_zero_takes_every_normal_client():
    clients = parse_client_list(LIST)
    assert [c["id"] for c in idle_candidates(clients, idle_min=12, own_id=10)] == [3, 4, 5]
    assert [c["id"] for c in idle_candidates(clients, idle_min=0, own_id=None)] == [3, 4, 5, 10]


def test_describe_names_the_leak_by_client_name_and_host():
    clients = parse_client_list(LIST)
    seen = describe(idle_candidates(clients, idle_min=300, own_id=10), len(clients), limit=1)
    assert seen["total"] == 8 and seen["matched"] == 2
    assert seen["by_name"] == {"leaky-pool": 1, "(no name)": 1}
    assert seen["by_host"] == {"10.0.0.5": 1, "10.0.0.6": 1}
    assert seen["oldest_idle"] == 890
    assert seen["clients"] == [
        {
            "id": 3,
            "addr": "10.0.0.5:40001",
            "name": "leaky-pool",
            "age": 900,
            "idle": 890,
            "flags": "N",
            "cmd": "ping",
        }
    ]


def test_listing_reads_and_killing_is_destructive_for_validate_and_show():
    from engine.spec.model import Effect

    assert get("redis_clients").name == "redis_clients"
    assert static_effect({"idle": {"idle_min": 300}}) is Effect.READ
    assert static_effect({"kill_idle": {"idle_min": 300, "max_clients": 10}}) is Effect.DESTRUCTIVE
