"""Faults of a deployment world (`topology: replicated | cluster`): replication and Cluster incidents.

Each acts on the servers directly and holds its condition until teardown, then checks itself: a fault
that did not take raises, so the scenario is an `error`, never a rehearsal of nothing. Waits have a
safety net (a broken world on a busy machine), never a timing expectation.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis

from engine.rehearsal import nodes
from engine.rehearsal.faults import fault
from engine.rehearsal.world import World, address

SAFETY_NET = 60.0  # seconds: how long a fault waits for its condition before calling the world broken
PAUSE_MS = 3_600_000  # a replica held paused for an hour: longer than any rehearsal; teardown ends it


def _deployment(world: World, name: str, topology: str) -> None:
    if world.spec.topology != topology:
        raise ValueError(f"{name}: needs a world with topology: {topology} (this one is {world.spec.topology})")


def _replica(world: World, which: Any, name: str) -> str:
    """A replica of the world as built: by index in `world.replicas` (default 0) or HOST:PORT."""
    replicas = world.template_values()["replicas"]
    if not replicas:
        raise ValueError(f"{name}: the world has no replica")
    if isinstance(which, str) and ":" in which:
        if which not in replicas:
            raise ValueError(f"{name}: {which} is not a replica of this world ({', '.join(replicas)})")
        return which
    index = int(which or 0)
    if not 0 <= index < len(replicas):
        raise ValueError(f"{name}: replica {index}: the world has {len(replicas)}")
    return str(replicas[index])


replica_address = _replica  # for faults.py (start_fails on a node)


def _until(what: str, condition: Any, timeout: float = SAFETY_NET) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} (waited {timeout:.0f}s)")
        time.sleep(0.05)


def _stat(world: World, node: str, section: str, field: str) -> int:
    with world.client(node=node) as client:
        return int(client.info(section).get(field, 0))


@fault("replica_link_broken")
def _link_broken(world: World, args: dict[str, Any] | None) -> None:
    """A replica that cannot authenticate to its primary (`masterauth` wrong): its link is dropped and every
    reconnection is refused, so it stays down. `{replica: 0}` (index in world.replicas, or HOST:PORT).
    `world.broken_replica` is its address."""
    _deployment(world, "replica_link_broken", "replicated")
    args = args or {}
    target = _replica(world, args.get("replica"), "replica_link_broken")
    primary = world.template_values()["primary"]
    connected = _stat(world, primary, "replication", "connected_slaves")
    with world.client(node=target) as client:
        client.config_set("masterauth", "wrong-" + os.urandom(8).hex())
        client.execute_command("CLIENT", "KILL", "TYPE", "master")

    def down() -> bool:
        info = nodes.replication(world, target) or {}
        lost = _stat(world, primary, "replication", "connected_slaves") < connected
        return info.get("master_link_status") == "down" and lost

    _until(f"replica_link_broken: {target}'s link did not go down", down)
    time.sleep(1.5)  # the replica retries once a second: a retry must have failed too
    if not down():
        raise RuntimeError(f"replica_link_broken: {target} reconnected; the fault does not hold")
    world.vars["broken_replica"] = target


@fault("replica_lagging")
def _lagging(world: World, args: dict[str, Any] | None) -> None:
    """A replica whose link is up but that applies nothing: CLIENT PAUSE WRITE on the replica holds back its
    primary's stream (reads still answer), then `bytes` of writes (default 200000) go to the primary.

    `{replica: 0 | HOST:PORT | all, bytes: 200000}`. Held until teardown; checked: every lagging replica
    is at least `bytes` behind with its link up. `world.lagging_replicas`, `world.lag_bytes`."""
    _deployment(world, "replica_lagging", "replicated")
    args = args or {}
    replicas = world.template_values()["replicas"]
    which = args.get("replica")
    targets = list(replicas) if which == "all" else [_replica(world, which, "replica_lagging")]
    size = int(args.get("bytes", 200_000))
    if size < 1:
        raise ValueError("replica_lagging: bytes must be at least 1")
    for target in targets:
        with world.client(node=target) as client:
            client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
        world.keep(_Unpause(world, target))
    chunk = 10_000
    with world.client(node=world.template_values()["primary"]) as client:
        pipe = client.pipeline(transaction=False)
        for i in range(0, size, chunk):
            pipe.set(f"rehearsal:lag:{i // chunk}", "x" * min(chunk, size - i), ex=3600)
        pipe.execute()

    def behind() -> bool:
        return all(
            (nodes.lag(world, t) or 0) >= size and (nodes.replication(world, t) or {}).get("master_link_status") == "up"
            for t in targets
        )

    _until(f"replica_lagging: {', '.join(targets)} not {size} bytes behind with the link up", behind)
    world.vars["lagging_replicas"] = targets
    world.vars["lag_bytes"] = min(nodes.lag(world, t) or 0 for t in targets)


class _Unpause:
    """Teardown of a held CLIENT PAUSE (world.keep closes it), so the servers shut down promptly."""

    def __init__(self, world: World, node: str):
        self.world, self.node = world, node

    def close(self) -> None:
        try:
            with self.world.client(node=self.node) as client:
                client.execute_command("CLIENT", "UNPAUSE")
        except redis.RedisError:
            pass


@fault("kill_primary")
def _kill_primary(world: World, args: Any) -> None:
    """SIGKILL the primary and wait until Sentinel has promoted a replica: most Sentinels name the new
    primary, it answers ROLE master, and every other replica that is up follows it with its link up.
    `world.killed_primary` and `world.promoted` are their addresses."""
    _deployment(world, "kill_primary", "replicated")
    if not world.sentinels:
        raise ValueError("kill_primary: needs Sentinels to promote a replica (sentinels: 1 or more)")
    old = nodes.primary(world)
    if old is None:
        raise RuntimeError("kill_primary: no node answers as the primary")
    world.node(old).kill()
    if nodes.replication(world, old) is not None:
        raise RuntimeError(f"kill_primary: {old} still answers")

    def promoted() -> bool:
        named = nodes.sentinel_primary(world)
        if named is None or named == old or (nodes.replication(world, named) or {}).get("role") != "master":
            return False
        following = [a for a, role in nodes.roles(world).items() if role == "replica"]
        return all(
            (info := nodes.replication(world, a) or {}).get("master_link_status") == "up"
            and f"{info.get('master_host')}:{info.get('master_port')}" == named
            for a in following
        )

    _until(f"kill_primary: Sentinel did not promote a replica after {old} died", promoted, timeout=2 * SAFETY_NET)
    world.vars["killed_primary"] = old
    world.vars["promoted"] = nodes.sentinel_primary(world)
    world.settle()


@fault("kill_replica")
def _kill_replica(world: World, args: dict[str, Any] | None) -> None:
    """A replica whose redis-server died (SIGKILL: an OOM kill, a host that rebooted): `{replica: 0}` (index
    in world.replicas, or HOST:PORT). Held by the process staying dead; checked: it does not answer, its
    primary no longer counts it among its connected replicas, and every Sentinel still lists it (SENTINEL
    REPLICAS), as after a real crash. `world.killed_replica` is its address."""
    world.vars["killed_replica"] = _replica_died(world, args, "kill_replica")


@fault("replica_down")
def _replica_down(world: World, args: dict[str, Any] | None) -> None:
    """The same fault as kill_replica, under the name the scenarios of a replica that is down use;
    `world.down_replica` is its address."""
    world.vars["down_replica"] = _replica_died(world, args, "replica_down")


def _replica_died(world: World, args: dict[str, Any] | None, name: str) -> str:
    """SIGKILL a replica and check the deployment saw it go (see kill_replica); its address."""
    _deployment(world, name, "replicated")
    target = _replica(world, (args or {}).get("replica"), name)
    primary = world.template_values()["primary"]
    connected = _stat(world, primary, "replication", "connected_slaves")
    world.node(target).kill()
    if nodes.replication(world, target) is not None:
        raise RuntimeError(f"{name}: {target} still answers")
    _until(
        f"{name}: the primary {primary} still counts {target} as connected",
        lambda: _stat(world, primary, "replication", "connected_slaves") < connected,
    )
    for sentinel in world.sentinels:
        with world.client(password=False, node=sentinel) as client:
            known = client.execute_command("SENTINEL", "REPLICAS", world.master_name)
        listed = {f"{_field(r, 'ip')}:{_field(r, 'port')}" for r in known}
        if target not in listed:
            raise RuntimeError(f"{name}: Sentinel {address(sentinel)} does not list {target}")
    return target


@fault("sentinels_down")
def _sentinels_down(world: World, args: dict[str, Any] | None) -> None:
    """Sentinels lost (their hosts died): SIGKILL the last `count` of `world.sentinels` (default 1), then wait
    until every Sentinel left flags each of them down (`s_down`), as it does 1 s after it stops answering.
    `{count: 1}`; at least one Sentinel is left. With fewer left than the quorum, SENTINEL CKQUORUM fails.
    `world.down_sentinels` are their addresses, `world.ckquorum` what CKQUORUM says on the first one left
    (its reply, or the error's text)."""
    _deployment(world, "sentinels_down", "replicated")
    count = int((args or {}).get("count", 1))
    if not 1 <= count < len(world.sentinels):
        have = len(world.sentinels)
        raise ValueError(f"sentinels_down: count must leave at least one Sentinel (the world has {have})")
    down, left = world.sentinels[-count:], world.sentinels[:-count]
    for sentinel in down:
        sentinel.kill()
    gone = {address(s) for s in down}

    def flagged() -> bool:
        for sentinel in left:
            with world.client(password=False, node=sentinel) as client:
                seen = client.execute_command("SENTINEL", "SENTINELS", world.master_name)
            flags = {}
            for entry in seen or []:
                fields = dict(zip(entry[::2], entry[1::2], strict=False)) if isinstance(entry, list) else entry
                flags[f"{fields.get('ip')}:{fields.get('port')}"] = str(fields.get("flags", ""))
            if not all("s_down" in flags.get(a, "") for a in gone):
                return False
        return True

    _until(f"sentinels_down: the Sentinels left did not flag {', '.join(sorted(gone))} down", flagged)
    with world.client(password=False, node=left[0]) as client:
        try:
            answer = str(client.execute_command("SENTINEL", "CKQUORUM", world.master_name))
        except redis.ResponseError as exc:
            answer = str(exc)
    world.vars["down_sentinels"] = sorted(gone)
    world.vars["ckquorum"] = answer


@fault("cluster_node_down")
def _cluster_node_down(world: World, args: dict[str, Any] | None) -> None:
    """A shard lost whole: its primary and every replica of it killed (replicas first, so none is promoted),
    never the seed's shard. Held by the processes staying dead; checked: every live node says
    cluster_state:fail and sees the primary flagged fail. `world.down_nodes` (addresses),
    `world.uncovered_slots` (how many slots the shard owned)."""
    _deployment(world, "cluster_node_down", "cluster")
    args = args or {}
    view = nodes.cluster_view(world)
    seed = world.template_values()["primary"]
    by_id = {n["id"]: n for n in view}
    seed_shard = next(n for n in view if n["address"] == seed)
    seed_primary = seed_shard["id"] if "master" in seed_shard["flags"] else seed_shard["primary_id"]
    shards = [n for n in view if "master" in n["flags"] and n["slots"] and n["id"] != seed_primary]
    if not shards:
        raise RuntimeError("cluster_node_down: no shard other than the seed's to take down")
    index = int(args.get("shard", 0))
    victim = shards[index % len(shards)]
    replicas = [n for n in view if n["primary_id"] == victim["id"] and "slave" in n["flags"]]
    if args.get("keep_replica"):
        raise ValueError("cluster_node_down: keep_replica would let the replica take over; not a node down")
    for node in [*replicas, victim]:
        world.node(node["address"]).kill()
    down = [n["address"] for n in [*replicas, victim]]
    alive = [address(n) for n in world.nodes if address(n) not in down]

    def failed() -> bool:
        if any(nodes.cluster_state(world, a) != "fail" for a in alive):
            return False
        view_now = nodes.cluster_view(world)
        return any(n["id"] == victim["id"] and "fail" in n["flags"] for n in view_now)

    _until(f"cluster_node_down: the cluster did not fail after {', '.join(down)} died", failed, timeout=2 * SAFETY_NET)
    world.vars["down_nodes"] = down
    world.vars["uncovered_slots"] = by_id[victim["id"]]["slots"]


@fault("cluster_open_slot")
def _cluster_open_slot(world: World, args: dict[str, Any] | None) -> None:
    """A resharding interrupted (`redis-cli --cluster reshard` killed half-way): one slot left MIGRATING on
    its owner and IMPORTING on another primary. `{key: "tenant:{acme}:x"}` (the slot of that key) or
    `{slot: N}`. Held: nothing closes it until teardown; checked: both nodes show the slot open in their own
    CLUSTER NODES line. `world.open_slot`, `world.open_slot_from`, `world.open_slot_to` (addresses)."""
    _deployment(world, "cluster_open_slot", "cluster")
    args = args or {}
    seed = world.template_values()["primary"]
    with world.client(node=seed) as client:
        if args.get("slot") is not None:
            slot = int(args["slot"])
        else:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", str(args["key"])))
        lines = [line.split() for line in str(client.execute_command("CLUSTER", "NODES")).splitlines()]
    ids, owner = {}, None
    for fields in (f for f in lines if len(f) >= 8):
        node = fields[1].split("@", 1)[0].split(",", 1)[0]
        ids[node] = fields[0]
        for token in (t for t in fields[8:] if not t.startswith("[")):
            start, _, end = token.partition("-")
            if int(start) <= slot <= int(end or start):
                owner = node
    if owner is None:
        raise RuntimeError(f"cluster_open_slot: slot {slot} has no owner")
    others = sorted(n["address"] for n in nodes.cluster_view(world) if "master" in n["flags"] and n["address"] != owner)
    if not others:
        raise RuntimeError("cluster_open_slot: no other primary to move the slot to")
    to = others[0]
    with world.client(node=to) as client:
        client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[owner])
    with world.client(node=owner) as client:
        client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to])

    def own_line(node: str) -> str:
        with world.client(node=node) as client:
            text = str(client.execute_command("CLUSTER", "NODES"))
        return next(line for line in text.splitlines() if "myself" in line.split()[2])

    if f"[{slot}->-{ids[to]}]" not in own_line(owner) or f"[{slot}-<-{ids[owner]}]" not in own_line(to):
        raise RuntimeError(f"cluster_open_slot: slot {slot} is not shown open on {owner} and {to}")
    world.vars.update(open_slot=slot, open_slot_from=owner, open_slot_to=to)


