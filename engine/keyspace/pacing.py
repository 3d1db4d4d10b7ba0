"""How long each server-side call of a keyspace scan may take, and whether to pause after it, from what
the server is doing; and which path (server-side scripts, client-side pipelines or small pages) a scan takes.

Why: Redis runs one command or script at a time, so a production request that arrives during one of
our calls waits for it. When nobody else uses the server (a replica out of rotation, a restore drill,
a quiet night) long calls harm no one and save round trips; when other clients are active, our calls
must be short and leave the server free between them. The controller counts the commands other
clients ran between two readings of the server's command count (INFO stats `total_commands_processed`,
less our own; read by every call while the server is idle, every `read_every_s` while others are
active, `wants_reading`) and:

- while others are active (any command of theirs since the server was last seen idle): each call aims at the busy
  budget, twice what a call costs besides the server's work (the round trip as the client sees it,
  scheduling included; the median of the last calls), between 0.25 and 1.5 ms: longer calls where each
  costs more anyway (a network), so no more than a third of the scan's time goes to the calls
  themselves. On the server's own host, reached directly (the server names our own socket, or, where it
  will not say, the quickest round trip is at most 0.2 ms; not through a local proxy or tunnel,
  Activity.reached_directly), it is the shortest there is (0.02 ms: one SCAN sub-step of the
  fewest keys, 10, the COUNT `redis-cli --scan` asks for, and their checks) whatever a call costs: there
  a production request that arrives during a call waits for the rest of it, so production's p99 rises by
  about as much as a call lasts (measured on a quiet machine: 0.1 ms calls put it 0.06-0.09 ms above its
  p99 during `redis-cli --scan`, whose calls hold Redis 10 us; 0.02 ms calls 0.00-0.06 ms, for an audit
  twice as long; with the machine loaded, calls grown to 1.5 ms raised production's p90 from about
  8 to 11 ms against 0.15 ms calls, docs/performance.md). After each call it pauses so that our calls
  hold the server at most `duty` of the time;
- while the server is idle: the budget doubles (`growth`) with each call up to the idle budget (3 ms for the
  scripts, 3.5 ms with the last sub-step: the 5 ms per call target less a margin for the machine, whose
  hiccups stretched a call of 4.5 ms at most by design to 5.6-7.9 ms in some benchmark runs; more for a
  plain SCAN, see redis.py), with no pause;
  the first call that sees another client brings the budget back down at once. The server counts as
  idle again after `quiet_s` (0.1 s) without a command from anyone else.

A server that will not say (INFO refused by an ACL) counts as busy. The batch size follows the budget
and the cost per key measured so far (the median of the last calls, so one call stretched by a
descheduled server does not collapse the batches); it grows at most twofold per call. The scripts also
bound themselves by their own clock, in SCAN sub-steps sized here (`sub_step`): a call lasts at most its
budget plus one sub-step whatever this estimate says.

Pure: the state is a frozen dataclass, time comes in with the observations (the caller's clock), and
nothing here does I/O. The callers (server_side.py, RedisAdapter._sparse_scan) send and measure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

SMALL_PAGES_CORES = 1.0  # the small pages' client parses a reply per key: about a core's work, so a core must be free
QUIET_S = 0.1  # the server counts as idle after this long without another client's command
FAST_RTT_S = 0.0002  # a round trip this short is a local path (same host or rack): round trips are cheap


@dataclass(frozen=True)
class Policy:
    """The limits the controller works within (seconds of server time per call, keys per call)."""

    busy_budget_s: float = 0.0015  # the longest a call may take while other clients are active
    min_budget_s: float = 0.00025  # ... and the shortest it is made on a fast path
    same_host_budget_s: float = 0.00002  # ... and on the server's own host, reached directly: one sub-step
    idle_budget_s: float = 0.003  # the longest a call may take while the server is idle
    duty: float = 0.5  # while others are active, our calls hold the server at most this share of the time
    quiet_s: float = QUIET_S
    floor: int = 100
    ceiling: int = 4000
    window: int = 7  # calls the cost per key is the median of
    growth: float = 2.0  # the most the batch (and the budget while idle) grows from one call to the next
    shortest_on_same_host: bool = True  # on the server's own host the busy budget is same_host_budget_s
    sub_step_s: float = 0.0005  # the longest SCAN sub-step of a self-bounding script (server_side.py)
    sub_floor: int = 10  # ... and its fewest keys
    read_every_s: float = QUIET_S / 4  # while others are active, how often a call reads the server's command count

    def busy_budget(self, overhead_s: float, same_host: bool = False) -> float:
        """Twice what a call costs besides the server's work, within [min_budget_s, busy_budget_s]; on the
        server's own host the shortest: there that cost is the machine's scheduling, not a network, and a
        script is stretched by the same scheduling while production requests wait behind it."""
        if same_host and self.shortest_on_same_host:
            return min(self.busy_budget_s, self.same_host_budget_s)
        return min(self.busy_budget_s, max(self.min_budget_s, 2 * overhead_s))


@dataclass(frozen=True)
class Activity:
    """What a scan knows before its first call (RedisAdapter.activity)."""

    rtt_s: float  # the quickest of a few PINGs
    others: int | None  # commands other clients ran while it watched; None: INFO refused
    seconds: float  # how long it watched
    same_host: bool  # the client runs on the server's machine (loopback, or the server's address is ours)
    idle_cores: float | None = None  # on the server's own host, the machine's CPU left idle meanwhile (host_cpu.py)
    cores: int = 0
    # the server sees this very socket (CLIENT INFO's addr): nothing between; None: it would not say
    direct: bool | None = None

    def reached_directly(self, fast_rtt_s: float = FAST_RTT_S) -> bool:
        """On the server's own host with no proxy, tunnel or relay between: the server named our own socket
        or, where it would not say, the round trip is as short as a direct one's. Where the server says, its
        word decides, not the round trip: a loaded machine stretched direct loopback PINGs past FAST_RTT_S
        (0.16-0.25 ms seen)."""
        if not self.same_host:
            return False
        return self.direct if self.direct is not None else self.rtt_s <= fast_rtt_s

    def shown(self) -> str:
        where = ""
        if self.same_host:
            where = "same host, " if self.direct is not None else "same host (not confirmed: CLIENT INFO refused), "
        cpu = f", {self.idle_cores:.1f} of {self.cores} cores idle" if self.idle_cores is not None else ""
        if self.others is None:
            return f"{where}round trip {self.rtt_s * 1000:.2f} ms, other clients' activity unknown (INFO refused){cpu}"
        rate = self.others / max(self.seconds, 1e-3)
        return f"{where}round trip {self.rtt_s * 1000:.2f} ms, other clients ran {rate:.0f} commands/s{cpu}"

    def stream_only(self) -> Activity:
        """The same reading on a replica no client uses: what it ran besides ours was its primary's
        replication stream, which nobody waits on (engine/keyspace/read_from.py)."""
        return self if not self.others else replace(self, others=0)


@dataclass(frozen=True)
class Observation:
    """One call, as the caller measured it."""

    count: int  # keys asked for (SCAN COUNT)
    server_s: float  # server time the call took
    round_trip_s: float  # the call as the client saw it (network and client included)
    others: int | None  # commands other clients ran since the previous reading; None: unknown (INFO refused)
    seconds: float  # since the previous reading
    read: bool = True  # False: this call did not read the server's command count (`wants_reading`), so
    # `others` and `seconds` say nothing and what the server was doing carries over to the next reading


@dataclass(frozen=True)
class Pacing:
    """The controller's state: the next call's size and budget, and what the calls so far did."""

    policy: Policy
    rtt_s: float  # the path's round trip (quickest PING): what a call costs besides the server's work, at first
    count: int
    budget_s: float
    busy: bool
    costs: tuple[float, ...] = ()
    overheads: tuple[float, ...] = ()  # the last calls' round trips less their server time
    heard: int = 0  # other clients' commands counted in the current window (for the rate shown)
    heard_s: float = 0.0  # the current window's length so far
    quiet_for_s: float = 0.0  # how long no other client's command was seen
    peak_rate: float = 0.0  # the highest rate of other clients' commands over a full window
    calls: int = 0
    busy_calls: int = 0
    longest_s: float = 0.0
    total_s: float = 0.0
    smallest: int = 0
    largest: int = 0
    paused_s: float = 0.0
    top_budget_s: float = 0.0
    # the client runs on the server's machine and reaches it directly (Activity.reached_directly): the busy
    # budget is the shortest. Through a local proxy, tunnel or relay a call costs the path's round trip, as
    # over a network, and the budget follows it
    same_host: bool = False


@dataclass(frozen=True)
class Watch:
    """Whether other clients are active, for work that has no calls of its own to size (a restore's
    pipelines): `step`'s rule, busy from the first command of theirs (or while the server will not say),
    idle again after `quiet_s` without one; and what the readings saw, for the summary."""

    busy: bool
    quiet_for_s: float = 0.0
    quiet_s: float = QUIET_S
    readings: int = 0
    busy_readings: int = 0
    peak_rate: float = 0.0


def heard(watch: Watch, others: int | None, seconds: float) -> Watch:
    """The watch after one more reading: `others` commands of other clients in the last `seconds`."""
    busy, quiet_for = _after_reading(watch.busy, watch.quiet_for_s, others, seconds, watch.quiet_s)
    rate = (others or 0) / seconds if seconds > 0 else 0.0
    return replace(
        watch,
        busy=busy,
        quiet_for_s=quiet_for,
        readings=watch.readings + 1,
        busy_readings=watch.busy_readings + busy,
        peak_rate=max(watch.peak_rate, rate),
    )


def _after_reading(
    busy: bool, quiet_for_s: float, others: int | None, seconds: float, quiet_s: float
) -> tuple[bool, float]:
    """(busy, how long nobody else was seen) after a reading: busy from the first command of another client
    (or while the server will not say), idle again once nobody else was seen for `quiet_s`."""
    if others is None or others > 0:
        return True, 0.0
    quiet_for = quiet_for_s + seconds
    return busy and quiet_for < quiet_s, quiet_for


def others_between(before: int, after: int, ours: int) -> int | None:
    """Commands other clients ran between two readings of the server's command count
    (`total_commands_processed`), `ours` of them our own; None when a reading is missing (-1)."""
    if before < 0 or after < 0:
        return None
    return max(0, after - before - ours)


def begin(policy: Policy, count: int, seen: Activity) -> Pacing:
    """The first call: `count` keys, the busy budget (grown from there while the server stays idle)."""
    rtt = seen.rtt_s
    direct = seen.reached_directly()
    budget = policy.busy_budget(rtt, direct)
    busy = seen.others is None or seen.others > 0
    return Pacing(
        policy,
        rtt,
        max(policy.floor, min(policy.ceiling, count)),
        budget,
        busy,
        quiet_for_s=0.0 if busy else seen.seconds,
        peak_rate=(seen.others or 0) / seen.seconds if seen.seconds > 0 else 0.0,
        top_budget_s=budget,
        same_host=direct,
    )


def step(state: Pacing, seen: Observation) -> tuple[Pacing, float]:
    """The state after one call, and the seconds to pause before the next."""
    p = state.policy
    heard, heard_s, peak = state.heard, state.heard_s, state.peak_rate
    if not seen.read:  # nothing new about the others: the budget stays what the last reading made it
        quiet_for, busy = state.quiet_for_s, state.busy
    else:  # someone is there (or the server will not say): short calls; idle again after quiet_s
        busy, quiet_for = _after_reading(state.busy, state.quiet_for_s, seen.others, seen.seconds, p.quiet_s)
    if seen.read:
        heard, heard_s = heard + (seen.others or 0), heard_s + seen.seconds
        if heard_s >= p.quiet_s:  # a full window: its rate, for the summary
            heard, heard_s, peak = 0, 0.0, max(peak, heard / heard_s)
    costs = (*state.costs[-(p.window - 1) :], seen.server_s / max(seen.count, 1))
    per_key = sorted(costs)[len(costs) // 2]
    overheads = (*state.overheads[-(p.window - 1) :], max(0.0, seen.round_trip_s - seen.server_s))
    overhead = sorted(overheads)[len(overheads) // 2]
    grown = min(p.idle_budget_s, max(state.budget_s, 1e-6) * p.growth)
    budget = p.busy_budget(overhead, state.same_host) if busy else grown
    want = int(budget / per_key) if per_key > 0 else p.ceiling
    count = max(p.floor, min(p.ceiling, want, int(seen.count * p.growth)))
    pause = 0.0
    if busy:
        # the part of the round trip the server did not spend on our call already left it free for others
        free_needed = seen.server_s * (1 / p.duty - 1)
        pause = max(0.0, free_needed - max(0.0, seen.round_trip_s - seen.server_s))
    after = Pacing(  # built whole, not dataclasses.replace: this runs once per call, thousands of times a scan
        p,
        state.rtt_s,
        count,
        budget,
        busy,
        costs,
        overheads,
        heard,
        heard_s,
        quiet_for,
        peak,
        state.calls + 1,
        state.busy_calls + (1 if busy else 0),
        max(state.longest_s, seen.server_s),
        state.total_s + seen.server_s,
        min(state.smallest, seen.count) if state.smallest else seen.count,
        max(state.largest, seen.count),
        state.paused_s + pause,
        max(state.top_budget_s, budget),
        state.same_host,
    )
    return after, pause


def wants_reading(state: Pacing, since_read_s: float) -> bool:
    """Should the next call read the server's command count? Always while the server is idle (the first
    command of another client must bring the budget down at once); while others are active, every
    `read_every_s`: each reading costs the server an INFO, as much as a dozen keys' checks, and short calls
    beside production traffic come thousands a second, so reading at every one would add a tenth to each.
    Reading less often only delays seeing that the others have stopped, by less than `quiet_s` already does."""
    return not state.busy or since_read_s >= state.policy.read_every_s


def sub_step(state: Pacing) -> int:
    """Keys per SCAN sub-step for a script that bounds itself by its own clock: a quarter of the call's
    budget (at most `sub_step_s`) at the cost per key measured so far (a quarter of the call before any),
    so a call that stops once its budget is spent overruns it by at most that much."""
    p = state.policy
    if not state.costs:
        return max(p.sub_floor, state.count // 4)
    per_key = sorted(state.costs)[len(state.costs) // 2]
    want = int(min(p.sub_step_s, state.budget_s / 4) / per_key) if per_key > 0 else state.count
    return max(p.sub_floor, min(state.count, want))


def summary(state: Pacing) -> str:
    """What the calls did, for the step's output: sizes, server time, budgets, pauses, and why."""
    if not state.calls:
        return "no calls"
    p = state.policy
    overhead = sorted(state.overheads)[len(state.overheads) // 2] if state.overheads else state.rtt_s
    idle_calls = state.calls - state.busy_calls
    shortest = "the shortest, on the server's own host; " if state.same_host and p.shortest_on_same_host else ""
    parts = [
        f"{state.calls} calls of {state.smallest}-{state.largest} keys, server time {state.total_s:.2f}s, "
        f"longest call {state.longest_s * 1000:.1f} ms",
        f"budget {p.busy_budget(overhead, state.same_host) * 1000:.2g} ms per call while other clients were active "
        f"({shortest}{state.busy_calls} calls, up to {state.peak_rate:.0f} commands/s from them; a call cost "
        f"{overhead * 1000:.2f} ms besides the server's work)",
    ]
    if idle_calls:
        parts.append(f"growing to {state.top_budget_s * 1000:g} ms while the server was idle ({idle_calls} calls)")
    parts.append(
        f"paused {state.paused_s:.2f}s to hold the server at most {p.duty:.0%} of the time while others were active"
    )
    return "; ".join(parts)


@dataclass(frozen=True)
class Choice:
    path: str  # "server-side", "client-side" or "small-pages"
    reason: str


def choose_path(seen: Activity, *, fast_rtt_s: float = FAST_RTT_S) -> Choice:
    """Scripts, pipelines of big pages or small pages, from what was seen before the scan.

    A script holds the server for its whole batch; a pipeline of single-key commands is read and run a
    socket buffer at a time, interleaved with other clients' requests. Over a fast network to another
    host round trips are cheap, so while other clients are active the pipelines cost production traffic
    less for about the same time. On the server's own host beside other clients, a production request
    that arrives during one of our calls waits for the rest of it: there the small pages (small_pages.py)
    make every call about as short as `redis-cli --scan`'s own (one `SCAN COUNT 10` with the previous
    page's ten checks). "Own host" is what the server says (it names our socket, `reached_directly`): a
    loaded machine stretched loopback round trips past `fast_rtt_s`, which decides only where the server
    will not say. Their client parses a reply per key, about a core's work on the machine Redis runs on, so
    they are taken while a core is idle (`SMALL_PAGES_CORES`; unknown counts as idle); with none to spare
    the one-sub-step scripts, whose client does a fraction of that work. Measured beside production
    traffic (docs/performance.md), production's p99 against its p99 during `redis-cli --scan`: on a quiet
    machine 0.92-1.04x with small pages against 1.055-1.08x with the scripts (3.5x with pipelines of
    1,000-key pages); beside two CPU-bound processes 1.6x with small pages, 0.7-1.04x with the scripts.
    Over a slower path, or with nobody else on the server, the scripts win outright: hundreds of round
    trips instead of thousands, and the client never receives the keyspace.
    """
    busy = seen.others is None or seen.others > 0
    fast = seen.rtt_s <= fast_rtt_s
    direct = seen.reached_directly(fast_rtt_s)  # on the server's own host, not through a proxy or tunnel
    if direct and busy and seen.idle_cores is not None and seen.idle_cores < SMALL_PAGES_CORES:
        return Choice(
            "server-side",
            f"{seen.shown()}: on the server's own host with no core to spare, the scripts leave the cores to Redis "
            "and its clients (small pages would parse a reply per key here)",
        )
    if direct and busy:
        return Choice(
            "small-pages",
            f"{seen.shown()}: on the server's own host beside other clients: each call of ours one SCAN COUNT 10, "
            "as redis-cli --scan's, with the previous page's checks",
        )
    if fast and busy:
        return Choice(
            "client-side",
            f"{seen.shown()}: round trips are cheap and the server is busy: SCAN pages with pipelined checks "
            "interleave with other clients' requests, where a script would hold the server for its whole batch",
        )
    why = "nobody else is using the server" if fast or direct else "round trips are dear"
    return Choice("server-side", f"{seen.shown()}: {why}")
