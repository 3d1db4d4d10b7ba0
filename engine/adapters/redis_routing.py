"""A Redis deployment behind one adapter: writes reach the primary, key commands their slot's owner.

The adapter owns the topology (step kinds never open connections): it is discovered once at run start
through guarded, read-only connections, and refreshed when the servers say it changed (READONLY after
a failover, MOVED after a resharding). Every routing decision an operator would want to know about
("target resolved to a replica; used primary X", "slot 42 moved to Y") goes to `record`, which the
session writes to the transcript as `topology.changed`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import redis
from redis.crc import key_slot

from engine.adapters.redis import RedisAdapter, _arg_bytes
from engine.errors import TargetError
from engine.spec.model import Effect
from engine.targets import SentinelSpec
from engine.topology.model import Node, Topology

Record = Callable[[dict[str, Any]], None]

MAX_REDIRECTS = 5
FAN_OUT = 8  # concurrent node reads at most (a 2-core operator laptop, dozens of nodes)


class RoutedRedisAdapter(RedisAdapter):
    """The seed node's adapter, which knows the deployment and sends each command where it belongs."""

    def __init__(
        self,
        endpoint: Any,
        *,
        allow_mutation: bool,
        sentinel: SentinelSpec | None = None,
        record: Record = lambda event: None,
    ):
        super().__init__(endpoint, allow_mutation=allow_mutation)
        self.sentinel = sentinel
        self.record = record
        self.topology: Topology | None = None
        self.unresolved: str | None = None  # why there is no data node to talk to (Sentinel named none)
        self.seed_timed_out = False  # the last discovery's seed (no Sentinel) accepted and never answered
        self._nodes: dict[str, RedisAdapter] = {}
        self._told: set[str] = set()
        self._lock = threading.Lock()

    # -- discovery -----------------------------------------------------------------------------
    def connect(self) -> RedisAdapter:
        if self.unresolved is not None:  # never talk to a Sentinel as if it were the data
            raise TargetError(self.unresolved)
        return super().connect()

    def discover(self) -> Topology:
        """The deployment, asked of Sentinel or of the seed; for Sentinel the seed becomes the primary."""
        from engine.topology.discover import discover, discover_sentinel

        if self.sentinel is not None:
            try:
                topology = discover_sentinel(self.sentinel.addresses, self.sentinel.master, self._sentinel_client)
            except Exception as exc:
                if (self.endpoint.host, self.endpoint.port) in self.sentinel.addresses:
                    self.unresolved = f"no primary for {self.sentinel.master!r}: Sentinel did not name one ({exc})"
                raise
            self.unresolved = None
            primary = topology.primary
            if primary is not None and (primary.host, primary.port) != (self.endpoint.host, self.endpoint.port):
                self.close()
                self.endpoint = replace(self.endpoint, host=primary.host, port=primary.port)
        else:
            try:
                topology = discover((self.endpoint.host, self.endpoint.port), self._reader_client)
            except redis.TimeoutError:
                self.seed_timed_out = True  # connected, and no answer: hung or stalled, not refused
                raise
        self.seed_timed_out = False
        self.topology = topology
        return topology

    def refresh(self, reason: str) -> Topology | None:
        """Ask again after the servers said the deployment changed; recorded with what changed."""
        before = self.topology
        try:
            after = self.discover()
        except Exception as exc:  # keep routing on what we knew; say so
            self.record({"reason": reason, "error": f"{type(exc).__name__}: {exc}"})
            return before
        self.record({"reason": reason, "topology": after.as_json()})
        return after

    def _reader_client(self, host: str, port: int) -> redis.Redis:
        """A discovery connection: its own pool, every non-read refused at the socket whatever the run's mode."""
        probe = RedisAdapter(replace(self.endpoint, host=host, port=int(port)), allow_mutation=False)
        return redis.Redis(connection_pool=probe._pool(decode_responses=True))

    def _sentinel_client(self, host: str, port: int) -> redis.Redis:
        spec = self.sentinel
        assert spec is not None
        ep = replace(self.endpoint, host=host, port=int(port), db=0, username=None, password=spec.password)
        probe = RedisAdapter(ep, allow_mutation=False)
        return redis.Redis(connection_pool=probe._pool(decode_responses=True))

    # -- nodes ---------------------------------------------------------------------------------
    def node_adapter(self, address: str) -> RedisAdapter:
        """The adapter of one node of the deployment (same credentials, TLS and mutation policy); a Sentinel's
        with Sentinel's own password."""
        if address == f"{self.endpoint.host}:{self.endpoint.port}":
            return self
        with self._lock:
            if address not in self._nodes:
                host, _, port = address.rpartition(":")
                ep = replace(self.endpoint, host=host, port=int(port))
                if self.sentinel is not None and (host, int(port)) in self.sentinel.addresses:
                    ep = replace(ep, db=0, username=None, password=self.sentinel.password)
                self._nodes[address] = RedisAdapter(ep, allow_mutation=self.allow_mutation)
            return self._nodes[address]

    def nodes_for(self, where: str, name: str | None = None) -> list[Node]:
        """The nodes `on:` names: primary | replicas | all | each primary | node (with `name`)."""
        topology = self.topology or self._standalone()
        if where == "primary":
            found = topology.primaries[:1] if topology.kind != "cluster" else topology.primaries
            return list(found) or [self._me()]
        if where == "each primary":
            return list(topology.primaries) or [self._me()]
        if where == "replicas":
            return list(topology.replicas)
        if where == "all":
            return list(topology.nodes) or [self._me()]
        if where == "sentinel":
            view = topology.sentinel
            if view is None or not view.answered:
                raise TargetError("on: sentinel: the target is not found through Sentinel (--sentinel/--master)")
            host, _, port = view.answered[0].rpartition(":")
            return [Node(host, int(port), "sentinel")]
        if where == "node":
            if not name:
                raise TargetError("on: node needs `node:` naming one (host:port)")
            found_node = topology.node(str(name))
            if found_node is None:
                known = ", ".join(n.address for n in topology.nodes)
                raise TargetError(f"on: node {name}: not a node of the deployment (known: {known})")
            return [found_node]
        raise TargetError(f"on: {where!r} is not one of primary, replicas, all, each primary, node, sentinel")

    def _me(self) -> Node:
        return Node(self.endpoint.host, self.endpoint.port, "primary")

    def _standalone(self) -> Topology:
        return Topology("standalone", (self._me(),), f"{self.endpoint.host}:{self.endpoint.port}")

    def close(self) -> None:
        for adapter in list(self._nodes.values()):
            adapter.close()
        self._nodes.clear()
        super().close()

    # -- routing -------------------------------------------------------------------------------
    def _tell(self, key: str, event: dict[str, Any]) -> None:
        if key not in self._told:
            self._told.add(key)
            self.record(event)

    def _primary_for_write(self) -> RedisAdapter:
        topology = self.topology
        if topology is None or topology.kind == "cluster":
            return self
        me = topology.node(f"{self.endpoint.host}:{self.endpoint.port}")
        primary = topology.primary
        if me is None or me.role != "replica" or primary is None:
            return self
        self._tell(
            f"replica->{primary.address}",
            {
                "reason": f"target resolved to a replica ({me.address}); used primary {primary.address}",
                "from": me.address,
                "to": primary.address,
            },
        )
        return self.node_adapter(primary.address)

    def _owner_of(self, key: Any) -> RedisAdapter:
        topology = self.topology
        if topology is None or topology.kind != "cluster":
            return self
        owner = topology.slot_owner(key_slot(_arg_bytes(key)))
        return self.node_adapter(owner.address) if owner is not None else self

    def _execute(self, argv: Sequence[Any]) -> Any:
        topology = self.topology
        if topology is not None and topology.kind == "cluster":
            keys = self._keys(argv)
            node = self._owner_of(keys[0]) if keys else self
        elif self.effect_of(argv) is not Effect.READ:
            node = self._primary_for_write()
        else:
            node = self
        return self._send(node, argv, MAX_REDIRECTS)

    def _keys(self, argv: Sequence[Any]) -> list[Any]:
        try:
            return list(self.client.command_getkeys(*argv))
        except redis.ResponseError:  # a command without keys
            return []

    def _send(self, node: RedisAdapter, argv: Sequence[Any], redirects: int, asking: bool = False) -> Any:
        try:
            if asking:
                return node.asking_call(argv)
            return node.client.execute_command(*argv)
        except redis.exceptions.MovedError as exc:
            if redirects <= 0:
                raise
            target = f"{exc.host}:{exc.port}"
            self.refresh(f"MOVED: slot {exc.slot_id} is served by {target}; topology refreshed")
            return self._send(self.node_adapter(target), argv, redirects - 1)
        except redis.exceptions.AskError as exc:
            if redirects <= 0:
                raise
            target = f"{exc.host}:{exc.port}"
            self.record({"reason": f"ASK: slot {exc.slot_id} is migrating to {target}; asked there (ASKING)"})
            return self._send(self.node_adapter(target), argv, redirects - 1, asking=True)
        except redis.exceptions.ReadOnlyError:
            if redirects <= 0:
                raise
            self.refresh("READONLY: the node written to is a replica (a failover?); topology refreshed")
            primary = self.topology.primary if self.topology is not None else None
            if primary is None:
                raise
            self._tell(
                f"readonly->{primary.address}",
                {"reason": f"target resolved to a replica; used primary {primary.address}", "to": primary.address},
            )
            return self._send(self.node_adapter(primary.address), argv, redirects - 1)

    def pipeline_calls(self, calls: Sequence[Sequence[Any]], *, binary: bool = False) -> list[Any]:
        """On a cluster, each command goes to the owner of its key's slot (grouped, one round trip each)."""
        topology = self.topology
        if topology is None or topology.kind != "cluster" or not calls:
            return super().pipeline_calls(calls, binary=binary)
        replies: list[Any] = [None] * len(calls)
        for node, indexes in self.group_by_owner(calls):
            got = RedisAdapter.pipeline_calls(node, [calls[i] for i in indexes], binary=binary)
            for i, reply in zip(indexes, got, strict=True):
                replies[i] = reply
        moved = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.MovedError)]
        if moved:
            self.refresh(f"MOVED in a pipeline ({len(moved)} commands); topology refreshed")
            for i in moved:
                owner = self._owner_of(_key_of(calls[i]))
                if binary:  # replies stay bytes: the owner's own bytes pipeline, one command
                    replies[i] = RedisAdapter.pipeline_calls(owner, [calls[i]], binary=True)[0]
                    continue
                try:
                    replies[i] = self._send(owner, calls[i], MAX_REDIRECTS)
                except redis.RedisError as exc:
                    replies[i] = exc
        return replies

    def group_by_owner(self, calls: Sequence[Sequence[Any]]) -> list[tuple[RedisAdapter, list[int]]]:
        """The calls' indexes grouped by the node that owns each one's key (all on this node off a cluster)."""
        topology = self.topology
        if topology is None or topology.kind != "cluster":
            return [(self, list(range(len(calls))))] if calls else []
        groups: dict[int, tuple[RedisAdapter, list[int]]] = {}
        for index, argv in enumerate(calls):
            key = _key_of(argv)
            node = self._owner_of(key) if key is not None else self
            groups.setdefault(id(node), (node, []))[1].append(index)
        return list(groups.values())

    def scan_nodes(self) -> list[RedisAdapter]:
        """Where a keyspace scan must look: every primary of a cluster, else this node."""
        topology = self.topology
        if topology is None or topology.kind != "cluster" or not topology.primaries:
            return [self]
        return [self.node_adapter(n.address) for n in topology.primaries]

    def reader(self, mode: str) -> tuple[RedisAdapter, str, bool]:
        """Where a keyspace-wide analysis reads under `read_from` (auto | target | replica), why, and whether
        that node is a replica no client uses (its other commands are its primary's replication stream).

        Asked now, not at run start: the primary's replicas (ROLE) and how each says it is doing (INFO
        replication and persistence), in parallel; a replica that does not answer is passed over.
        """
        from engine.keyspace import read_from
        from engine.topology import parse

        if mode == "target" or self.is_cluster:
            choice = read_from.choose(
                mode, target_is_replica=False, primary=None, primary_offset=None, replicas=(), cluster=self.is_cluster
            )
            return self, choice.reason, False
        try:
            me = parse.role(self.call(["ROLE"]))
        except (TargetError, ValueError) as exc:  # ROLE refused by an ACL, say: nothing to choose from
            if mode == "replica":
                raise read_from.ReadFromError(f"read_from: replica: ROLE: {exc}") from None
            return self, f"the target's ROLE could not be read ({exc})", False
        if me["role"] != "primary":
            choice = read_from.choose(mode, target_is_replica=True, primary=None, primary_offset=None, replicas=())
            return self, choice.reason, False
        nodes = [Node(host, port, "replica") for host, port, _ in me["replicas"]]

        def state(node: RedisAdapter) -> read_from.ReplicaState:
            address = f"{node.endpoint.host}:{node.endpoint.port}"
            return read_from.ReplicaState.from_info(address, node.info("replication"), node.info("persistence"))

        states = [
            found if isinstance(found, read_from.ReplicaState) else read_from.ReplicaState(n.address, error=str(found))
            for n, found in self.fan_out(nodes, state)
        ]
        choice = read_from.choose(
            mode,
            target_is_replica=False,
            primary=f"{self.endpoint.host}:{self.endpoint.port}",
            primary_offset=me["offset"],
            replicas=states,
        )
        if choice.address is None:
            return self, choice.reason, False
        node = self.node_adapter(choice.address)
        return node, choice.reason, _no_client_but_us(node)

    @property
    def is_cluster(self) -> bool:
        return self.topology is not None and self.topology.kind == "cluster"

    def scan(self, match: str | None = None, count: int = 1000, type_: str | None = None) -> Iterator[list[str]]:
        """On a cluster, every primary's keys (scanned in parallel, pages merged as they come)."""
        if not self.is_cluster:
            yield from super().scan(match, count, type_)
            return
        yield from self.each_scan_node(lambda node: RedisAdapter.scan(node, match, count, type_))

    def each_scan_node(self, work: Callable[[RedisAdapter], Iterator[Any]]) -> Generator[Any, None, None]:
        """On a cluster, `work(primary)` on every primary in parallel (at most FAN_OUT at once), each
        one's items handed over as they come; the first failure is raised here and stops the others.

        Each primary works through its own keys (SCAN, a script) at its own pace; the caller merges what
        comes, in one thread, so its accumulators and progress line need no lock.
        """
        nodes = self.scan_nodes()
        if len(nodes) < 2:
            yield from work(nodes[0])
            return
        items: queue.Queue[Any] = queue.Queue(maxsize=len(nodes) * 4)
        stop = threading.Event()
        done = object()

        def pump(node: RedisAdapter) -> None:
            if stop.is_set():  # queued behind FAN_OUT others and the consumer has left
                return
            try:
                for item in work(node):
                    while not stop.is_set():
                        try:
                            items.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                items.put(done)
            except BaseException as exc:  # handed to the consumer, raised there
                items.put(exc)

        with ThreadPoolExecutor(max_workers=min(FAN_OUT, len(nodes))) as pool:
            for node in nodes:
                pool.submit(pump, node)
            remaining = len(nodes)
            try:
                while remaining:
                    item = items.get()
                    if item is done:
                        remaining -= 1
                    elif isinstance(item, BaseException):
                        raise item
                    else:
                        yield item
            finally:
                stop.set()
                while True:  # unblock pumps waiting on a full queue
                    try:
                        items.get_nowait()
                    except queue.Empty:
                        break

    def fan_out(self, nodes: Sequence[Node], work: Callable[[RedisAdapter], Any]) -> list[tuple[Node, Any]]:
        """`work` on each node in parallel (bounded); each result or exception, in the order of `nodes`."""

        def one(node: Node) -> Any:
            try:
                return work(self.node_adapter(node.address))
            except Exception as exc:
                return exc

        with ThreadPoolExecutor(max_workers=max(1, min(FAN_OUT, len(nodes)))) as pool:
            return list(zip(nodes, pool.map(one, nodes), strict=True))


def _no_client_but_us(node: RedisAdapter) -> bool:
    """Does no one but this scan use the node? Its primary's link (flag M), replicas of its own (S) and
    Sentinel's links (named sentinel-*) are not clients waiting on it; our own connection is the one
    asking (CLIENT LIST). A node that will not list its clients is taken as used."""
    try:
        clients = node.client_list()
    except TargetError:
        return False
    return not [
        c
        for c in clients
        if not set(str(c.get("flags", ""))) & {"M", "S"}
        and not str(c.get("name", "")).startswith("sentinel-")
        and c.get("cmd") != "client|list"
    ]


_SECOND_ARG_KEY = frozenset({"memory", "object"})


def _key_of(argv: Sequence[Any]) -> Any:
    """The key of a keyspace helper's per-key command (TYPE k, MEMORY USAGE k, RESTORE k ...)."""
    if len(argv) < 2:
        return None
    name = _arg_bytes(argv[0]).lower().decode("utf-8", "replace")
    if name in _SECOND_ARG_KEY:
        return argv[2] if len(argv) > 2 else None
    return argv[1]
