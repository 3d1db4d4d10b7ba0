"""A deployment world's nodes as they are now: who is primary, who replicates whom, what Sentinel says.

Faults and checks ask these (never the engine): a rehearsal judges the procedure by what the servers
themselves answer. A node that does not answer is `down`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from engine.rehearsal.world import World, address

SELECTORS = ("primary", "primaries", "replicas", "all")
T = TypeVar("T")


def ask(world: World, node: str, question: Callable[[redis.Redis], T]) -> T | None:
    """`question(client)` on one node; None when it does not answer (refused three times in a row: a
    connection Sentinel cut while reconfiguring the node, CLIENT KILL TYPE normal, is asked again)."""
    for attempt in range(3):
        try:
            with world.client(node=node) as client:
                return question(client)
        except redis.ConnectionError:
            if attempt < 2:
                time.sleep(0.1)
        except redis.RedisError:
            return None
    return None


def replication(world: World, node: str) -> dict[str, Any] | None:
    """INFO replication of one node; None when it does not answer."""
    return ask(world, node, lambda client: dict(client.info("replication")))


def roles(world: World) -> dict[str, str]:
    """HOST:PORT -> primary | replica | down, for every data node of the world."""
    out = {}
    for server in world.nodes:
        info = replication(world, address(server))
        out[address(server)] = "down" if info is None else ("primary" if info.get("role") == "master" else "replica")
    return out


def sentinel_primary(world: World) -> str | None:
    """The primary most Sentinels name now (HOST:PORT), None when none answers or none is named."""
    named: Counter[str] = Counter()
    for sentinel in world.sentinels:
        try:
            with world.client(password=False, node=sentinel) as client:
                reply = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", world.master_name)
        except redis.RedisError:
            continue
        if reply:
            named[f"{reply[0]}:{reply[1]}"] += 1
    return named.most_common(1)[0][0] if named else None


def primary(world: World) -> str | None:
    """The one primary of a standalone or replicated world now: the data node answering as primary (the one
    Sentinel names if several do, as after a failover the old primary came back); None if none does."""
    if world.spec.topology == "cluster":
        raise ValueError("a cluster has one primary per shard: use primaries() or on='primaries'")
    found = [a for a, role in roles(world).items() if role == "primary"]
    if len(found) > 1 and world.sentinels:
        named = sentinel_primary(world)
        return named if named in found else None
    return found[0] if len(found) == 1 else None


def select(world: World, on: str) -> tuple[list[str], bool]:
    """The nodes `on` names and whether it names exactly one: primary, primaries, replicas, all, or HOST:PORT."""
    if on == "primary":
        found = primary(world)
        if found is None:
            raise ValueError("no node answers as the primary")
        return [found], True
    if on in ("primaries", "replicas"):
        want = on[:-1] if on == "replicas" else "primary"
        return [a for a, role in roles(world).items() if role == want], False
    if on == "all":
        return [address(n) for n in world.nodes], False
    world.node(on)  # an unknown address is an error, not an empty answer
    return [on], True


def links(world: World) -> dict[str, str]:
    """Every replica's master_link_status (HOST:PORT -> up | down)."""
    out = {}
    for where, role in roles(world).items():
        if role == "replica":
            info = replication(world, where) or {}
            out[where] = str(info.get("master_link_status"))
    return out


def lag(world: World, node: str) -> int | None:
    """Bytes a replica has not applied yet: its primary's master_repl_offset minus its slave_repl_offset."""
    info = replication(world, node)
    if not info or info.get("role") != "slave":
        return None
    upstream = replication(world, f"{info['master_host']}:{info['master_port']}")
    if not upstream:
        return None
    return max(0, int(upstream["master_repl_offset"]) - int(info["slave_repl_offset"]))


def cluster_info(world: World, node: str) -> dict[str, str] | None:
    try:
        with world.client(node=node) as client:
            text = str(client.execute_command("CLUSTER", "INFO"))
    except redis.RedisError:
        return None
    return {k: v for k, _, v in (line.strip().partition(":") for line in text.splitlines()) if k}


def cluster_state(world: World, node: str | None = None) -> str | None:
    """cluster_state as `node` says it, or as every answering node agrees (`mixed` when they differ)."""
    asked = [node] if node else [address(n) for n in world.nodes]
    states = {info.get("cluster_state") for info in (cluster_info(world, a) for a in asked) if info}
    if not states:
        return None
    return states.pop() if len(states) == 1 else "mixed"


def cluster_view(world: World) -> list[dict[str, Any]]:
    """CLUSTER NODES as the first answering node sees it: address, id, flags, primary id, slot count."""
    for server in world.nodes:
        try:
            with world.client(node=server) as client:
                text = str(client.execute_command("CLUSTER", "NODES"))
        except redis.RedisError:
            continue
        out = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 8:
                continue
            slots = 0
            for token in fields[8:]:
                if not token.startswith("["):
                    start, _, end = token.partition("-")
                    slots += int(end or start) - int(start) + 1
            out.append(
                {
                    "address": fields[1].split("@", 1)[0].split(",", 1)[0],
                    "id": fields[0],
                    "flags": set(fields[2].split(",")),
                    "primary_id": fields[3],
                    "slots": slots,
                }
            )
        return out
    return []


def slots_covered(world: World) -> int:
    """Slots owned by a primary that is not flagged failing, in the first answering node's view."""
    return sum(n["slots"] for n in cluster_view(world) if "master" in n["flags"] and not n["flags"] & {"fail", "fail?"})
