"""The arithmetic of the benchmark, kept pure: percentiles, INFO deltas, and the round-trip cost model.

The model says where the time of a keyspace operation goes when a network sits between the operator
and Redis: every round trip pays the path's round-trip time, and the work itself costs the server's
and the client's CPU. It ignores overlap (a pipelined client can compute while the server works), so
it errs towards slower; the benchmark prints it next to the measured figure so the model is checked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Commands that are not the operation's own: the benchmark's probes and the production traffic beside it.
NOT_THE_OPERATION = frozenset({"info", "slowlog", "config", "ping", "get", "set", "client", "acl", "hello"})


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks; nan for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Latency:
    """The latency production traffic saw in one window (seconds)."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Latency:
        return cls(len(samples), percentile(samples, 50), percentile(samples, 99), max(samples, default=math.nan))

    def render(self) -> str:
        if not self.count:
            return "no samples"
        return f"{self.p50 * 1e3:.2f} / {self.p99 * 1e3:.2f} / {self.max * 1e3:.1f} ms"


def in_windows(samples: Iterable[tuple[float, float]], windows: Sequence[tuple[float, float]]) -> list[float]:
    """Latencies of the (sent_at, latency) samples sent inside any of the [start, end) windows."""
    return [latency for sent, latency in samples if any(start <= sent < end for start, end in windows)]


def calls(commandstats: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """{command: calls} from redis-py's INFO commandstats ({'cmdstat_get': {'calls': 3, ...}})."""
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in commandstats.items()}


def calls_delta(
    before: Mapping[str, int], after: Mapping[str, int], exclude: Iterable[str] = NOT_THE_OPERATION
) -> dict[str, int]:
    """Calls per command made between two snapshots, without the excluded commands; zero deltas dropped."""
    skip = set(exclude)
    delta = {name: count - before.get(name, 0) for name, count in after.items() if name not in skip}
    return {name: n for name, n in sorted(delta.items()) if n > 0}


def cpu_seconds(info_cpu: Mapping[str, Any]) -> float:
    """The server process's CPU time so far (used_cpu_sys + used_cpu_user, children not included)."""
    return float(info_cpu["used_cpu_sys"]) + float(info_cpu["used_cpu_user"])


def steal_seconds(proc_stat: str, ticks_per_s: int = 100) -> float:
    """The machine's steal time so far (/proc/stat, first `cpu` line, 8th figure): on a virtual machine, time
    a vCPU was ready to run and the hypervisor ran something else. A stall of Redis the bench sees grows it."""
    for line in proc_stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            return int(fields[8]) / ticks_per_s if len(fields) > 8 else 0.0
    return 0.0


def projected_wall(round_trips: int, rtt_s: float, server_cpu_s: float, client_cpu_s: float) -> float:
    """wall ~ round_trips x rtt + server CPU + client CPU: the operation's time over a path of this rtt."""
    if round_trips < 0 or rtt_s < 0 or server_cpu_s < 0 or client_cpu_s < 0:
        raise ValueError("the model takes no negative costs")
    return round_trips * rtt_s + server_cpu_s + client_cpu_s


def projected_ratio(ours: Cost, reference: Cost, rtt_s: float) -> float:
    """ours / reference over a path of round-trip time rtt_s, both projected by the model."""
    a = projected_wall(ours.round_trips, rtt_s, ours.server_cpu_s, ours.client_cpu_s)
    b = projected_wall(reference.round_trips, rtt_s, reference.server_cpu_s, reference.client_cpu_s)
    return a / b if b else math.inf


@dataclass(frozen=True)
class Cost:
    """What one run of an operation cost: the inputs of the model, plus its wall time and memory."""

    wall_s: float
    round_trips: int
    server_cpu_s: float
    client_cpu_s: float
    peak_rss_mb: int = 0
    commands: int = 0
    steal_s: float = 0.0  # time the hypervisor ran something else on this machine's vCPUs meanwhile (all of them)


def median_cost(costs: Sequence[Cost]) -> Cost:
    """The run of median wall time (its other figures kept together, as one real run)."""
    if not costs:
        raise ValueError("no runs")
    return sorted(costs, key=lambda c: c.wall_s)[(len(costs) - 1) // 2]


SCRIPT_CLIENT = "?:0"  # SLOWLOG's client address of a command a script ran (Redis logs those too)
# A command one of our scripts runs (a SCAN sub-step of a few hundred buckets, a TTL, TIME) is at most tens of
# microseconds of work: one that took this long was the server not running, and its time is the machine's.
STALL_US = 500


@dataclass(frozen=True)
class ScriptCalls:
    """Our server-side calls as SLOWLOG timed them (wall time), and what the machine's stalls took of them."""

    longest_s: float  # the longest script call
    longest_own_s: float  # the longest less the stalls inside it
    stalled: tuple[str, ...] = ()  # each call a stall stretched, with the command inside it that stalled

    def shown(self) -> str:
        if not self.stalled:
            return f"longest call {self.longest_own_s * 1e3:.1f} ms"
        return (
            f"longest call {self.longest_own_s * 1e3:.1f} ms less the machine's stalls ({len(self.stalled)} calls "
            f"held a command that is microseconds of work and took over {STALL_US / 1e3:g} ms: the server was not "
            f"running; longest {self.longest_s * 1e3:.1f} ms as timed): {'; '.join(self.stalled[:3])}"
        )


def script_calls(entries: Iterable[Mapping[str, Any]]) -> ScriptCalls:
    """Our scripts' calls in SLOWLOG entries (redis-py's slowlog_get), each less the stalls inside it.

    Why: SLOWLOG times a call by the wall clock, so a server descheduled in the middle of one of our calls
    (a hypervisor taking the vCPU; measured here: a SCAN sub-step of 250 buckets taking 20 ms) looks like a
    long call of ours. Redis logs the commands a script runs as well, from the client "?:0", before the
    script's own entry: the time of those over STALL_US is taken off the call. A stall in the script's Lua
    code between two commands is not seen, so it stays counted as ours. Log at STALL_US or lower."""
    longest = own = 0.0
    stalled: list[str] = []
    inside: list[Mapping[str, Any]] = []
    for entry in sorted(entries, key=lambda e: int(e["id"])):
        if _text(entry.get("client_address", "")) == SCRIPT_CLIENT:
            inside.append(entry)
            continue
        if not _text(entry["command"]).upper().startswith(("EVAL", "FCALL")):
            continue
        seconds = int(entry["duration"]) / 1e6
        stalls = [e for e in inside if int(e["duration"]) >= STALL_US]
        lost = sum(int(e["duration"]) for e in stalls) / 1e6
        longest, own = max(longest, seconds), max(own, seconds - lost)
        if stalls:
            worst = max(stalls, key=lambda e: int(e["duration"]))
            shown = " ".join(_text(worst["command"]).split()[:3])
            stalled.append(f"{seconds * 1e3:.1f} ms, {shown} in it {int(worst['duration']) / 1e3:.1f} ms")
        inside = []
    return ScriptCalls(longest, own, tuple(stalled))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
