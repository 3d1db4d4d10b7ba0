"""What a deployment looks like at run start: every node, its role, offset, slots; Sentinel's view."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("standalone", "replicated", "sentinel", "cluster")
ROLES = ("primary", "replica")


@dataclass(frozen=True)
class Node:
    host: str
    port: int
    role: str  # primary | replica
    offset: int | None = None
    primary: str | None = None  # a replica's primary, "host:port"
    link: str | None = None  # a replica's link to its primary: up | down | connecting | sync ...
    node_id: str | None = None  # cluster node id
    slots: tuple[tuple[int, int], ...] = ()  # cluster slot ranges owned (primaries)
    health: str | None = None  # cluster: online | loading | fail | pfail

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def slot_count(self) -> int:
        return sum(end - start + 1 for start, end in self.slots)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"address": self.address, "role": self.role}
        for name in ("offset", "primary", "link", "node_id", "health"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.slots:
            out["slots"] = [list(r) for r in self.slots]
        return out


@dataclass(frozen=True)
class SentinelView:
    master_name: str
    answered: tuple[str, ...]  # sentinels that answered, "host:port"
    unreachable: tuple[str, ...] = ()
    quorum: int | None = None
    quorum_ok: bool | None = None
    quorum_message: str | None = None
    disagreement: tuple[str, ...] = ()  # sentinels that named another primary

    def as_json(self) -> dict[str, Any]:
        return {
            "master_name": self.master_name,
            "answered": list(self.answered),
            "unreachable": list(self.unreachable),
            "quorum": self.quorum,
            "quorum_ok": self.quorum_ok,
            "quorum_message": self.quorum_message,
            "disagreement": list(self.disagreement),
        }


@dataclass(frozen=True)
class Topology:
    kind: str
    nodes: tuple[Node, ...]
    seed: str
    sentinel: SentinelView | None = None
    notes: tuple[str, ...] = field(default=())  # what discovery had to work around, said plainly

    @property
    def primaries(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == "primary")

    @property
    def replicas(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == "replica")

    @property
    def primary(self) -> Node | None:
        """The one primary of a non-cluster deployment (None for a cluster or when none was found)."""
        primaries = self.primaries
        return primaries[0] if self.kind != "cluster" and len(primaries) == 1 else None

    def replicas_of(self, primary: Node) -> tuple[Node, ...]:
        return tuple(n for n in self.replicas if n.primary == primary.address)

    def node(self, address: str) -> Node | None:
        return next((n for n in self.nodes if n.address == address), None)

    def slot_owner(self, slot: int) -> Node | None:
        return next((n for n in self.primaries if any(a <= slot <= b for a, b in n.slots)), None)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "seed": self.seed, "nodes": [n.as_json() for n in self.nodes]}
        if self.sentinel is not None:
            out["sentinel"] = self.sentinel.as_json()
        if self.notes:
            out["notes"] = list(self.notes)
        return out
