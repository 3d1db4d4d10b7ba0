"""Which node a keyspace analysis reads (`read_from`): an in-sync replica spares the primary's clients.

A TTL audit or a memory report walks every key. On the primary each of its calls delays the production
requests that arrive during it (docs/performance.md: about the length of one call added to their p99).
A replica holds the same keys a few writes behind, which a count or a size report does not notice, so
`read_from: auto` reads there when one is in sync and says which one and why; the others are named with
the reason they were passed over. Pure: the routing adapter asks the servers, this decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MODES = ("auto", "target", "replica")
MAX_LAG_BYTES = 1 << 20  # about a second of a busy primary's writes: a count cannot tell
MAX_IO_SECONDS = 10  # repl-ping-replica-period's default: a quieter link is not known to be alive


class ReadFromError(ValueError):
    """`read_from: replica` and no replica can be read."""


@dataclass(frozen=True)
class ReplicaState:
    """One replica as it describes itself (INFO replication and persistence), or why it could not."""

    address: str
    link: str | None = None  # master_link_status
    io_seconds: int | None = None  # master_last_io_seconds_ago (-1: never)
    syncing: bool = False  # master_sync_in_progress
    loading: bool = False
    offset: int | None = None  # slave_repl_offset
    role: str | None = None  # "slave" when it is one
    error: str | None = None  # it did not answer

    @classmethod
    def from_info(
        cls, address: str, replication: Mapping[str, Any], persistence: Mapping[str, Any] | None = None
    ) -> ReplicaState:
        return cls(
            address,
            link=_text(replication.get("master_link_status")),
            io_seconds=_int(replication.get("master_last_io_seconds_ago")),
            syncing=_int(replication.get("master_sync_in_progress")) == 1,
            loading=_int((persistence or {}).get("loading")) == 1,
            offset=_int(replication.get("slave_repl_offset")),
            role=_text(replication.get("role")),
        )


@dataclass(frozen=True)
class ReadNode:
    """Where to read: `address` None is the target itself."""

    address: str | None
    reason: str


def behind(primary_offset: int | None, state: ReplicaState) -> int | None:
    """Bytes of the primary's replication stream the replica has not applied (None: unknown)."""
    if primary_offset is None or state.offset is None:
        return None
    return max(primary_offset - state.offset, 0)  # read after the primary: it can be ahead of what we saw


def why_not(state: ReplicaState, primary_offset: int | None) -> str | None:
    """Why this replica is not read (None: it is in sync)."""
    if state.error is not None:
        return state.error
    if state.role not in (None, "slave"):
        return f"it says it is a {state.role}"
    if state.loading:
        return "loading its dataset"
    if state.link != "up":
        return f"link {state.link or 'unknown'}"
    if state.syncing:
        return "a full sync in progress"
    if state.io_seconds is None or not 0 <= state.io_seconds <= MAX_IO_SECONDS:
        return f"last heard from its primary {state.io_seconds} s ago"
    lag = behind(primary_offset, state)
    if lag is None:
        return "its offset is unknown"
    if lag > MAX_LAG_BYTES:
        return f"{lag:,} bytes behind"
    return None


def choose(
    mode: str,
    *,
    target_is_replica: bool,
    primary: str | None,
    primary_offset: int | None,
    replicas: Sequence[ReplicaState],
    cluster: bool = False,
) -> ReadNode:
    """The node to read under `mode` (auto | target | replica); ReadFromError when `replica` has none."""
    if mode not in MODES:
        raise ReadFromError(f"read_from: {mode!r} is not one of {', '.join(MODES)}")
    if mode == "target":
        return ReadNode(None, "read_from: target")
    if target_is_replica:
        return ReadNode(None, "the target is a replica")
    if cluster:
        reason = "a Cluster: each shard is read on its primary (its replicas answer key reads only after READONLY)"
        if mode == "replica":
            raise ReadFromError(f"read_from: replica: {reason}")
        return ReadNode(None, reason)
    if not replicas:
        if mode == "replica":
            raise ReadFromError("read_from: replica: the primary has no replica")
        return ReadNode(None, "no replica")
    passed: list[str] = []
    ready: list[tuple[int, str]] = []
    for state in replicas:
        unready = why_not(state, primary_offset)
        if unready is None:
            ready.append((behind(primary_offset, state) or 0, state.address))
        else:
            passed.append(f"{state.address}: {unready}")
    if ready:
        lag, address = min(ready)
        others = f"; passed over {'; '.join(passed)}" if passed else ""
        return ReadNode(
            address,
            f"a replica in sync with primary {primary} ({lag:,} bytes behind), so the primary's clients are "
            f"spared{others}",
        )
    if mode == "replica":
        raise ReadFromError(f"read_from: replica: no replica in sync ({'; '.join(passed)})")
    return ReadNode(None, f"no replica in sync ({'; '.join(passed)})")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