@fault("flapping_replica")
def _flapping(world: World, args: dict[str, Any] | None) -> None:
    """Replicas whose link keeps dropping and fully resyncing: on the primary, client-output-buffer-limit
    replica is set below one write (`limit`, default 16kb) and the backlog to its minimum (16kb), and a writer
    the fault owns writes `value_size`-byte values (default 32768) every `pause` s (default 0.05) until
    teardown: every write drops the link, and the replica comes back to a full sync. Checked: the primary
    counted `full_syncs` more full syncs (default 3). `world.full_syncs` is INFO's sync_full then.

    The limit is the primary's, for every replica: use a world with one replica for one flapping replica."""
    _deployment(world, "flapping_replica", "replicated")
    args = args or {}
    primary = world.template_values()["primary"]
    limit = str(args.get("limit", "16kb"))
    size, pause = int(args.get("value_size", 32768)), float(args.get("pause", 0.05))
    wanted = int(args.get("full_syncs", 3))
    before = _stat(world, primary, "stats", "sync_full")
    with world.client(node=primary) as client:
        client.config_set("repl-backlog-size", "16kb")
        client.config_set("client-output-buffer-limit", f"replica {limit} {limit} 0")
    world.background_writes.append("rehearsal:flap:*")
    writer = world.keep(world.client(node=primary, single_connection_client=True))
    value = "x" * size
    written = [0]

    def write() -> None:
        i = 0
        while not world.stopping.is_set():
            try:
                writer.set(f"rehearsal:flap:{i % 8}", value, ex=3600)
                written[0] += 1
            except redis.RedisError:
                pass
            i += 1
            world.stopping.wait(pause)

    thread = threading.Thread(target=write, daemon=True, name="flapping-replica-writer")
    thread.start()
    world.keep(thread)
    _until(
        f"flapping_replica: fewer than {wanted} full syncs (is the limit below one write?)",
        lambda: _stat(world, primary, "stats", "sync_full") >= before + wanted,
    )
    world.vars["full_syncs"] = _stat(world, primary, "stats", "sync_full")


