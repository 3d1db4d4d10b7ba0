"""The server-side path: SCAN and the per-key checks run inside Redis, in small read-only Lua batches.

Each call is one EVAL_RO: one SCAN step (COUNT keys) plus TTL, or TYPE + MEMORY USAGE, for each key
it returned, aggregated in the script; only counts, per-tenant totals and a few key names come back.
The client never receives the keyspace, which is what makes this faster than listing it.

Keeping Redis responsive: Redis runs one script at a time and nothing else meanwhile, so a batch is
bounded by its key count, and the batch size adapts so that each call stays near a budget of server
time (1.5 ms; each script measures its own with TIME, so a slow network or client does not shrink
the batches and multiply the round trips, and a quick one does not grow them past the budget). Between
batches the server serves every other client, and the client pauses so that our calls hold the server
at most half of the time (on loopback the round trip alone leaves it almost none): when the server
competes for a core, production requests queued behind back-to-back scripts would otherwise pile up.
EVAL_RO runs only read-only commands (the server enforces it) and is itself flagged read-only,
so the path also works in a dry-run.

On a Redis Cluster a script sees its own node's keys only, so every primary runs its own batches
over its own keys, in parallel (the adapter's `each_scan_node`, bounded), each paced on its own
server time; the replies are merged here, in one thread, into the same accumulators as a standalone
server's, so the figures are the same.

When scripts are refused (ACL without +@scripting, `rename-command EVAL_RO ""`, a server before
7.0) on any node a scan must look at, `available()` says so and the caller uses the client-side
pipelined path.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import ActionFailed

if TYPE_CHECKING:
    from engine.adapters.redis import RedisAdapter

# Tenant rule identical to aggregate.tenant_of: 'tenant:<t>:...' with a non-empty <t>, else none.
_TENANT = r"""
local function tenant_of(k)
  local t = string.match(k, '^tenant:([^:]+):')
  return t or '(none)'
end
"""

AUDIT_TTL = (
    _TENANT
    + r"""
