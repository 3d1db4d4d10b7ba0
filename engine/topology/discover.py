"""Find the whole deployment from one seed (or from Sentinel), the way `redis-cli --cluster` and cstar do.

All I/O goes through `connect(host, port)`, which returns a client with `execute_command` and `close`
(the Redis adapter passes its own guarded connections): discovery only ever sends read commands
(ROLE, INFO, CLUSTER SHARDS/NODES, SENTINEL GET-MASTER-ADDR-BY-NAME/MASTER/REPLICAS/CKQUORUM).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from engine.topology import parse
from engine.topology.model import Node, SentinelView, Topology

Connect = Callable[[str, int], Any]


class DiscoveryError(RuntimeError):
    """The deployment could not be worked out; the message says what answered and what did not."""


def discover(seed: tuple[str, int], connect: Connect) -> Topology:
    """The deployment `seed` belongs to: standalone, primary with replicas, or cluster."""
    host, port = seed
    notes: list[str] = []
    with _Session(connect) as session:
        info = session.call(host, port, "INFO", "cluster")
        if isinstance(info, dict) and str(info.get("cluster_enabled", "0")) == "1":
            return Topology("cluster", tuple(_cluster_nodes(session, host, port)), f"{host}:{port}")
        me = parse.role(session.call(host, port, "ROLE"))
        if me["role"] == "sentinel":
            raise DiscoveryError(f"{host}:{port} is a Sentinel: give it as --sentinel with --master NAME")
        if me["role"] == "replica":
            primary_host, primary_port = me["primary"]
            notes.append(f"seed {host}:{port} is a replica of {primary_host}:{primary_port}; the primary was used")
            try:
                nodes = _primary_and_replicas(session, primary_host, primary_port, notes)
            except Exception as exc:  # the primary is down or refuses us: what the replica knows is still true
                notes.append(f"primary {primary_host}:{primary_port} did not answer: {type(exc).__name__}: {exc}")
                info = session.call(host, port, "INFO", "replication")
                link = str(info.get("master_link_status")) if isinstance(info, dict) else None
                nodes = [
                    Node(primary_host, primary_port, "primary", health="unreachable"),
                    Node(
                        host, port, "replica", offset=me["offset"], primary=f"{primary_host}:{primary_port}", link=link
                    ),
                ]
        else:
            nodes = _primary_and_replicas(session, host, port, notes, me)
    kind = "replicated" if len(nodes) > 1 else "standalone"
    return Topology(kind, tuple(nodes), f"{seed[0]}:{seed[1]}", notes=tuple(notes))


def discover_sentinel(sentinels: Sequence[tuple[str, int]], master_name: str, connect: Connect) -> Topology:
    """Ask every Sentinel for the primary of `master_name`; the majority answer wins and dissent is recorded."""
    answers: dict[str, tuple[str, int]] = {}
    unreachable: list[str] = []
    notes: list[str] = []
    with _Session(connect) as session:
        for host, port in sentinels:
            address = f"{host}:{port}"
            try:
                reply = session.call(host, port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", master_name)
            except Exception as exc:
                unreachable.append(address)
                notes.append(f"sentinel {address}: {type(exc).__name__}: {exc}")
                continue
            if reply:
                answers[address] = (parse.text(reply[0]), int(reply[1]))
            else:
                notes.append(f"sentinel {address} does not know master {master_name!r}")
        if not answers:
            raise DiscoveryError(
                f"no Sentinel named a primary for {master_name!r} "
                f"(asked {', '.join(f'{h}:{p}' for h, p in sentinels)}; " + "; ".join(notes) + ")"
            )
        (primary, _), *_ = Counter(answers.values()).most_common(1)
        dissent = tuple(a for a, p in answers.items() if p != primary)
        asker = next(a for a, p in answers.items() if p == primary)
        s_host, s_port = asker.rsplit(":", 1)
        quorum_ok, quorum_message = True, None
        try:
            quorum_message = parse.text(session.call(s_host, int(s_port), "SENTINEL", "CKQUORUM", master_name))
        except Exception as exc:
            quorum_ok, quorum_message = False, str(exc)
        quorum = None
        try:
            quorum = int(parse.pairs(session.call(s_host, int(s_port), "SENTINEL", "MASTER", master_name))["quorum"])
        except Exception:
            pass
        nodes = _primary_and_replicas(session, primary[0], primary[1], notes)
        nodes += _lost_replicas(session, (s_host, int(s_port)), master_name, nodes, notes)
    view = SentinelView(
        master_name=master_name,
        answered=tuple(answers),
        unreachable=tuple(unreachable),
        quorum=quorum,
        quorum_ok=quorum_ok,
        quorum_message=quorum_message,
        disagreement=dissent,
    )
    seed = ",".join(f"{h}:{p}" for h, p in sentinels)
    return Topology("sentinel", tuple(nodes), seed, sentinel=view, notes=tuple(notes))


def _primary_and_replicas(
    session: _Session, host: str, port: int, notes: list[str], me: dict[str, Any] | None = None
) -> list[Node]:
    """The primary at host:port and its replicas; `me`: its ROLE when the caller already asked (a round trip)."""
    me = me or parse.role(session.call(host, port, "ROLE"))
    if me["role"] != "primary":
        raise DiscoveryError(f"{host}:{port} was named the primary but says it is a {me['role']}")
    nodes = [Node(host, port, "primary", offset=me["offset"])]
    for r_host, r_port, r_offset in me["replicas"]:
        link = None
        try:
            info = session.call(r_host, r_port, "INFO", "replication")
            link = str(info.get("master_link_status")) if isinstance(info, dict) else None
            r_offset = int(info.get("slave_repl_offset", r_offset)) if isinstance(info, dict) else r_offset
        except Exception as exc:
            link = "unreachable"
            notes.append(f"replica {r_host}:{r_port}: {type(exc).__name__}: {exc}")
        nodes.append(Node(r_host, r_port, "replica", offset=r_offset, primary=f"{host}:{port}", link=link))
    return nodes


def _lost_replicas(
    session: _Session, sentinel: tuple[str, int], master_name: str, found: list[Node], notes: list[str]
) -> list[Node]:
    """Replicas Sentinel knows that the primary does not list: their link is down (a wrong masterauth, a
    replica that died). Without them a replica that lost its primary would vanish from the deployment."""
    try:
        known = parse.sentinel_replicas(session.call(*sentinel, "SENTINEL", "REPLICAS", master_name))
    except Exception as exc:
        notes.append(f"sentinel {sentinel[0]}:{sentinel[1]}: SENTINEL REPLICAS: {type(exc).__name__}: {exc}")
        return []
    listed = {n.address for n in found}
    primary = found[0].address
    out = []
    for entry in known:
        where = f"{entry['host']}:{entry['port']}"
        if where in listed:
            continue
        link, offset = "unreachable", entry["offset"]
        try:
            info = session.call(entry["host"], entry["port"], "INFO", "replication")
            if isinstance(info, dict):
                link = str(info.get("master_link_status"))
                offset = int(info.get("slave_repl_offset", offset))
        except Exception as exc:
            notes.append(f"replica {where}: {type(exc).__name__}: {exc}")
        flags = ",".join(f for f in entry["flags"] if f)
        notes.append(f"replica {where} is known to Sentinel ({flags}) but not connected to the primary {primary}")
        out.append(Node(entry["host"], entry["port"], "replica", offset=offset, primary=primary, link=link))
    return out


def _cluster_nodes(session: _Session, host: str, port: int) -> list[Node]:
    try:
        return parse.cluster_shards(session.call(host, port, "CLUSTER", "SHARDS"))
    except Exception:
        return parse.cluster_nodes(session.call(host, port, "CLUSTER", "NODES"))


class _Session:
    """One connection per node for the length of a discovery, closed on the way out whatever happens."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self._clients: dict[tuple[str, int], Any] = {}

    def call(self, host: str, port: int, *args: Any) -> Any:
        key = (host, int(port))
        if key not in self._clients:
            self._clients[key] = self._connect(host, int(port))
        return self._clients[key].execute_command(*args)

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self._clients.values():
            try:
                client.close()
                # a client built on a pool it was given leaves the pool's sockets open on close(): they would
                # linger as idle connections (last command ROLE) until the garbage collector met them
                pool = getattr(client, "connection_pool", None)
                if pool is not None:
                    pool.disconnect()
            except Exception:
                pass
