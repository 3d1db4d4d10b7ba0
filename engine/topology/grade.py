"""Per-node results (redis `on:` rows) graded: replication lag, cluster coverage. Pure; template helpers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.topology.parse import TOTAL_SLOTS


def _ok(rows: Sequence[Mapping[str, Any]] | None) -> list[Mapping[str, Any]]:
    return [r for r in rows or [] if r.get("outcome") == "ok" and isinstance(r.get("result"), Mapping)]


def replication_lag(
    primaries: Sequence[Mapping[str, Any]],
    replicas: Sequence[Mapping[str, Any]],
    max_bytes: float | None = None,
    max_seconds: float | None = None,
) -> list[dict[str, Any]]:
    """One row per answering replica: its primary, link, seconds since last I/O, bytes behind, and `alert`
    when the link is not up or a threshold is crossed. Bytes behind: the primary's master_repl_offset
    (read just before) minus the replica's slave_repl_offset; None when its primary did not answer."""
    offsets = {r["node"]: r["result"].get("master_repl_offset") for r in _ok(primaries)}
    out = []
    for row in _ok(replicas):
        info = row["result"]
        primary = f"{info.get('master_host')}:{info.get('master_port')}"
        behind = None
        if isinstance(offsets.get(primary), int) and isinstance(info.get("slave_repl_offset"), int):
            behind = max(0, offsets[primary] - info["slave_repl_offset"])
        link = info.get("master_link_status")
        io_s = info.get("master_last_io_seconds_ago")
        alert = link != "up"
        if max_bytes is not None and behind is not None and behind > max_bytes:
            alert = True
        if max_seconds is not None and isinstance(io_s, int | float) and (io_s < 0 or io_s > max_seconds):
            alert = True
        out.append(
            {"node": row["node"], "primary": primary, "link": link, "io_s": io_s, "bytes": behind, "alert": alert}
        )
    return out


def restart_order(topology: Mapping[str, Any] | None) -> dict[str, Any]:
    """A rolling restart's order over a primary with replicas (the `topology` built-in): every replica one at
    a time, by host then port (an IP numerically), then the primary, last, once a replica took over.
    `{replicas, primary, order}`; a Cluster or an unreachable deployment gives no order (`primary` None)."""
    if not isinstance(topology, Mapping) or topology.get("kind") == "cluster":
        return {"replicas": [], "primary": None, "order": []}
    nodes = [n for n in topology.get("nodes") or [] if isinstance(n, Mapping) and isinstance(n.get("address"), str)]
    replicas = sorted((n["address"] for n in nodes if n.get("role") == "replica"), key=_address_key)
    primaries = [n["address"] for n in nodes if n.get("role") == "primary"]
    primary = primaries[0] if len(primaries) == 1 else None
    return {"replicas": replicas, "primary": primary, "order": [*replicas, *([primary] if primary else [])]}


def _address_key(address: str) -> tuple[Any, ...]:
    import ipaddress

    host, _, port = address.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        host_key: tuple[Any, ...] = (0, ip.version, int(ip))
    except ValueError:
        host_key = (1, 0, host.lower())
    return (*host_key, int(port) if port.isdigit() else 0)


def cluster_state(info_rows: Sequence[Mapping[str, Any]], nodes_rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """CLUSTER INFO of every node and CLUSTER NODES (raw text) of one: state, coverage, failing and open slots."""
    states = {
        r["node"]: _info_text(r["result"]).get("cluster_state") for r in info_rows or [] if r.get("outcome") == "ok"
    }
    epochs: dict[Any, list[str]] = {}
    failing: list[dict[str, Any]] = []
    open_slots: list[dict[str, Any]] = []
    covered: set[int] = set()
    viewed = False
    for row in nodes_rows or []:
        if row.get("outcome") != "ok":
            continue
        for entry in cluster_nodes_text(row["result"]):
            if "myself" in entry["flags"]:  # a node shows only its own migrating/importing slots
                open_slots.extend({"node": entry["address"], "slot": s} for s in entry["open"])
            if viewed:
                continue  # coverage, failures and epochs: one node's view is enough
            if entry["flags"] & {"fail", "fail?"}:
                failing.append({"node": entry["address"], "flags": sorted(entry["flags"])})
            if "master" in entry["flags"]:
                epochs.setdefault(entry["config_epoch"], []).append(entry["address"])
                if "fail" in entry["flags"]:  # a failed primary keeps its slots in the view but serves none
                    continue
                for start, end in entry["slots"]:
                    covered.update(range(start, end + 1))
        viewed = True
    return {
        "states": states,
        "ok": bool(states) and all(s == "ok" for s in states.values()),
        "slots_covered": len(covered),
        "slots_missing": TOTAL_SLOTS - len(covered),
        "failing": failing,
        "open_slots": open_slots,
        "epoch_collisions": {str(k): v for k, v in epochs.items() if len(v) > 1},
    }


def _info_text(reply: Any) -> dict[str, str]:
    """CLUSTER INFO's `key:value` lines (or an already parsed mapping)."""
    if isinstance(reply, Mapping):
        return {str(k): str(v) for k, v in reply.items()}
    out = {}
    for line in str(reply).splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            out[key] = value
    return out


def cluster_nodes_text(reply: Any) -> list[dict[str, Any]]:
    """CLUSTER NODES lines: address, flags, config epoch, owned slot ranges, open (migrating/importing) slots."""
    out = []
    for line in str(reply).splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        slots, open_slots = [], []
        for token in fields[8:]:
            if token.startswith("["):
                open_slots.append(token.strip("[]"))
                continue
            start, _, end = token.partition("-")
            slots.append((int(start), int(end or start)))
        out.append(
            {
                "address": fields[1].split("@", 1)[0].split(",", 1)[0],
                "flags": set(fields[2].split(",")),
                "config_epoch": fields[6],
                "slots": slots,
                "open": open_slots,
            }
        )
    return out


def imbalance(rows: Sequence[Mapping[str, Any]], field: str | None = None) -> dict[str, Any]:
    """Largest over smallest of a per-node number (a key count, used_memory): 1.0 is perfectly even."""
    values = {}
    for row in _ok(rows) if field else [r for r in rows or [] if r.get("outcome") == "ok"]:
        value = row["result"].get(field) if field else row["result"]
        if isinstance(value, int | float):
            values[row["node"]] = value
    if not values:
        return {"values": {}, "ratio": None}
    low, high = min(values.values()), max(values.values())
    return {"values": values, "ratio": (high / low) if low > 0 else (None if high == 0 else float("inf"))}
