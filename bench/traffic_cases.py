"""The targets that weigh our scans against production traffic, side by side in one run (issue 15).

`python -m bench --only traffic` (or `python -m bench.traffic_cases`): on the benchmark keyspace, with
the production traffic of bench/load.py running (1,000 GET/SET per second over 4 connections), it runs
alternately, `--rounds` times each:

- audit-ttl as an operator runs it (`redis/audit-ttl`: the path chosen automatically), the same with
  the path fixed to client-side pipelines (`bench/audit-ttl-pipelines`), and `redis-cli --scan | wc -l`;
  first on loopback, then with the machine busy: `--busy` CPU-bound spinners (one per core) and no
  production traffic (the stated, reproducible load of the busy target), then the spinners and the
  production traffic together (recorded, with the traffic's latency);
- through a 1 ms relay, audit-ttl and the export of one tenant (5,000 keys of a million) with the
  traffic running, then again with the traffic stopped (an idle server): round trips counted by the relay;
- with a replica (`--replica`, on by default): the primary gets one replica in sync, the production traffic
  stays on the primary, and both sides are given the primary as an operator gives it: audit-ttl reads the
  replica by itself (`read_from: auto`), `redis-cli --scan` scans the primary it was pointed at.

It reports production latency (p50 / p99 / max) during each, the longest single call of ours (SLOWLOG,
every call over `SLOW_US`), which path each run took and why (the step's `method:` line), and the
machine's load average at each pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import Measured, Meter, Processes, Relayed, ping_rtt, start_relay
from bench.keyspace import LOAD_TIMEOUT, TENANTS, start_loaded
from bench.keyspace_cases import LOAD_CLIENTS, LOAD_RATE, SPIN
from bench.load import read_samples
from bench.measure import Row
from bench.stats import STALL_US, Latency, ScriptCalls, in_windows, median_cost, script_calls
from engine.sandbox import RedisServer

RUNBOOK = [sys.executable, "-m", "engine.cli", "run"]
PROCEDURES = str(Path(__file__).resolve().parent / "procedures")
SLOW_US = STALL_US  # every call over this is logged, and so is every command inside one that stalled
BUSY = "busy"  # --busy CPU-bound spinners beside Redis, no production traffic: the target's stated load
BUSY_TRAFFIC = "busy + traffic"  # the spinners and the production traffic together: recorded
WITH_REPLICA = "loopback, a replica"  # the primary with one in-sync replica, the traffic on the primary
REPLICA_SYNC_TIMEOUT = 900.0  # a full sync of a million keys: seconds on a quiet machine, minutes on a busy one
VARIANTS = {  # side -> procedure (None: the reference)
    "auto": "redis/audit-ttl",
    "reference": None,
    "pipelines": "bench/audit-ttl-pipelines",
}
# (bench/audit-ttl-scripts fixes the scripts: on the server's own host beside production traffic `auto` takes
# them only when no core is idle, else small pages; `python -m bench.traffic_cases --scripts` adds them)


@dataclass
class Run:
    measured: Measured
    longest_call_s: float = 0.0  # SLOWLOG's longest entry during the run (0: none over SLOW_US)
    method: str = ""
    # our script calls in SLOWLOG, the machine's stalls told apart
    scripts: ScriptCalls = field(default_factory=lambda: ScriptCalls(0.0, 0.0))


@dataclass
class Results:
    runs: dict[tuple[str, str], list[Run]] = field(default_factory=lambda: defaultdict(list))
    loads: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    notes: dict[str, str] = field(default_factory=dict)  # path -> how its processes were placed

    def median(self, side: str, path: str) -> Run | None:
        runs = self.runs.get((side, path))
        if not runs:
            return None
        wall = median_cost([r.measured.cost for r in runs]).wall_s
        return next(r for r in runs if r.measured.cost.wall_s == wall)

    def windows(self, side: str, path: str) -> list[tuple[float, float]]:
        return [r.measured.window for r in self.runs.get((side, path), [])]

    def longest(self, side: str, path: str) -> float:
        return max((r.longest_call_s for r in self.runs.get((side, path), [])), default=0.0)

    def scripts(self, side: str, paths: tuple[str, ...]) -> ScriptCalls:
        """Our script calls over every run of `side` on `paths`: the longest, and the stretched ones."""
        runs = [r.scripts for path in paths for r in self.runs.get((side, path), [])]
        return ScriptCalls(
            max((c.longest_s for c in runs), default=0.0),
            max((c.longest_own_s for c in runs), default=0.0),
            tuple(s for c in runs for s in c.stalled),
        )


class TrafficBench:
    def __init__(self, server: RedisServer, processes: Processes, work: Path) -> None:
        self.server, self.processes, self.work = server, processes, work
        self.admin = server.client(socket_timeout=None)
        self.meter = Meter(self.admin)
        self.results = Results()
        self.tick = iter(range(10**6))
        self.load: object | None = None

    def traffic(self, on: bool) -> None:
        if on and self.load is None:
            out = self.work / f"load-{next(self.tick)}.bin"
            argv = [sys.executable, "-m", "bench.load", "--port", str(self.server.port), "--out", str(out)]
            argv += ["--rate", str(LOAD_RATE), "--clients", str(LOAD_CLIENTS)]
            self.load, _ = self.processes.start(argv)
            time.sleep(1)
        elif not on and self.load is not None:
            self.processes.stop(self.load)  # type: ignore[arg-type]
            self.load = None
            time.sleep(2)  # INFO's instantaneous figures and our probes see an idle server from here

    def samples(self, service: bool = False) -> list[tuple[float, float]]:
        """(due, latency) of every production request: from when it was due, or its service latency."""
        return [s for path in sorted(self.work.glob("load-*.bin")) for s in read_samples(path, service)]

    def argv(self, side: str, port: int) -> list[str] | str:
        procedure = VARIANTS[side]
        if procedure is None:
            return f"redis-cli -h 127.0.0.1 -p {port} --scan --pattern '*' | wc -l"
        transcript = str(self.work / f"t{next(self.tick)}.jsonl")
        extra = ["--procedures", PROCEDURES] if procedure.startswith("bench/") else []
        return [*RUNBOOK, procedure, *extra, "--redis", f"redis://127.0.0.1:{port}/0", "--transcript", transcript]

    def one(self, side: str, path: str, relay: Relayed | None = None, argv: list[str] | str | None = None) -> Run:
        argv = argv if argv is not None else self.argv(side, relay.port if relay else self.server.port)
        self.admin.slowlog_reset()
        measured = self.meter.run(argv, relay)
        slow = self.admin.slowlog_get(100_000)
        ours = [e for e in slow if not _text(e["command"]).upper().startswith(("INFO", "SLOWLOG", "CONFIG"))]
        longest = max((e["duration"] for e in ours), default=0) / 1e6
        run = Run(measured, longest, _method(argv), script_calls(slow))
        self.results.runs[(side, path)].append(run)
        return run

    def pairs(self, path: str, rounds: int, sides: tuple[str, ...] | None = None) -> None:
        self.results.loads[path].append(os.getloadavg()[0])
        for i in range(rounds):
            sides = sides or tuple(VARIANTS)
            for side in (*sides[i % len(sides) :], *sides[: i % len(sides)]):  # each goes first in turn
                self.one(side, path)
        self.results.loads[path].append(os.getloadavg()[0])

    def with_replica(self, rounds: int) -> None:
        """Ours and the reference, both given the primary, while it has one replica in sync.

        In production the replica runs on a host of its own, and so does the operator's tool: with two
        CPUs or more, the primary and the production traffic get CPU 0 and everything else (the replica,
        our tool, redis-cli) the others, so a scan of the replica does not take the primary's CPU as it
        would on one shared core. Both sides run under the same placement.
        """
        replica = RedisServer.start(
            replica_of=(self.server.host, self.server.port), config={"save": ""}, start_timeout=LOAD_TIMEOUT
        )
        try:
            _wait_synced(self.server, replica)
            with _placed([self.server.pid, getattr(self.load, "pid", 0)], [replica.pid]) as placement:
                self.results.notes[WITH_REPLICA] = placement
                self.pairs(WITH_REPLICA, rounds, ("auto", "reference"))
        finally:
            replica.stop()
            shutil.rmtree(replica.directory, ignore_errors=True)
            self.admin.execute_command("CLIENT", "KILL", "TYPE", "replica")

    def export_argv(self, port: int) -> list[str]:
        tenant = f"t{next(self.tick) % TENANTS}"
        out = self.work / f"export-{next(self.tick)}"
        out.mkdir()
        transcript = str(out / "t.jsonl")
        args = ["redis/backup-tenant", "--var", f"tenant={tenant}", "--var", f"output={out}"]
        return [*RUNBOOK, *args, "--redis", f"redis://127.0.0.1:{port}/0", "--transcript", transcript]

    def network(self, rtt_ms: float, traffic: bool) -> None:
        path = f"{rtt_ms:g} ms, {'traffic' if traffic else 'idle server'}"
        self.traffic(traffic)
        relay = start_relay(self.processes, self.server.port, rtt_ms / 2, self.work / f"relay-{next(self.tick)}.stats")
        self.results.loads[path].append(os.getloadavg()[0])
        try:
            self.one("auto", path, relay)
            self.one("export", path, relay, self.export_argv(relay.port))
        finally:
            self.results.loads[path].append(os.getloadavg()[0])


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


@contextlib.contextmanager
def _placed(primary_side: list[int | None], other_side: list[int | None]) -> Iterator[str]:
    """`primary_side` (every thread of each) on CPU 0; `other_side`, this process and every command it starts
    from here on the other CPUs, until the block ends."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        yield "one CPU: nothing placed"
        return
    own, rest = {cpus[0]}, set(cpus[1:])
    placed = [(t, own) for pid in primary_side if pid for t in _threads(pid)]
    placed += [(t, rest) for pid in other_side if pid for t in _threads(pid)]
    for tid, where in placed:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, where)
    os.sched_setaffinity(0, rest)
    try:
        others = ",".join(str(c) for c in sorted(rest))
        yield f"primary and production traffic on CPU {cpus[0]}; replica, our tool and redis-cli on CPU {others}"
    finally:
        os.sched_setaffinity(0, set(cpus))
        for tid, _ in placed:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, set(cpus))


