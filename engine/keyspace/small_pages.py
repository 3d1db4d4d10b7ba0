"""The small-pages path: beside production traffic on the server's own host, calls about as short as the reference's.

Why: Redis runs one command (or one pipelined batch, or one script) at a time, so a production request
that arrives during one of our calls waits for the rest of it, and production's p99 follows how long each
call holds the server. `redis-cli --scan` holds it for one `SCAN COUNT 10` at a time. This path's calls are
`SCAN COUNT 10` too, each sent with the previous page's checks (TTL, or TYPE and MEMORY USAGE, per key) in
one pipeline of single-key commands, which Redis runs in less time than the SCAN (ten TTLs: about 4 us): one
round trip per ten keys, as the reference's, on one connection held for the scan (from the pool for each,
the client spent as much CPU again). A round trip for the SCAN and another for the checks woke Redis and
the client twice as often: a third more server CPU and half again as much client CPU, for the same
production p99 (measured, docs/performance.md). A script that does the same for ten keys held Redis three
times as long as the SCAN (the call into Lua and the conversions of every reply), and bigger pages,
pipelines or scripts hold it longer still. The client parses a reply per key, most of a core's work, so
the path is taken only while the machine has a core idle; elsewhere the other paths win
(pacing.choose_path).

On a Redis Cluster every primary walks its own keys in parallel (`each_scan_node`); the pages are merged
here, in one thread, into the same accumulators as the other paths', so the figures are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import ActionFailed
from engine.keyspace.aggregate import MemoryReport, TtlAudit, parse_ttls, parse_type_memory

if TYPE_CHECKING:
    from engine.adapters.redis import RedisAdapter

PAGE = 10  # SCAN COUNT: what `redis-cli --scan` asks for, so no SCAN of ours holds the server longer than its

Checks = Callable[[str], Sequence[Sequence[str]]]


@dataclass
class Walked:
    """What the walk did, for the step's method line."""

    pages: int = 0
    keys: int = 0
    round_trips: int = 0

    def summary(self) -> str:
        return (
            f"{self.round_trips} round trips: {self.pages} pages of keys, each page's checks sent with the next "
            f"SCAN COUNT {PAGE} in one pipeline"
        )


def checked_pages(
    adapter: RedisAdapter, match: str, checks: Checks, walked: Walked
) -> Iterator[tuple[list[str], list[Any]]]:
    """(keys of one SCAN page, the replies to their checks, in order) for every page with keys, on every
    node a scan must look at. Per-command errors come back as exception objects, as `pipeline_calls` gives."""
    with closing(adapter.each_scan_node(lambda node: _walk(node, match, checks))) as pages:
        for keys, replies, trips in pages:
            walked.round_trips += trips
            if keys:
                walked.pages += 1
                walked.keys += len(keys)
                yield keys, replies


def _walk(node: RedisAdapter, match: str, checks: Checks) -> Iterator[tuple[list[str], list[Any], int]]:
    """One round trip per page: a page's checks and the next page's SCAN go in one pipeline (the cursor is
    known once the page is), so Redis is woken and the client writes and reads half as often as with a
    round trip for each (measured: a third less server CPU and client CPU, the same production p99)."""

    def scan(cursor: str) -> list[Any]:
        return ["SCAN", cursor, "MATCH", match, "COUNT", PAGE]

    with node.held_pipeline() as exchange:
        cursor = "0"
        (page,), trips = exchange([scan(cursor)]), 1
        while True:
            if isinstance(page, BaseException):
                raise ActionFailed(f"SCAN {cursor} on {node.endpoint.url}: {page}")
            cursor, keys = str(page[0]), list(page[1])
            more = cursor != "0"
            calls = [call for key in keys for call in checks(key)] + ([scan(cursor)] if more else [])
            replies = exchange(calls) if calls else []
            if more:
                page = replies.pop()
            yield keys, replies, trips + bool(calls)
            if not more:
                return
            trips = 0


def _ttl(key: str) -> Sequence[Sequence[str]]:
    return (("TTL", key),)


def _type_memory(key: str) -> Sequence[Sequence[str]]:
    # TYPE first: it expires a key whose TTL ran out, which MEMORY USAGE alone would still size
    return (("TYPE", key), ("MEMORY", "USAGE", key))


def audit_ttl(adapter: RedisAdapter, match: str, *, sample: int, progress: Any, walked: Walked) -> dict[str, Any]:
    audit = TtlAudit(sample_size=sample)
    for keys, replies in checked_pages(adapter, match, _ttl, walked):
        for key, ttl in parse_ttls(keys, replies):
            audit.add(key, ttl)
        progress.advance(len(keys))
    return audit.result()


def memory_report(adapter: RedisAdapter, match: str, *, top: int, progress: Any, walked: Walked) -> dict[str, Any]:
    from engine.keyspace.pages import details

    report = MemoryReport(top=top)
    for keys, replies in checked_pages(adapter, match, _type_memory, walked):
        for key, kind, size in parse_type_memory(keys, replies):
            report.add(key, kind, size)
        progress.advance(len(keys))
    biggest = {kind: [row["key"] for row in rows] for kind, rows in report.biggest().items()}
    return report.result(details(adapter, biggest))
