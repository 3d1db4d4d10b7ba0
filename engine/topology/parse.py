"""Replies about replication and clustering, turned into data. Pure: no sockets, never raises but ValueError.

Replies may come decoded (str) or raw (bytes), as RESP2 flat lists; the shapes are those of Redis 6-7:
ROLE, INFO replication (as a dict), CLUSTER SHARDS (7.0+), CLUSTER NODES, SENTINEL MASTER/REPLICAS.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from engine.topology.model import Node

TOTAL_SLOTS = 16384
P = ParamSpec("P")
R = TypeVar("R")


def _only_value_error(func: Callable[P, R]) -> Callable[P, R]:
    """A reply of the wrong shape is a ValueError naming the parser, whatever Python noticed first."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ValueError:
            raise
        except (TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
            raise ValueError(f"{func.__name__}: unexpected reply shape ({type(exc).__name__}: {exc})") from None

    return wrapper


def text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


@_only_value_error
def pairs(flat: Iterable[Any]) -> dict[str, Any]:
    """A RESP2 flat list `[k1, v1, k2, v2, ...]` (or an already-parsed dict) as a dict with str keys."""
    if isinstance(flat, Mapping):
        return {text(k): v for k, v in flat.items()}
    items = list(flat)
    if len(items) % 2:
        raise ValueError("a key/value list with an odd number of items")
    return {text(items[i]): items[i + 1] for i in range(0, len(items), 2)}


@_only_value_error
def role(reply: Any) -> dict[str, Any]:
    """ROLE: {role: primary|replica|sentinel, offset, replicas: [(host, port, offset)], primary, state}."""
    if not isinstance(reply, (list, tuple)) or not reply:
        raise ValueError(f"unexpected ROLE reply {reply!r:.80}")
    name = text(reply[0])
    if name == "master":
        replicas = [(text(r[0]), int(r[1]), int(r[2])) for r in (reply[2] if len(reply) > 2 else [])]
        return {"role": "primary", "offset": int(reply[1]), "replicas": replicas}
    if name == "slave":
        return {
            "role": "replica",
            "primary": (text(reply[1]), int(reply[2])),
            "state": text(reply[3]),
            "offset": int(reply[4]),
        }
    if name == "sentinel":
        return {"role": "sentinel", "masters": [text(m) for m in (reply[1] if len(reply) > 1 else [])]}
    raise ValueError(f"unknown role {name!r}")


@_only_value_error
def replicas_from_info(info: Mapping[str, Any]) -> list[dict[str, Any]]:
    """INFO replication's `slaveN` entries (redis-py parses them into dicts; raw text as `k=v,...`)."""
    out = []
    for key, value in info.items():
        if not (key.startswith("slave") and key[5:].isdigit()):
            continue
        entry = (
            value if isinstance(value, Mapping) else dict(p.split("=", 1) for p in text(value).split(",") if "=" in p)
        )
        out.append(
            {
                "host": text(entry.get("ip")),
                "port": int(entry.get("port", 0)),
                "state": text(entry.get("state", "")),
                "offset": int(entry.get("offset", 0)),
                "lag": int(entry.get("lag", 0)),
            }
        )
    return out


@_only_value_error
def cluster_shards(reply: Any) -> list[Node]:
    """CLUSTER SHARDS (Redis 7.0+): every node with its role, slots (primaries) and health."""
    nodes: list[Node] = []
    for shard in reply:
        fields = pairs(shard)
        flat = [int(s) for s in fields.get("slots", [])]
        ranges = tuple((flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2))
        members = [pairs(n) for n in fields.get("nodes", [])]
        primary = next((m for m in members if text(m.get("role")) == "master"), None)
        primary_address = f"{_ip(primary)}:{int(primary['port'])}" if primary else None
        for member in members:
            is_primary = text(member.get("role")) == "master"
            nodes.append(
                Node(
                    host=_ip(member),
                    port=int(member.get("port") or member.get("tls-port") or 0),
                    role="primary" if is_primary else "replica",
                    offset=int(member.get("replication-offset", 0)),
                    primary=None if is_primary else primary_address,
                    node_id=text(member.get("id")),
                    slots=ranges if is_primary else (),
                    health=text(member.get("health", "")) or None,
                )
            )
    return nodes


@_only_value_error
def cluster_nodes(reply: Any) -> list[Node]:
    """CLUSTER NODES (any version): `id ip:port@cport[,host] flags primary-id ping pong epoch link slots...`."""
    lines = [line for line in text(reply).splitlines() if line.strip()]
    raw: list[list[str]] = [line.split() for line in lines]
    by_id = {}
    for fields in raw:
        if len(fields) < 8:
            raise ValueError(f"unexpected CLUSTER NODES line {' '.join(fields)!r:.80}")
        address = fields[1].split("@", 1)[0].split(",", 1)[0]
        host, _, port_text = address.rpartition(":")
        by_id[fields[0]] = (host, int(port_text or 0))
    nodes = []
    for fields in raw:
        node_id, flags, primary_id, link = fields[0], fields[2].split(","), fields[3], fields[7]
        host, port = by_id[node_id]
        is_primary = "master" in flags
        ranges = []
        for token in fields[8:]:
            if token.startswith("["):
                continue  # a slot being migrated or imported: reported by cluster-health, not owned
            start, _, end = token.partition("-")
            ranges.append((int(start), int(end or start)))
        health = (
            "fail" if "fail" in flags else "pfail" if "fail?" in flags else "online" if link == "connected" else link
        )
        primary = by_id.get(primary_id)
        nodes.append(
            Node(
                host=host,
                port=port,
                role="primary" if is_primary else "replica",
                primary=None if is_primary or primary is None else f"{primary[0]}:{primary[1]}",
                node_id=node_id,
                slots=tuple(ranges) if is_primary else (),
                health=health,
            )
        )
    return nodes


@_only_value_error
def sentinel_replicas(reply: Any) -> list[dict[str, Any]]:
    """SENTINEL REPLICAS <name>: each replica's address and flags (s_down, disconnected ...)."""
    out = []
    for entry in reply or []:
        fields = pairs(entry)
        out.append(
            {
                "host": text(fields.get("ip")),
                "port": int(fields.get("port", 0)),
                "flags": text(fields.get("flags", "")).split(","),
                "link": text(fields.get("master-link-status", "")),
                "offset": int(fields.get("slave-repl-offset", 0) or 0),
            }
        )
    return out


def _ip(member: Mapping[str, Any] | None) -> str:
    if member is None:
        return ""
    return text(member.get("ip") or member.get("endpoint") or "")