def _wait_synced(primary: RedisServer, replica: RedisServer) -> None:
    """Until the replica's link is up and it holds every key the primary does."""
    deadline = time.monotonic() + REPLICA_SYNC_TIMEOUT
    with primary.client(socket_timeout=None) as source, replica.client(socket_timeout=None) as copy:
        while True:
            info = copy.info("replication")
            if info.get("master_link_status") == "up" and copy.dbsize() == source.dbsize():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica of {primary.url} was not in sync after {REPLICA_SYNC_TIMEOUT:.0f}s")
            time.sleep(0.2)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _method(argv: list[str] | str) -> str:
    """The step's `method:` line from the run's transcript (which path, why, what the calls did)."""
    if isinstance(argv, str) or "--transcript" not in argv:
        return ""
    path = Path(argv[argv.index("--transcript") + 1])
    if not path.exists():
        return ""
    for line in path.read_text().splitlines():
        if '"method: ' in line:
            return str(json.loads(line).get("output", ""))
    return ""


def run(keys: int, rounds: int, busy: int, rtt_ms: float = 1.0, replica: bool = True) -> tuple[list[Row], str]:
    processes = Processes()
    work = Path(tempfile.mkdtemp(prefix="runbook-bench-traffic-"))
    server = start_loaded(keys)
    try:
        bench = TrafficBench(server, processes, work)
        bench.admin.config_set("slowlog-log-slower-than", SLOW_US)
        bench.admin.config_set("slowlog-max-len", 100_000)
        bench.traffic(True)
        idle = bench.meter.calibrate_idle(3.0)
        bench.pairs("loopback", rounds)
        if replica:
            bench.with_replica(rounds)
        if busy:
            spinners = [processes.start([sys.executable, "-c", SPIN])[0] for _ in range(busy)]
            try:
                time.sleep(1)
                bench.pairs(BUSY_TRAFFIC, rounds)  # spinners and production traffic: recorded
                bench.traffic(False)
                bench.pairs(BUSY, rounds)  # spinners alone: the stated load of the busy target
            finally:
                for spinner in spinners:
                    processes.stop(spinner)
        bench.network(rtt_ms, traffic=True)
        bench.network(rtt_ms, traffic=False)
        bench.traffic(False)
        traffic = (bench.samples(), bench.samples(service=True))
        return _rows(bench.results, traffic, idle, keys, busy, rtt_ms, ping_rtt(server.port))
    finally:
        processes.stop_all()
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _rows(
    results: Results,
    samples: tuple[list[tuple[float, float]], list[tuple[float, float]]],
    idle: tuple[float, float],
    keys: int,
    busy: int,
    rtt_ms: float,
    loopback_rtt: float,
) -> tuple[list[Row], str]:
    traffic, service = samples  # latency from when each request was due; from when it was sent (load.py)
    rows: list[Row] = []
    scale = f"{keys / 1e6:g}M" if keys >= 1_000_000 else f"{keys // 1000}k"

    def p99(side: str, path: str, of: list[tuple[float, float]] = traffic) -> float:
        return Latency.of(in_windows(of, results.windows(side, path))).p99

    def wall(side: str, path: str) -> float:
        run = results.median(side, path)
        return run.measured.cost.wall_s if run else float("nan")

    for path in ("loopback", WITH_REPLICA, BUSY, BUSY_TRAFFIC):
        if not results.runs.get(("auto", path)):
            continue
        rows.append(
            Row(
                f"audit-ttl, {scale} keys, {path} (vs redis-cli --scan | wc -l)",
                wall("auto", path),
                wall("reference", path),
                0.5 if path == BUSY else None,
                note=_path_note(results, path, busy),
            )
        )
        if path == BUSY:  # no production traffic ran: no latency to weigh
            continue
        rows.append(
            Row(
                f"production p99 during audit-ttl, {path} (vs during redis-cli --scan)",
                p99("auto", path),
                p99("reference", path),
                1.0 if path in ("loopback", WITH_REPLICA) else None,
                note=f"{LOAD_RATE} GET/SET per second over {LOAD_CLIENTS} connections, latency from when each was due"
                + ("; ours read the replica, the reference scanned the primary" if path == WITH_REPLICA else ""),
            )
        )
        rows.append(
            Row(
                f"production p99 from sending (Redis's part) during audit-ttl, {path} (vs during redis-cli --scan)",
                p99("auto", path, service),
                p99("reference", path, service),
                None,
                note="from when each request was sent (from when it was due if it waited for its connection): "
                f"the generator's own lateness left out; idle {Latency.of(in_windows(service, [idle])).render()}",
            )
        )
    quiet = ("loopback", f"{rtt_ms:g} ms, traffic", f"{rtt_ms:g} ms, idle server")
    calls = results.scripts("auto", quiet)
    rows.append(
        Row(
            "longest single call of audit-ttl, quiet machine (vs 5 ms)",
            calls.longest_own_s,
            0.005,
            1.0,
            note=f"SLOWLOG (every call over {SLOW_US} us, wall time) on loopback and through {rtt_ms:g} ms, with and "
            f"without traffic: {calls.shown()}; with the path fixed to pipelines: "
            f"{results.longest('pipelines', 'loopback') * 1000:.1f} ms",
        )
    )
    for side, label, budget in (
        ("auto", f"round trips of audit-ttl, {scale} keys", 1500 * keys / 1_000_000),
        ("export", f"round trips of backup-tenant, {keys // TENANTS} keys of {scale}", 50),
    ):
        for traffic_on in (False, True):
            path = f"{rtt_ms:g} ms, {'traffic' if traffic_on else 'idle server'}"
            run = results.median(side, path)
            if run is None:
                continue
            rows.append(
                Row(
                    f"{label}, {path} (vs {budget:g})",
                    run.measured.cost.round_trips,
                    budget,
                    None if traffic_on else 1.0,
                    note=f"{_longest(run)}; {run.method}",
                    unit="",
                )
            )
    return rows, _report(results, samples, idle, loopback_rtt)