local began = redis.call('TIME')
local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local want = tonumber(ARGV[4])
local scanned, without = 0, 0
local tenants, order, sample = {}, {}, {}
for _, k in ipairs(res[2]) do
  local t = redis.call('TTL', k)
  if t ~= -2 then
    scanned = scanned + 1
    if t == -1 then
      without = without + 1
      local name = tenant_of(k)
      if tenants[name] == nil then tenants[name] = 0; order[#order + 1] = name end
      tenants[name] = tenants[name] + 1
      if #sample < want then sample[#sample + 1] = k end
    end
  end
end
local flat = {}
for _, name in ipairs(order) do flat[#flat + 1] = name; flat[#flat + 1] = tenants[name] end
local ended = redis.call('TIME')
return {res[1], scanned, without, flat, sample, #res[2], (ended[1] - began[1]) * 1000000 + ended[2] - began[2]}
"""
)

MEMORY_REPORT = (
    _TENANT
    + r"""
local began = redis.call('TIME')
local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local top = tonumber(ARGV[4])
local scanned, total = 0, 0
local by_type, by_tenant, types, tenants, best = {}, {}, {}, {}, {}
for _, k in ipairs(res[2]) do
  local kind = redis.call('TYPE', k)['ok']
  if kind ~= 'none' then
    local size = redis.call('MEMORY', 'USAGE', k)
    if size then
      scanned = scanned + 1
      total = total + size
      if by_type[kind] == nil then by_type[kind] = {0, 0}; types[#types + 1] = kind; best[kind] = {} end
      by_type[kind][1] = by_type[kind][1] + 1
      by_type[kind][2] = by_type[kind][2] + size
      local name = tenant_of(k)
      if by_tenant[name] == nil then by_tenant[name] = {0, 0}; tenants[#tenants + 1] = name end
      by_tenant[name][1] = by_tenant[name][1] + 1
      by_tenant[name][2] = by_tenant[name][2] + size
      local b = best[kind]
      b[#b + 1] = {size, k}
    end
  end
end
local flat_types, flat_tenants, flat_best = {}, {}, {}
for _, kind in ipairs(types) do
  flat_types[#flat_types + 1] = kind
  flat_types[#flat_types + 1] = by_type[kind][1]
  flat_types[#flat_types + 1] = by_type[kind][2]
  local b = best[kind]
  -- the same order as aggregate.TopN keeps: bigger first, and on equal sizes the greater key name
  table.sort(b, function(x, y) if x[1] ~= y[1] then return x[1] > y[1] end return x[2] > y[2] end)
  for i = 1, math.min(top, #b) do
    flat_best[#flat_best + 1] = kind
    flat_best[#flat_best + 1] = b[i][2]
    flat_best[#flat_best + 1] = b[i][1]
  end
end
for _, name in ipairs(tenants) do
  flat_tenants[#flat_tenants + 1] = name
  flat_tenants[#flat_tenants + 1] = by_tenant[name][1]
  flat_tenants[#flat_tenants + 1] = by_tenant[name][2]
end
local ended = redis.call('TIME')
return {res[1], scanned, total, flat_types, flat_tenants, flat_best, #res[2],
        (ended[1] - began[1]) * 1000000 + ended[2] - began[2]}
"""
)

BUDGET_S = 0.0015  # server time per call the batch size aims at (each script times itself with TIME)
DUTY = 0.5  # at most this share of the server's time goes to our calls: the rest is production's
MIN_BATCH, MAX_BATCH = 100, 4000
MEMORY_BATCH = 2000


@dataclass
class Pacer:
    """Sizes each batch so that its server time stays near `budget_s`, from the cost per key measured so far.

    The cost per key is the median of the last few calls (server time / COUNT), so one call stretched
    by a busy machine (the server waiting for a core mid-script) does not halve the batches that follow;
    a batch grows at most twofold per call. What it did is kept for the step's summary.
    """

    budget_s: float = BUDGET_S
    duty: float = DUTY
    floor: int = MIN_BATCH
    ceiling: int = MAX_BATCH
    calls: int = 0
    longest_s: float = 0.0
    total_s: float = 0.0
    smallest: int = 0
    largest: int = 0
    paused_s: float = 0.0
    _costs: list[float] = field(default_factory=list)

    def record(self, count: int, server_s: float) -> None:
        self.calls += 1
        self.longest_s = max(self.longest_s, server_s)
        self.total_s += server_s
        self.smallest = min(self.smallest, count) if self.smallest else count
        self.largest = max(self.largest, count)
        self._costs = [*self._costs[-6:], server_s / max(count, 1)]

    def next_count(self, count: int) -> int:
        if not self._costs:
            return count
        per_key = sorted(self._costs)[len(self._costs) // 2]
        want = int(self.budget_s / per_key) if per_key > 0 else self.ceiling
        return max(self.floor, min(self.ceiling, want, count * 2))

    def pause(self, server_s: float, round_trip_s: float) -> float:
        """Seconds to wait before the next call so that our calls hold the server at most `duty` of the time.

        The part of the round trip the server did not spend on the call (network, client) already
        counts as time the server was free for other clients.
        """
        free_needed = server_s * (1 / self.duty - 1)
        wait = max(0.0, free_needed - max(0.0, round_trip_s - server_s))
        self.paused_s += wait
        return wait

    def fresh(self) -> Pacer:
        """A pacer with the same settings and nothing measured: one per node of a cluster."""
        return Pacer(budget_s=self.budget_s, duty=self.duty, floor=self.floor, ceiling=self.ceiling)

    def absorb(self, other: Pacer) -> None:
        """Add what `other` did (another node's batches) to this one's summary."""
        if not other.calls:
            return
        self.calls += other.calls
        self.longest_s = max(self.longest_s, other.longest_s)
        self.total_s += other.total_s
        self.smallest = min(self.smallest, other.smallest) if self.smallest else other.smallest
        self.largest = max(self.largest, other.largest)
        self.paused_s += other.paused_s

    def summary(self) -> str:
        if not self.calls:
            return "no calls"
        return (
            f"{self.calls} calls of {self.smallest}-{self.largest} keys, server time {self.total_s:.2f}s, "
            f"longest call {self.longest_s * 1000:.1f} ms (budget {self.budget_s * 1000:g} ms per call), "
            f"paused {self.paused_s:.2f}s to hold the server at most {self.duty:.0%} of the time"
        )


def available(adapter: RedisAdapter) -> bool:
    """Can every node a scan looks at (this server, or each primary of a cluster) run our read-only
    scripts? (Redis >= 7.0, EVAL_RO allowed by ACL and not renamed.)"""
    try:
        for node in adapter.scan_nodes():
            node.call(["EVAL_RO", "return 1", "0"])
    except ActionFailed:
        return False
    return True


def _replies(
    adapter: RedisAdapter, script: str, match: str, extra: list[str], start: int, pacer: Pacer
) -> Generator[list[Any], None, None]:
    """Every batch's reply from every node a scan looks at, as they come (a cluster's primaries in
    parallel, each with its own pacer, added to `pacer` at the end for the summary)."""
    nodes = adapter.scan_nodes()
    if len(nodes) < 2:
        yield from _batches(nodes[0], script, match, extra, start, pacer)
        return
    pacers = {id(node): pacer.fresh() for node in nodes}
    try:
        with closing(
            adapter.each_scan_node(lambda node: _batches(node, script, match, extra, start, pacers[id(node)]))
        ) as replies:
            yield from replies
    finally:  # every node's thread has ended here (each_scan_node joins them)
        for each in pacers.values():
            pacer.absorb(each)


def _batches(
    adapter: RedisAdapter, script: str, match: str, extra: list[str], start: int, pacer: Pacer
) -> Iterator[list[Any]]:
    """One reply per EVAL_RO until the cursor comes back to 0, sizing COUNT to the server-time budget."""
    cursor, count = "0", max(pacer.floor, min(start, pacer.ceiling))
    while True:
        began = time.perf_counter()
        reply = adapter.call(["EVAL_RO", script, "0", cursor, match, str(count), *extra])
        round_trip = time.perf_counter() - began
        server_s = int(reply[-1]) / 1e6
        pacer.record(count, server_s)
        yield reply
        cursor = str(reply[0])
        if cursor == "0":
            return
        count = pacer.next_count(count)
        if wait := pacer.pause(server_s, round_trip):
            time.sleep(wait)


def audit_ttl(
    adapter: RedisAdapter, match: str, *, sample: int, progress: Any, start: int = 1000, pacer: Pacer | None = None
) -> dict[str, Any]:
    from engine.keyspace.aggregate import TtlAudit

    audit = TtlAudit(sample_size=sample)
    with closing(_replies(adapter, AUDIT_TTL, match, [str(sample)], start, pacer or Pacer())) as replies:
        for reply in replies:
            _, scanned, without, flat, keys, returned, _ = reply
            wanted = sample - len(audit.sample)
            audit.absorb(int(scanned), int(without), _pairs(flat), [str(k) for k in keys][: max(wanted, 0)])
            progress.advance(int(returned))
    return audit.result()


def memory_report(
    adapter: RedisAdapter, match: str, *, top: int, progress: Any, start: int = 250, pacer: Pacer | None = None
) -> dict[str, Any]:
    from engine.keyspace.aggregate import MemoryReport
    from engine.keyspace.pages import details

    report = MemoryReport(top=top)
    # MEMORY USAGE of a big key alone costs milliseconds: the measured cost per key keeps such batches small
    pacing = pacer or Pacer(ceiling=MEMORY_BATCH)
    with closing(_replies(adapter, MEMORY_REPORT, match, [str(top)], start, pacing)) as replies:
        for reply in replies:
            _, scanned, total, types, tenants, best, returned, _ = reply
            report.absorb(
                int(scanned),
                int(total),
                _triples(types),
                _triples(tenants),
                [(str(best[i]), str(best[i + 1]), int(best[i + 2])) for i in range(0, len(best), 3)],
            )
            progress.advance(int(returned))
    biggest = {kind: [row["key"] for row in rows] for kind, rows in report.biggest().items()}
    return report.result(details(adapter, biggest))


def _pairs(flat: list[Any]) -> dict[str, int]:
    return {str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


def _triples(flat: list[Any]) -> dict[str, tuple[int, int]]:
    return {str(flat[i]): (int(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)}