@fault("node_snapshot")
def _node_snapshot(world: World, name: str) -> None:
    """Remember what each data node is now, for checks that compare a node with itself later (a restart, a save,
    a fork): `world.NAME` = {HOST:PORT: {role, run_id, last_save_time, saves, changes_since_last_save, forks}},
    null for a node that does not answer. Any topology; a standalone world has one node."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"node_snapshot: give a name (letters, digits, _), not {name!r}")
    out = {address(server): _node_facts(world, address(server)) for server in world.nodes}
    if not any(out.values()):
        raise RuntimeError("node_snapshot: no node answers; there is nothing to compare with later")
    world.vars[name] = out


def _node_facts(world: World, where: str) -> dict[str, Any] | None:
    """One node's role, run id, saves and forks; None when it does not answer (nodes.ask)."""

    def facts(client: redis.Redis) -> dict[str, Any]:
        persistence, stats = client.info("persistence"), client.info("stats")
        return {
            "role": "primary" if client.info("replication")["role"] == "master" else "replica",
            "run_id": client.info("server")["run_id"],
            "last_save_time": int(persistence["rdb_last_save_time"]),
            "saves": int(persistence.get("rdb_saves", 0)),
            "changes_since_last_save": int(persistence["rdb_changes_since_last_save"]),
            "forks": int(stats.get("total_forks", 0)),
        }

    return nodes.ask(world, where, facts)