def _longest(run: Run) -> str:
    if run.scripts.longest_s:  # script calls: told apart from the machine's stalls
        return run.scripts.shown()
    return f"longest call {run.longest_call_s * 1000:.1f} ms"


def _path_note(results: Results, path: str, busy: int) -> str:
    run = results.median("auto", path)
    loads = results.loads.get(path, [])
    shown = f"load average {min(loads):.1f}-{max(loads):.1f}" if loads else ""
    spinners = f"{busy} CPU-bound spinners beside Redis" if path in (BUSY, BUSY_TRAFFIC) else ""
    traffic = "" if path == BUSY else f"{LOAD_RATE} req/s of production traffic"
    load = ", ".join(x for x in (spinners, traffic, results.notes.get(path, ""), shown) if x)
    return f"{load}; {run.method if run else ''}"


def _report(
    results: Results,
    samples: tuple[list[tuple[float, float]], list[tuple[float, float]]],
    idle: tuple[float, float],
    loopback_rtt: float,
) -> str:
    traffic, service = samples
    header: tuple[str, ...] = ("run", "path", "wall", "server CPU", "client CPU", "steal")
    header += ("longest call", "prod p50 / p99 / max", "from sending", "runs")
    idle_latency = [Latency.of(in_windows(of, [idle])).render() for of in (traffic, service)]
    lines = [header, ("(idle)", "-", "-", "-", "-", "-", "-", *idle_latency, "-")]
    for (side, path), runs in results.runs.items():
        run = results.median(side, path)
        assert run is not None
        cost = run.measured.cost
        lines.append(
            (
                side,
                path,
                f"{cost.wall_s:.2f}s",
                f"{cost.server_cpu_s:.2f}s",
                f"{cost.client_cpu_s:.2f}s",
                f"{sum(r.measured.cost.steal_s for r in runs):.2f}s",
                f"{results.longest(side, path) * 1000:.1f} ms",
                Latency.of(in_windows(traffic, results.windows(side, path))).render(),
                Latency.of(in_windows(service, results.windows(side, path))).render(),
                " ".join(f"{r.measured.cost.wall_s:.2f}" for r in runs),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(line)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    methods = []
    for (side, path), runs in results.runs.items():
        for r in runs:
            if r.method:
                methods.append(f"- {side}, {path}, {r.measured.cost.wall_s:.2f}s: {r.method}")
    loads = "; ".join(f"{path} {' -> '.join(f'{x:.1f}' for x in xs)}" for path, xs in results.loads.items())
    return "\n".join(
        [
            *out,
            "",
            f"- loopback PING round trip: {loopback_rtt * 1e3:.3f} ms",
            f"- load average (1 min) at the start and end of each pass: {loads}",
            f"- load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            "",
            *methods,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    from bench.harness import exit_on_signals
    from bench.measure import render

    parser = argparse.ArgumentParser(prog="python -m bench.traffic_cases", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, default=2)
    parser.add_argument("--rtt", type=float, default=1.0)
    parser.add_argument("--scripts", action="store_true", help="also run bench/audit-ttl-scripts")
    parser.add_argument(
        "--no-replica", dest="replica", action="store_false", help="skip the pass with a replica beside the primary"
    )
    args = parser.parse_args(argv)
    if args.scripts:
        VARIANTS["scripts"] = "bench/audit-ttl-scripts"
    exit_on_signals()
    rows, report = run(args.keys, args.rounds, args.busy, args.rtt, args.replica)
    print(render(rows))
    print()
    print(report)
    return 0 if all(r.met != "NO" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
