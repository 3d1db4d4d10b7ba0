"""The server-side path: SCAN and the per-key checks run inside Redis, in small read-only Lua batches.

Each call is one EVAL_RO: one SCAN step (COUNT keys) plus TTL, or TYPE + MEMORY USAGE, for each key
it returned, aggregated in the script; only counts, per-tenant totals and a few key names come back.
The client never receives the keyspace, which is what makes this faster than listing it.

Keeping Redis responsive: Redis runs one script at a time and nothing else meanwhile, so a batch is
bounded by its key count, and the batch size adapts so that each call stays well under a few
milliseconds of server time (measured by the round trip, which bounds it from above). Between
batches the server serves every other client. EVAL_RO runs only read-only commands (the server
enforces it) and is itself flagged read-only, so the path also works in a dry-run.

When scripts are refused (ACL without +@scripting, `rename-command EVAL_RO ""`, a server before
7.0), `available()` says so and the caller uses the client-side pipelined path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
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
return {res[1], scanned, without, flat, sample, #res[2]}
"""
)

MEMORY_REPORT = (
    _TENANT
    + r"""
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
return {res[1], scanned, total, flat_types, flat_tenants, flat_best, #res[2]}
"""
)

TARGET_CALL_S = 0.0015  # aim for ~1.5 ms per call, measured as the round trip (an upper bound of server time)
MIN_BATCH, MAX_BATCH = 100, 2000
MEMORY_BATCH = 500


def available(adapter: RedisAdapter) -> bool:
    """Can this server run our read-only scripts? (Redis >= 7.0, EVAL_RO allowed by ACL and not renamed.)"""
    if getattr(adapter, "is_cluster", False):
        return False  # a script sees one shard: the pipelined path scans every primary and merges
    try:
        adapter.call(["EVAL_RO", "return 1", "0"])
    except ActionFailed:
        return False
    return True


def _batches(
    adapter: RedisAdapter, script: str, match: str, extra: list[str], start: int, ceiling: int = MAX_BATCH
) -> Iterator[list[Any]]:
    """One reply per EVAL_RO until the cursor comes back to 0, adapting COUNT to keep each call short."""
    cursor, count = "0", min(start, ceiling)
    while True:
        began = time.perf_counter()
        reply = adapter.call(["EVAL_RO", script, "0", cursor, match, str(count), *extra])
        elapsed = time.perf_counter() - began
        yield reply
        cursor = str(reply[0])
        if cursor == "0":
            return
        if elapsed < TARGET_CALL_S / 2:
            count = min(ceiling, count * 2)
        elif elapsed > TARGET_CALL_S:
            count = max(MIN_BATCH, count // 2)


def audit_ttl(adapter: RedisAdapter, match: str, *, sample: int, progress: Any, start: int = 1000) -> dict[str, Any]:
    from engine.keyspace.aggregate import TtlAudit

    audit = TtlAudit(sample_size=sample)
    for reply in _batches(adapter, AUDIT_TTL, match, [str(sample)], start):
        _, scanned, without, flat, keys, returned = reply
        wanted = sample - len(audit.sample)
        audit.absorb(int(scanned), int(without), _pairs(flat), [str(k) for k in keys][: max(wanted, 0)])
        progress.advance(int(returned))
    return audit.result()


def memory_report(adapter: RedisAdapter, match: str, *, top: int, progress: Any, start: int = 250) -> dict[str, Any]:
    from engine.keyspace.aggregate import MemoryReport
    from engine.keyspace.pages import details

    report = MemoryReport(top=top)
    # MEMORY USAGE of a big key alone costs milliseconds: smaller batches keep a call with one under budget
    for reply in _batches(adapter, MEMORY_REPORT, match, [str(top)], start, ceiling=MEMORY_BATCH):
        _, scanned, total, types, tenants, best, returned = reply
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