@fault("config_file_line")
def _config_file_line(world: World, args: dict[str, Any]) -> None:
    """A line appended to a replica's config file, as a bad config-management push leaves it: the running
    process never rereads the file, its next start does. `{replica: 0 | HOST:PORT, line: "..."}`; pair it
    with `start_fails: {replica: ...}` to prove the line stops the node from starting. Checked: the node
    still answers, as the same process. `world.config_line_node` is its address."""
    _deployment(world, "config_file_line", "replicated")
    target = _replica(world, args.get("replica"), "config_file_line")
    line = str(args.get("line") or "").strip()
    if not line or "\n" in line:
        raise ValueError("config_file_line: line must be one non-empty line")
    server = world.node(target)
    with server.config_path.open("a") as config:
        config.write(line + "\n")
    info = nodes.replication(world, target)
    if info is None or _stat(world, target, "server", "process_id") != server.pid:
        raise RuntimeError(f"config_file_line: {target} does not answer as the same process")
    world.vars["config_line_node"] = target


def _field(reply: Any, name: str) -> str:
    """One field of a SENTINEL REPLICAS entry (a flat list of names and values, or a dict)."""
    if isinstance(reply, dict):
        return str(reply.get(name))
    pairs = dict(zip(reply[::2], reply[1::2], strict=False))
    return str(pairs.get(name))
