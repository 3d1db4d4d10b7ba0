"""Pure accumulators for keyspace scans, and the parsing of pipelined per-key replies.

Each accumulator takes one observation per key (`add`) and gives its figures at the end
(`result`). Memory stays bounded: counts per type and per tenant, a fixed-size sample, a heap of
the N biggest keys per type, and (for listings) at most `limit` rows. A key that vanished between
SCAN and its check (expired, deleted) arrives as None and is skipped: neither counted nor an error.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ActionFailed

NO_TENANT = "(none)"
CHECKS = ("type", "ttl", "memory")


def tenant_of(key: str) -> str:
    """'tenant:acme:wm:active' -> 'acme'; keys outside `tenant:<t>:...` -> NO_TENANT ('(none)')."""
    parts = key.split(":", 2)
    if len(parts) == 3 and parts[0] == "tenant" and parts[1]:
        return parts[1]
    return NO_TENANT


def _by_count(counts: dict[str, int]) -> dict[str, int]:
    """Largest first, then by name: the order an operator reads a report in."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _by_bytes(groups: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return dict(sorted(groups.items(), key=lambda kv: (-kv[1]["bytes"], kv[0])))


# -- TTL audit -----------------------------------------------------------------------------------
@dataclass
class TtlAudit:
    """Keys without a TTL: how many, per tenant, and the first `sample_size` of them."""

    sample_size: int = 20
    scanned: int = 0
    without_ttl: int = 0
    by_tenant: dict[str, int] = field(default_factory=dict)
    sample: list[str] = field(default_factory=list)

    def add(self, key: str, ttl: int | None) -> None:
        """`ttl` as TTL/PTTL answers: -1 no expiry, >= 0 expiring; None or -2: the key is gone."""
        if ttl is None or ttl == -2:
            return
        self.scanned += 1
        if ttl == -1:
            self.without_ttl += 1
            tenant = tenant_of(key)
            self.by_tenant[tenant] = self.by_tenant.get(tenant, 0) + 1
            if len(self.sample) < self.sample_size:
                self.sample.append(key)

    def absorb(self, scanned: int, without_ttl: int, by_tenant: dict[str, int], sample: list[str]) -> None:
        """A batch already counted elsewhere (the server-side path): same totals as adding key by key."""
        self.scanned += scanned
        self.without_ttl += without_ttl
        for tenant, count in by_tenant.items():
            self.by_tenant[tenant] = self.by_tenant.get(tenant, 0) + count
        self.sample.extend(sample[: max(self.sample_size - len(self.sample), 0)])

    def result(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "without_ttl": self.without_ttl,
            "by_tenant": _by_count(self.by_tenant),
            "sample": list(self.sample),
        }


# -- memory report ------------------------------------------------------------------------------
class TopN:
    """The n largest (size, key) pairs seen, in O(n) memory."""

    def __init__(self, n: int):
        self.n = n
        self._heap: list[tuple[int, str]] = []

    def add(self, size: int, key: str) -> None:
        if self.n <= 0:
            return
        if len(self._heap) < self.n:
            heapq.heappush(self._heap, (size, key))
        elif (size, key) > self._heap[0]:
            heapq.heapreplace(self._heap, (size, key))

    def items(self) -> list[tuple[int, str]]:
        """Largest first; equal sizes by key name."""
        return sorted(self._heap, key=lambda sk: (-sk[0], sk[1]))


