"""The server-side path: SCAN and the per-key checks run inside Redis, in small read-only Lua batches.

Each call is one EVAL_RO: SCAN sub-steps (a few dozen to a few hundred keys each) plus TTL, or TYPE +
MEMORY USAGE, for each key they returned, aggregated in the script; only counts, per-tenant totals and a
few key names come back. The client never receives the keyspace, which is what makes this faster than
listing it.

Keeping Redis responsive: Redis runs one script at a time and nothing else meanwhile, so each call is
bounded by its own clock: the script is given a budget of server time, cuts its last sub-step to what the
rest of the budget holds at the call's cost per key so far, and stops once that is under 10 keys, so a
call lasts about its budget and at most its budget plus one sub-step (a quarter of the budget, at most
0.5 ms and at least 10 keys) whatever the client's estimate of the cost per key, and a descheduled client
or a slow network neither shrinks nor stretches it. The client also caps the keys a call asks for (the
budget over the measured cost per key, grown at most twofold per call) and sizes the sub-steps. The
budget follows what the server is doing (engine/keyspace/pacing.py): a script also reads the server's
command count when the client asks (every call while the server is idle, every 25 ms while others are
active: an INFO costs as much as a dozen keys), so the client knows how many commands other clients ran
between two readings. While they are active, calls are short (twice what a call costs besides the
server's work, 0.25-1.5 ms; on the server's own host one sub-step of 10 keys, about as long as a `SCAN
COUNT 10` with its keys' checks, since there a production request that arrives during a call waits for
the rest of it) and the client pauses so that our calls hold the server at most half of the time: when
the server competes for a core, production requests queued behind back-to-back scripts would otherwise
pile up. While the server is idle the budget grows to 3 ms per call (3.5 ms at most with the sub-step:
the 5 ms per call target with a margin for the machine's own hiccups) with no pause, and shrinks at once
when another client shows up. EVAL_RO runs only read-only commands (the server enforces it) and is itself
flagged read-only, so the path also works in a dry-run.

On a Redis Cluster a script sees its own node's keys only, so every primary runs its own batches
over its own keys, in parallel (the adapter's `each_scan_node`, bounded), each paced on its own
server time; the replies are merged here, in one thread, into the same accumulators as a standalone
server's, so the figures are the same.

When scripts are refused (ACL without +@scripting, `rename-command EVAL_RO ""`, a server before
7.0) on any node a scan must look at, `available()` says so and the caller uses the client-side
pipelined path.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import ActionFailed
from engine.keyspace import pacing

if TYPE_CHECKING:
    from engine.adapters.redis import RedisAdapter

# Tenant rule identical to aggregate.tenant_of: 'tenant:<t>:...' with a non-empty <t>, else none.
# ARGV: cursor, match, keys (the most this call asks SCAN for), sub (COUNT of each SCAN sub-step), budget (us),
# read ('1': read the server's command count); then the script's own. `_steps` runs SCAN sub-steps until the
# cursor is back to 0, `keys` were asked for, or TIME shows that the rest of the budget holds fewer than
# SUB_FLOOR keys at the call's cost per key so far; the last sub-step is cut to what the rest holds. So a call
# lasts about its budget (calls that stopped a whole sub-step short made a slower machine's audit take 1,562
# round trips for 1M keys, over the 1,500 target) and at most its budget plus one sub-step whatever the
# client's cost estimate says.
_TENANT = r"""
local function tenant_of(k)
  local t = string.match(k, '^tenant:([^:]+):')
  return t or '(none)'
end
local function _now()
  local t = redis.call('TIME')
  return t[1] * 1000000 + t[2]
