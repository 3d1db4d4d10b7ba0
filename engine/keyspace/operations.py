"""The keyspace operations, each over an iterable of SCAN pages: analysis, measurement and pattern changes.

`pages` is any iterable of key lists (normally `pages.scan_pages(adapter, match, count)`), consumed
once, page by page: each page costs one pipeline, then only the aggregates are kept. `progress` is
anything with `advance(n)` (the step's progress bar), advanced by the keys of each page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from engine.keyspace.aggregate import MemoryReport, Tally, TenantListing, TtlAudit
from engine.keyspace.pages import checks_page, details, expire_page, size_page, ttl_page, type_memory_page, unlink_page

if TYPE_CHECKING:
    from engine.adapters.redis import RedisAdapter

Pages = Iterable[Sequence[str]]


class Progress(Protocol):
    def advance(self, n: int) -> None: ...


class _Silent:
    def advance(self, n: int) -> None:
        pass


_SILENT = _Silent()


# -- analysis --------------------------------------------------------------------------------------
def audit_ttl(adapter: RedisAdapter, pages: Pages, *, sample: int = 20, progress: Progress = _SILENT) -> dict[str, Any]:
    """{scanned, without_ttl, by_tenant, sample}: the keys without a TTL, counted per tenant."""
    audit = TtlAudit(sample_size=sample)
    for page in pages:
        for key, ttl in ttl_page(adapter, page):
            audit.add(key, ttl)
        progress.advance(len(page))
    return audit.result()


def memory_report(
    adapter: RedisAdapter, pages: Pages, *, top: int = 10, progress: Progress = _SILENT
) -> dict[str, Any]:
    """{scanned, total_bytes, by_type, by_tenant, biggest}: one pass of TYPE + MEMORY USAGE per page."""
    report = MemoryReport(top=top)
    for page in pages:
        for key, kind, size in type_memory_page(adapter, page):
            report.add(key, kind, size)
        progress.advance(len(page))
    biggest = {kind: [row["key"] for row in rows] for kind, rows in report.biggest().items()}
    return report.result(details(adapter, biggest))


def list_keys(
    adapter: RedisAdapter,
    pages: Pages,
    *,
    checks: Sequence[str],
    limit: int,
    progress: Progress = _SILENT,
) -> dict[str, Any]:
    """{tenants: {t: [{key, type, ttl, memory}]}, count, truncated}: stops once `limit` rows are kept."""
    listing = TenantListing(limit=limit)
    for page in pages:
        for row in checks_page(adapter, page, checks):
            if not listing.add(row):
                break
        progress.advance(len(page))
        if listing.truncated:
            break
    return listing.result()


# -- measurement (reads only: also what a dry-run reports) ------------------------------------------
def measure_expire(
    adapter: RedisAdapter,
    pages: Pages,
    *,
    only_without_ttl: bool,
    sample: int = 20,
    progress: Progress = _SILENT,
    collect: list[str] | None = None,
    collect_max: int = 0,
) -> dict[str, Any]:
    """{matched, count, had_ttl, sample}: how many matching keys EXPIRE would change (count).

    With `collect`, the keys that would change are appended to it (at most `collect_max`), so the
    change can act on exactly the measured keys without scanning the keyspace a second time.
    """
    matched = 0
    tally = Tally(sample_size=sample)
    for page in pages:
        for key, ttl in ttl_page(adapter, page):
            matched += 1
            if ttl == -1 or not only_without_ttl:
                tally.add(key)
                if collect is not None and len(collect) < collect_max:
                    collect.append(key)
        progress.advance(len(page))
    return {"matched": matched, "count": tally.count, "had_ttl": matched - tally.count, "sample": tally.sample}


def measure_delete(
    adapter: RedisAdapter,
    pages: Pages,
    *,
    sample: int = 20,
    progress: Progress = _SILENT,
    collect: list[str] | None = None,
    collect_max: int = 0,
) -> dict[str, Any]:
    """{count, bytes, sample}: the matching keys and the memory they hold (MEMORY USAGE); `collect` as above."""
    tally = Tally(sample_size=sample)
    for page in pages:
        for key, size in size_page(adapter, page):
            tally.add(key, size)
            if collect is not None and len(collect) < collect_max:
                collect.append(key)
        progress.advance(len(page))
    return {"count": tally.count, "bytes": tally.bytes, "sample": tally.sample}


def in_pages(keys: Sequence[str], size: int = 1000) -> list[list[str]]:
    """Measured keys back into pipeline-sized pages."""
    return [list(keys[i : i + size]) for i in range(0, len(keys), size)]


# -- changes ---------------------------------------------------------------------------------------
@dataclass
class Applied:
    """What a pattern change did: its result, and a sample of the keys it really changed."""

    result: dict[str, Any]
    sample: list[str] = field(default_factory=list)


def expire_matching(
    adapter: RedisAdapter,
    pages: Pages,
    *,
    ttl: int,
    max_keys: int,
    only_without_ttl: bool = True,
    nx: bool = True,
    sample: int = 20,
    progress: Progress = _SILENT,
) -> Applied:
    """Set `ttl` on matching keys, page by page, never changing more than `max_keys`.

    Result {matched, changed, skipped_had_ttl, capped}; `capped` is true when it stopped at max_keys
    with keys left unexamined (more keys matched than when it was measured).
    """
    changed_total = skipped = 0
    changed_sample: list[str] = []
    capped = False
    for page in pages:
        rest = list(page)
        while rest and changed_total < max_keys:  # a batch never exceeds the room left under the cap
            room = max_keys - changed_total
            batch, rest = rest[:room], rest[room:]
            changed, skip = expire_page(adapter, batch, ttl, only_without_ttl=only_without_ttl, nx=nx)
            changed_total += len(changed)
            skipped += skip
            changed_sample.extend(changed[: max(sample - len(changed_sample), 0)])
        progress.advance(len(page))
        if rest:
            capped = True
            break
    result = {
        "matched": changed_total + skipped,
        "changed": changed_total,
        "skipped_had_ttl": skipped,
        "capped": capped,
    }
    return Applied(result, changed_sample)


def delete_matching(
    adapter: RedisAdapter,
    pages: Pages,
    *,
    max_keys: int,
    sample: int = 20,
    progress: Progress = _SILENT,
) -> Applied:
    """UNLINK matching keys, page by page (one pipeline each), never more than `max_keys`.

    Result {deleted, capped}; `capped` as for `expire_matching`.
    """
    deleted = 0
    removed_sample: list[str] = []
    capped = False
    for page in pages:
        rest = list(page)
        while rest and deleted < max_keys:
            room = max_keys - deleted
            batch, rest = rest[:room], rest[room:]
            removed = unlink_page(adapter, batch)
            deleted += len(removed)
            removed_sample.extend(removed[: max(sample - len(removed_sample), 0)])
        progress.advance(len(page))
        if rest:
            capped = True
            break
    return Applied({"deleted": deleted, "capped": capped}, removed_sample)