@dataclass
class MemoryReport:
    """What `redis-cli --bigkeys` and `--memkeys` give (biggest keys per type, memory per type), plus tenants."""

    top: int = 10
    scanned: int = 0
    total_bytes: int = 0
    by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    by_tenant: dict[str, dict[str, int]] = field(default_factory=dict)
    _biggest: dict[str, TopN] = field(default_factory=dict)

    def add(self, key: str, kind: str | None, size: int | None) -> None:
        """`kind` as TYPE answers, `size` as MEMORY USAGE answers; 'none'/None: the key is gone."""
        if kind is None or kind == "none" or size is None:
            return
        self.scanned += 1
        self.total_bytes += size
        for groups, name in ((self.by_type, kind), (self.by_tenant, tenant_of(key))):
            group = groups.setdefault(name, {"keys": 0, "bytes": 0})
            group["keys"] += 1
            group["bytes"] += size
        self._biggest.setdefault(kind, TopN(self.top)).add(size, key)

    def absorb(
        self,
        scanned: int,
        total_bytes: int,
        by_type: dict[str, tuple[int, int]],
        by_tenant: dict[str, tuple[int, int]],
        candidates: list[tuple[str, str, int]],
    ) -> None:
        """A batch aggregated elsewhere (the server-side path); `candidates` are its biggest (type, key, bytes)."""
        self.scanned += scanned
        self.total_bytes += total_bytes
        for groups, batch in ((self.by_type, by_type), (self.by_tenant, by_tenant)):
            for name, (keys, size) in batch.items():
                group = groups.setdefault(name, {"keys": 0, "bytes": 0})
                group["keys"] += keys
                group["bytes"] += size
        for kind, key, size in candidates:
            self._biggest.setdefault(kind, TopN(self.top)).add(size, key)

    def biggest(self) -> dict[str, list[dict[str, Any]]]:
        """Per type, the biggest keys first: [{key, bytes, tenant}]."""
        return {
            kind: [{"key": key, "bytes": size, "tenant": tenant_of(key)} for size, key in top.items()]
            for kind, top in sorted(self._biggest.items())
        }

    def result(self, details: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """The report; `details` (key -> extra fields such as length and ttl) are merged into `biggest`."""
        biggest = self.biggest()
        for rows in biggest.values():
            for row in rows:
                row.update((details or {}).get(row["key"], {}))
        return {
            "scanned": self.scanned,
            "total_bytes": self.total_bytes,
            "by_type": _by_bytes(self.by_type),
            "by_tenant": _by_bytes(self.by_tenant),
            "biggest": biggest,
        }


# -- listings ------------------------------------------------------------------------------------
@dataclass
class TenantListing:
    """Rows grouped by tenant, at most `limit` of them; `truncated` once a row had to be left out."""

    limit: int = 10_000
    count: int = 0
    truncated: bool = False
    tenants: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        return self.count >= self.limit

    def add(self, row: dict[str, Any]) -> bool:
        """Keep `row` (it has a `key`); False, and `truncated` set, when the limit is already reached."""
        if self.full:
            self.truncated = True
            return False
        self.tenants.setdefault(tenant_of(row["key"]), []).append(row)
        self.count += 1
        return True

    def result(self) -> dict[str, Any]:
        return {
            "tenants": {t: sorted(rows, key=lambda r: r["key"]) for t, rows in sorted(self.tenants.items())},
            "count": self.count,
            "truncated": self.truncated,
        }


# -- bounded samples -----------------------------------------------------------------------------
@dataclass
class Tally:
    """A count, a byte sum and the first `sample_size` keys: the blast radius of a pattern operation."""

    sample_size: int = 20
    count: int = 0
    bytes: int = 0
    sample: list[str] = field(default_factory=list)

    def add(self, key: str, size: int = 0) -> None:
        self.count += 1
        self.bytes += size
        if len(self.sample) < self.sample_size:
            self.sample.append(key)


# -- pipelined replies ---------------------------------------------------------------------------
def _fail(command: str, key: str, reply: BaseException) -> ActionFailed:
    return ActionFailed(f"{command} {key}: {reply}")


def parse_ttls(keys: Sequence[str], replies: Sequence[Any]) -> list[tuple[str, int]]:
    """(key, ttl) for the keys still there; TTL -2 (gone) is dropped, an error reply raises."""
    out = []
    for key, reply in zip(keys, replies, strict=True):
        if isinstance(reply, BaseException):
            raise _fail("TTL", key, reply)
        if reply is None or reply == -2:
            continue
        out.append((key, int(reply)))
    return out


def parse_sizes(keys: Sequence[str], replies: Sequence[Any]) -> list[tuple[str, int]]:
    """(key, bytes) from MEMORY USAGE replies; nil (gone) is dropped, an error reply raises."""
    out = []
    for key, reply in zip(keys, replies, strict=True):
        if isinstance(reply, BaseException):
            raise _fail("MEMORY USAGE", key, reply)
        if reply is None:
            continue
        out.append((key, int(reply)))
    return out


def parse_type_memory(keys: Sequence[str], replies: Sequence[Any]) -> list[tuple[str, str, int]]:
    """(key, type, bytes) from interleaved TYPE, MEMORY USAGE replies; gone keys dropped."""
    if len(replies) != 2 * len(keys):
        raise ValueError(f"expected {2 * len(keys)} replies, got {len(replies)}")
    out = []
    for i, key in enumerate(keys):
        kind, size = replies[2 * i], replies[2 * i + 1]
        for command, reply in (("TYPE", kind), ("MEMORY USAGE", size)):
            if isinstance(reply, BaseException):
                raise _fail(command, key, reply)
        if kind in (None, "none") or size is None:
            continue
        out.append((key, str(kind), int(size)))
    return out


def _wire(checks: Sequence[str]) -> list[str]:
    """The checks as sent. MEMORY USAGE does not expire keys (it finds a key whose TTL ran out but that
    Redis has not reclaimed yet), so it always follows a command that does: TYPE or TTL if asked for,
    else an EXISTS whose reply is not kept."""
    if "memory" in checks and "type" not in checks and "ttl" not in checks:
        return ["exists", *checks]
    return list(checks)


def check_calls(key: str, checks: Sequence[str]) -> list[list[str]]:
    """The commands for one key's checks, in `checks` order (plus EXISTS before a lone MEMORY USAGE)."""
    commands = {
        "exists": ["EXISTS", key],
        "type": ["TYPE", key],
        "ttl": ["TTL", key],
        "memory": ["MEMORY", "USAGE", key],
    }
    return [commands[c] for c in _wire(checks)]


def parse_checks(keys: Sequence[str], checks: Sequence[str], replies: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows {key, <check>: value} from replies to `check_calls` for every key; gone keys dropped."""
    wire = _wire(checks)
    width = len(wire)
    if len(replies) != width * len(keys):
        raise ValueError(f"expected {width * len(keys)} replies, got {len(replies)}")
    out = []
    for i, key in enumerate(keys):
        row: dict[str, Any] = {"key": key}
        gone = False
        for j, check in enumerate(wire):
            reply = replies[i * width + j]
            if isinstance(reply, BaseException):
                raise _fail(check.upper(), key, reply)
            if (
                (check == "type" and reply in (None, "none"))
                or (check == "ttl" and reply == -2)
                or (check == "memory" and reply is None)
                or (check == "exists" and reply == 0)
            ):
                gone = True
            if check != "exists":
                row[check] = reply
        if not gone:
            out.append(row)
    return out


def normalise_checks(checks: Iterable[str] | None) -> list[str]:
    """Known checks in the canonical order (type, ttl, memory); an unknown one is a usage error."""
    wanted = list(checks) if checks else list(CHECKS)
    unknown = [c for c in wanted if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(map(str, unknown))}: use {', '.join(CHECKS)}")
    return [c for c in CHECKS if c in wanted]