end
-- What the server has run so far (INFO stats; -1 when refused, -2 when not asked: ARGV[6] is not '1'), and
-- the commands this script runs: EVAL_RO itself, TIME and INFO (when asked), then SCAN and TIME per
-- sub-step, plus those per key counted by the caller. Between two readings, the difference less ours (every
-- call's since the last reading) is what other clients ran (pacing.py). INFO costs about as much server
-- time as a dozen keys' TTLs, so a call reads it only when the client needs a fresh reading.
local function _activity()
  if ARGV[6] ~= '1' then return -2, 2 end
  local info = redis.pcall('INFO', 'stats')
  if type(info) ~= 'string' then return -1, 2 end
  return tonumber(string.match(info, 'total_commands_processed:(%d+)')) or -1, 3
end
local function _steps(each)
  local began = _now()
  local seen, ours = _activity()
  local cursor, keys, sub, budget = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local least = math.min(sub, {SUB_FLOOR})
  local asked, returned, at, n = 0, 0, began, math.min(sub, keys)
  repeat
    local res = redis.call('SCAN', cursor, 'MATCH', ARGV[2], 'COUNT', n)
    asked = asked + n
    cursor = res[1]
    returned = returned + #res[2]
    ours = ours + 2 + each(res[2])
    at = _now()
    -- the next sub-step: as many keys as the rest of the budget holds at this call's cost per key so far
    n = math.min(sub, keys - asked)
    if at > began then n = math.min(n, math.floor((budget - (at - began)) * asked / (at - began))) end
  until cursor == '0' or n < least
  return {cursor, asked, returned, at - began, began, seen, ours}
end
""".replace("{SUB_FLOOR}", str(pacing.Policy.sub_floor))

AUDIT_TTL = (
    _TENANT
    + r"""
local want = tonumber(ARGV[7])
local scanned, without = 0, 0
local tenants, order, sample = {}, {}, {}
local call = _steps(function(keys)
  for _, k in ipairs(keys) do
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
  return #keys
end)
local flat = {}
for _, name in ipairs(order) do flat[#flat + 1] = name; flat[#flat + 1] = tenants[name] end
return {call, scanned, without, flat, sample}
"""
)

MEMORY_REPORT = (
    _TENANT
    + r"""
local top = tonumber(ARGV[7])
local scanned, total = 0, 0
local by_type, by_tenant, types, tenants, best = {}, {}, {}, {}, {}
-- the same order as aggregate.TopN keeps: bigger first, and on equal sizes the greater key name
local function bigger(x, y) if x[1] ~= y[1] then return x[1] > y[1] end return x[2] > y[2] end
local call = _steps(function(keys)
  local ran = #keys
  for _, k in ipairs(keys) do
    local kind = redis.call('TYPE', k)['ok']
    if kind ~= 'none' then
      local size = redis.call('MEMORY', 'USAGE', k)
      ran = ran + 1
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
  -- each kind's biggest kept to `top` as the sub-steps go, so the sorting stays inside the budget too
  for _, kind in ipairs(types) do
    local b = best[kind]
    if #b > top then
      table.sort(b, bigger)
      for i = #b, top + 1, -1 do b[i] = nil end
    end
  end
  return ran
end)
local flat_types, flat_tenants, flat_best = {}, {}, {}
for _, kind in ipairs(types) do
  flat_types[#flat_types + 1] = kind
  flat_types[#flat_types + 1] = by_type[kind][1]
  flat_types[#flat_types + 1] = by_type[kind][2]
  local b = best[kind]
  table.sort(b, bigger)
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
return {call, scanned, total, flat_types, flat_tenants, flat_best}
"""
)

BUDGET_S = 0.0015  # server time per call while other clients are active (each script times itself with TIME)
IDLE_BUDGET_S = 0.003  # ... while the server is idle: 3.5 ms with a sub-step, a margin under the 5 ms target
DUTY = 0.5  # while others are active, at most this share of the server's time goes to our calls
MIN_BATCH, MAX_BATCH = 100, 4000
MEMORY_BATCH = 2000
MIN_SLEEP_S = 0.001  # pauses shorter than this are added up and taken together


@dataclass
class Pacer:
    """What the step hands the scan: the limits, and, once it ran, what its calls did (for the summary).

    The decisions are the pure controller's (engine/keyspace/pacing.py): `begin` with what the server
    was doing before the first call, then `observe` each call, which returns the pause before the next.
    """

    budget_s: float = BUDGET_S
    duty: float = DUTY
    floor: int = MIN_BATCH
    ceiling: int = MAX_BATCH
    idle_budget_s: float = IDLE_BUDGET_S
    calls: int = 0
    longest_s: float = 0.0
    total_s: float = 0.0
    smallest: int = 0
    largest: int = 0
    paused_s: float = 0.0
    probed: pacing.Activity | None = None  # what the server was doing before the scan
    # the node is a replica no client uses but this scan: the commands it runs besides ours are its primary's
    # replication stream, which no one waits on, so it is paced as an idle server (read_from.py)
    stream_only: bool = False
    state: pacing.Pacing | None = field(default=None, repr=False)

    def policy(self) -> pacing.Policy:
        return pacing.Policy(
            busy_budget_s=self.budget_s,
            idle_budget_s=max(self.idle_budget_s, self.budget_s),
            duty=self.duty,
            floor=self.floor,
            ceiling=self.ceiling,
        )

    def begin(self, count: int, seen: pacing.Activity) -> int:
        self.state = pacing.begin(self.policy(), count, seen)
        return self.state.count

    def observe(self, seen: pacing.Observation) -> float:
        """Record one call; the seconds to pause before the next (the next size is `count`)."""
        if self.state is None:
            self.begin(seen.count, pacing.Activity(0.0, None, 0.0, same_host=False))
        assert self.state is not None
        self.state, pause = pacing.step(self.state, seen)
        self.calls, self.longest_s, self.total_s = self.state.calls, self.state.longest_s, self.state.total_s
        self.smallest, self.largest, self.paused_s = self.state.smallest, self.state.largest, self.state.paused_s
        return pause

    @property
    def count(self) -> int:
        return self.state.count if self.state else self.floor

    def fresh(self) -> Pacer:
        """A pacer with the same settings and nothing measured: one per node of a cluster."""
        return Pacer(
            budget_s=self.budget_s,
            duty=self.duty,
            floor=self.floor,
            ceiling=self.ceiling,
            idle_budget_s=self.idle_budget_s,
            stream_only=self.stream_only,
        )

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
        if self.state is not None:
            return pacing.summary(self.state)
        if not self.calls:  # nothing ran here (or only others' figures were added to this one)
            return "no calls"
        return (
            f"{self.calls} calls of {self.smallest}-{self.largest} keys, server time {self.total_s:.2f}s, "
            f"longest call {self.longest_s * 1000:.1f} ms, paused {self.paused_s:.2f}s"
        )


# What the scripts run besides the reads a read-only user has (SCAN, TTL, TYPE, MEMORY USAGE; INFO is
# optional): TIME, at every call. A user allowed the scripts but not TIME (`+@read +@scripting`) cannot run them.
PROBE = "redis.call('TIME') return 1"


def available(adapter: RedisAdapter) -> bool:
    """Can every node a scan looks at (this server, or each primary of a cluster) run our read-only
    scripts? (Redis >= 7.0, EVAL_RO allowed by ACL and not renamed, and TIME allowed inside it.)"""
    try:
        for node in adapter.scan_nodes():
            node.call(["EVAL_RO", PROBE, "0"])
    except ActionFailed:
        return False
    return True


def _replies(
    adapter: RedisAdapter, script: str, match: str, extra: list[str], start: int, pacer: Pacer
) -> Generator[tuple[int, list[Any]], None, None]:
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
    adapter: RedisAdapter,
    script: str,
    match: str,
    extra: list[str],
    start: int,
    pacer: Pacer,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[tuple[int, list[Any]]]:
    """(keys SCAN returned, the script's figures) per EVAL_RO until the cursor comes back to 0, sized and
    paced by the controller.

    The script is told the most keys to ask for, the COUNT of each SCAN sub-step and its budget of server
    time, which it holds to by its own clock (TIME), and whether to read the server's command count
    (`pacing.wants_reading`). It returns, ahead of its figures, what the call did: the cursor, keys asked
    for and returned, its server time, when it began, the server's command count at that moment (when read)
    and how many commands it ran itself: between two readings the rest is other clients'
    (`pacing.others_between`). All calls go on one connection held for the scan.
    """
    if pacer.probed is None:
        pacer.probed = adapter.activity()
    if pacer.stream_only:
        pacer.probed = pacer.probed.stream_only()
    cursor, count = "0", pacer.begin(start, pacer.probed)
    # the last reading of the server's command count (began us, the count) and our commands since it
    last: tuple[int, int] | None = None
    ours_since, read_at = 0, 0.0  # (the first call always reads)
    sha: str | None = None  # after the first EVAL_RO the server has the script: EVALSHA_RO sends 40 bytes, not 2 KB
    debt = 0.0  # pauses owed: slept once they add up to MIN_SLEEP_S (a busy machine oversleeps short sleeps)
    with adapter.direct_caller() as call:
        while True:
            began = clock()
            state = pacer.state
            assert state is not None
            sub, budget_us = pacing.sub_step(state), int(state.budget_s * 1e6)
            read = last is None or pacing.wants_reading(state, began - read_at)
            args = ["0", cursor, match, str(count), str(sub), str(budget_us), "1" if read else "0", *extra]
            try:
                reply = call(["EVALSHA_RO", sha, *args] if sha else ["EVAL_RO", script, *args])
            except ActionFailed:
                if sha is None:
                    raise
                sha = None  # flushed, or EVALSHA_RO not allowed: the body from now on
                reply = call(["EVAL_RO", script, *args])
            else:
                sha = sha or hashlib.sha1(script.encode()).hexdigest()
            round_trip = clock() - began
            (cursor, asked, returned, server_us, began_us, seen, ours), *body = reply
            cursor = str(cursor)
            others, since = pacer.probed.others, pacer.probed.seconds
            if read and last is not None:
                others = pacing.others_between(last[1], int(seen), ours_since)
                since = (int(began_us) - last[0]) / 1e6
            if pacer.stream_only and others is not None:
                others = 0
            if read:
                last, ours_since, read_at = (int(began_us), int(seen)), 0, began
            ours_since += int(ours)
            observed = pacing.Observation(int(asked), int(server_us) / 1e6, round_trip, others, since, read)
            wait = pacer.observe(observed)
            yield int(returned), body
            if cursor == "0":
                return
            count = pacer.count
            debt += wait
            if debt >= MIN_SLEEP_S:
                sleep(debt)
                debt = 0.0


def audit_ttl(
    adapter: RedisAdapter, match: str, *, sample: int, progress: Any, start: int = 1000, pacer: Pacer | None = None
) -> dict[str, Any]:
    from engine.keyspace.aggregate import TtlAudit

    audit = TtlAudit(sample_size=sample)
    with closing(_replies(adapter, AUDIT_TTL, match, [str(sample)], start, pacer or Pacer())) as replies:
        for returned, (scanned, without, flat, keys) in replies:
            wanted = sample - len(audit.sample)
            audit.absorb(int(scanned), int(without), _pairs(flat), [str(k) for k in keys][: max(wanted, 0)])
            progress.advance(returned)
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
        for returned, (scanned, total, types, tenants, best) in replies:
            report.absorb(
                int(scanned),
                int(total),
                _triples(types),
                _triples(tenants),
                [(str(best[i]), str(best[i + 1]), int(best[i + 2])) for i in range(0, len(best), 3)],
            )
            progress.advance(returned)
    biggest = {kind: [row["key"] for row in rows] for kind, rows in report.biggest().items()}
    return report.result(details(adapter, biggest))


def _pairs(flat: list[Any]) -> dict[str, int]:
    return {str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


def _triples(flat: list[Any]) -> dict[str, tuple[int, int]]:
    return {str(flat[i]): (int(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)}
