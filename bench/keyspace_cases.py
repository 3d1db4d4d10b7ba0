"""Keyspace operations on the big keyspace, ours (the `runbook` CLI, start-up included) vs redis-cli.

Each pair runs on loopback, through delaying relays (a network between operator and Redis), and on
loopback with the machine made busy; production traffic runs beside all of it. Every run reports
wall time, round trips (counted by the relay), commands (INFO commandstats), server CPU (INFO cpu),
client CPU and peak memory (rusage of the process tree).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import Measured, Meter, Processes, Relayed, ping_rtt, start_relay
from bench.keyspace import TENANTS, start_loaded
from bench.load import read_samples
from bench.measure import Row
from bench.stats import Cost, Latency, in_windows, median_cost, projected_ratio, projected_wall

RUNBOOK = [sys.executable, "-m", "engine.cli", "run"]
SLOW_US = 1000  # SLOWLOG threshold while we run: every server-side call over 1 ms is recorded
PROCEDURES = str(Path(__file__).resolve().parent / "procedures")
LOAD_RATE, LOAD_CLIENTS = 1000, 4
# One core's worth of CPU-bound work, ending when its stdin closes (so a killed benchmark leaves none behind)
SPIN = (
    "import os, sys, threading\n"
    "threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()\n"
    "while True: pass\n"
)  # the production traffic: 1,000 GET/SET per second over 4 connections


@dataclass(frozen=True)
class Pair:
    name: str
    reference: str
    target_1ms: float | None


PAIRS = (
    Pair("audit-ttl", "redis-cli --scan | wc -l", 0.1),
    Pair("memory-report", "redis-cli --memkeys", 0.2),
    Pair("backup-tenant", "--scan | xargs mget", 0.1),
)


@dataclass
class Results:
    """Every measured run, by (operation, side, path), and the windows production traffic is judged in."""

    runs: dict[tuple[str, str, str], list[Measured]] = field(default_factory=lambda: defaultdict(list))
    idle: list[tuple[float, float]] = field(default_factory=list)
    slow: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    rtt: dict[str, float] = field(default_factory=dict)

    def cost(self, op: str, side: str, path: str) -> Cost | None:
        runs = self.runs.get((op, side, path))
        return median_cost([m.cost for m in runs]) if runs else None

    def windows(self, op: str, side: str, path: str) -> list[tuple[float, float]]:
        return [m.window for m in self.runs.get((op, side, path), [])]


class Bench:
    def __init__(self, keys: int, processes: Processes, work: Path, server) -> None:
        self.keys, self.processes, self.work, self.server = keys, processes, work, server
        self.admin = server.client(socket_timeout=None)
        self.meter = Meter(self.admin)
        self.results = Results()
        self.tenants = iter(range(TENANTS))
        self.tick = iter(range(10**6))

    # -- the commands ------------------------------------------------------------------------------
    def _port(self, relay: Relayed | None) -> int:
        return relay.port if relay else self.server.port

    def ours(
        self,
        op: str,
        relay: Relayed | None,
        tenant: str,
        env: dict[str, str] | None = None,
        user: str = "",
        procedure: str | None = None,
    ):
        url = f"redis://{user + '@' if user else ''}127.0.0.1:{self._port(relay)}/0"
        transcript = str(self.work / f"t{next(self.tick)}.jsonl")
        procedure = procedure or {"audit-ttl": "redis/audit-ttl", "memory-report": "redis/memory-report"}.get(op)
        if procedure:
            args = [procedure, *(["--procedures", PROCEDURES] if procedure.startswith("bench/") else [])]
        else:
            output = str(self.work / f"{tenant}-{next(self.tick)}.keys.jsonl")
            args = ["redis/backup-tenant", "--var", f"tenant={tenant}", "--var", f"output={output}"]
        return [*RUNBOOK, *args, "--redis", url, "--transcript", transcript], env

    def reference(self, op: str, relay: Relayed | None, tenant: str) -> str:
        cli = f"redis-cli -h 127.0.0.1 -p {self._port(relay)}"
        if op == "audit-ttl":
            return f"{cli} --scan --pattern 'tenant:*' | wc -l"
        if op == "memory-report":
            return f"{cli} --memkeys > /dev/null"
        return f"{cli} --scan --pattern 'tenant:{tenant}:*' | xargs {cli} mget > /dev/null"

    def measure_ours(self, op: str, path: str, relay: Relayed | None, tenant: str, **kw) -> Measured:
        argv, env = self.ours(op, relay, tenant, **kw)
        self.admin.slowlog_reset()
        measured = self.meter.run(argv, relay, env)
        self.results.slow[path].extend(self.admin.slowlog_get(100_000))
        return measured

    # -- the passes --------------------------------------------------------------------------------
    def pairs(self, path: str, relay: Relayed | None, rounds: int, ops: tuple[str, ...]) -> None:
        """Each pair alternately (ours, reference, ours, ...) so drift hits both alike."""
        for _ in range(rounds):
            for op in ops:
                tenant = f"t{next(self.tenants) % TENANTS}"
                self.results.runs[(op, "ours", path)].append(self.measure_ours(op, path, relay, tenant))
                self.results.runs[(op, "reference", path)].append(
                    self.meter.run(self.reference(op, relay, tenant), relay)
                )

    def idle(self, seconds: float = 3.0) -> None:
        self.results.idle.append(self.meter.calibrate_idle(seconds))


def run(keys: int, rounds: int, rtts_ms: list[float], net_rounds: int, busy: int) -> tuple[list[Row], str]:
    """All keyspace cases; (rows for the summary table, the detailed cost report)."""
    processes = Processes()
    work = Path(tempfile.mkdtemp(prefix="runbook-bench-work-"))
    server = start_loaded(keys)
    try:
        server.client().execute_command(
            "ACL", "SETUSER", "noscript", "on", ">bench", "~*", "&*", "+@all", "-@scripting"
        )
        bench = Bench(keys, processes, work, server)
        bench.admin.config_set("slowlog-log-slower-than", SLOW_US)
        bench.admin.config_set("slowlog-max-len", 100_000)
        samples = work / "load.bin"
        load, _ = processes.start(
            [
                sys.executable,
                "-m",
                "bench.load",
                "--port",
                str(server.port),
                "--out",
                str(samples),
                "--rate",
                str(LOAD_RATE),
                "--clients",
                str(LOAD_CLIENTS),
            ]
        )
        ops = tuple(p.name for p in PAIRS)
        bench.results.rtt["loopback"] = ping_rtt(server.port)
        bench.idle()
        bench.pairs("loopback", None, rounds, ops)
        # scripts refused: the path `auto` takes (beside this traffic on the server's own host, small pages
        # while a core is idle), and the pipelined fallback itself (`server_side: never`), whose speed the
        # target weighs
        noscript = {
            procedure: [
                bench.measure_ours(
                    "audit-ttl",
                    "noscript",
                    None,
                    "",
                    env={"REDISCLI_AUTH": "bench"},
                    user="noscript",
                    procedure=procedure,
                )
                for _ in range(rounds)
            ]
            for procedure in ("redis/audit-ttl", "bench/audit-ttl-pipelines")
        }
        for rtt_ms in rtts_ms:
            path = f"{rtt_ms:g} ms"
            relay = start_relay(processes, server.port, rtt_ms / 2, work / f"relay-{rtt_ms:g}.stats")
            bench.results.rtt[path] = relay.rtt_s
            bench.idle()
            bench.pairs(path, relay, net_rounds, ops)
        if busy:
            spinners = [processes.start([sys.executable, "-c", SPIN])[0] for _ in range(busy)]
            try:
                time.sleep(1)
                bench.idle()
                bench.results.idle.pop()  # an idle window of a busy machine is not "idle"
                bench.pairs("busy", None, rounds, ("audit-ttl",))
            finally:
                for spinner in spinners:
                    processes.stop(spinner)
        processes.stop(load)
        traffic = read_samples(samples)
        return _rows(bench.results, keys, rtts_ms, noscript, traffic, busy)
    finally:
        processes.stop_all()
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)  # the copied dataset (hundreds of MB)
        shutil.rmtree(work, ignore_errors=True)


def _rows(
    results: Results,
    keys: int,
    rtts_ms: list[float],
    noscript: dict[str, list[Measured]],
    traffic: list[tuple[float, float]],
    busy: int,
) -> tuple[list[Row], str]:
    rows: list[Row] = []
    scale = f"{keys / 1e6:g}M" if keys >= 1_000_000 else f"{keys // 1000}k"
    tenant_keys = keys // TENANTS
    for path in ["loopback", *(f"{r:g} ms" for r in rtts_ms)]:
        for pair in PAIRS:
            ours, ref = results.cost(pair.name, "ours", path), results.cost(pair.name, "reference", path)
            if ours is None or ref is None:
                continue
            target = pair.target_1ms if path == "1 ms" else None
            note = ""
            if path != "loopback":
                model = projected_ratio(ours, ref, results.rtt[path])
                note = f"projected {model:.3f}x (round trips {ours.round_trips} vs {ref.round_trips})"
            label = f"{pair.name}, {scale} keys, {path} (vs {pair.reference})"
            rows.append(Row(label, ours.wall_s, ref.wall_s, target, note=note))
    busy_ours, busy_ref = results.cost("audit-ttl", "ours", "busy"), results.cost("audit-ttl", "reference", "busy")
    if busy_ours and busy_ref:
        rows.append(
            Row(
                f"audit-ttl, {scale} keys, loopback, busy (vs redis-cli --scan | wc -l)",
                busy_ours.wall_s,
                busy_ref.wall_s,
                0.5,
                note=f"{busy} CPU-bound spinners beside Redis, {LOAD_RATE} req/s of production traffic",
            )
        )
    ref = results.cost("audit-ttl", "reference", "loopback")
    for procedure, label, target, note in (
        ("redis/audit-ttl", "as `auto` takes it", None, "the path auto took (small pages while a core is idle)"),
        ("bench/audit-ttl-pipelines", "the pipelined fallback", 0.7, "server_side never: SCAN pages of 1,000"),
    ):
        runs = noscript.get(procedure)
        if runs and ref:
            cost = median_cost([m.cost for m in runs])
            rows.append(
                Row(
                    f"audit-ttl, scripts refused by ACL, {label} (vs --scan | wc -l)",
                    cost.wall_s,
                    ref.wall_s,
                    target,
                    note=f"{note}, beside the production traffic; peak RSS {cost.peak_rss_mb} MB",
                )
            )
    # production traffic: p99 during our audit vs during redis-cli --scan, on loopback
    during_ours = Latency.of(in_windows(traffic, results.windows("audit-ttl", "ours", "loopback")))
    during_ref = Latency.of(in_windows(traffic, results.windows("audit-ttl", "reference", "loopback")))
    rows.append(
        Row(
            "production p99 during our audit (vs during redis-cli --scan)",
            during_ours.p99,
            during_ref.p99,
            1.0,
            note=f"{LOAD_RATE} GET/SET per second over {LOAD_CLIENTS} connections, latency from when each was due",
        )
    )
    quiet = sorted(results.slow["loopback"], key=lambda e: -e["duration"])
    worst = quiet[0]["duration"] / 1e6 if quiet else 0.0
    top = "; ".join(f"{e['duration'] / 1000:.1f} ms {e['command'][:40].decode(errors='replace')!r}" for e in quiet[:3])
    rows.append(
        Row(
            "longest single server-side call during our loopback runs",
            worst,
            0.005,
            1.0,
            note=f"SLOWLOG (threshold {SLOW_US} us) records wall time: a busy machine stretches it. {top}",
        )
    )
    one_ms = "1 ms" if 1.0 in rtts_ms else (f"{rtts_ms[-1]:g} ms" if rtts_ms else None)
    audit_rt = results.cost("audit-ttl", "ours", one_ms) if one_ms else None
    if audit_rt:
        budget = 1500 * keys / 1_000_000
        rows.append(
            Row(
                f"round trips of audit-ttl, {scale} keys, beside production traffic (vs {budget:g})",
                audit_rt.round_trips,
                budget,
                None,  # the target is an idle server's (bench/traffic_cases.py): beside traffic calls are shorter
                note="counted by the relay: a turn is the client speaking after the server did; beside production "
                "traffic the calls are short (the busy budget), so there are more of them: the target is checked on "
                "an idle server by `python -m bench --only traffic`",
                unit="",
            )
        )
    export_rt = results.cost("backup-tenant", "ours", one_ms) if one_ms else None
    if export_rt:
        rows.append(
            Row(
                f"round trips of backup-tenant, {tenant_keys} keys of {scale}, beside production traffic (vs 50)",
                export_rt.round_trips,
                50,
                None,  # as above: beside traffic the keys go in pipelines of 20, the SCANs stay short
                note="the export must SCAN MATCH the whole keyspace to find the tenant's keys; beside production "
                "traffic its SCANs stay within the busy budget and its keys go 20 a pipeline: the target is checked "
                "on an idle server by `python -m bench --only traffic`",
                unit="",
            )
        )
    return rows, _report(results, rtts_ms, traffic)


def _report(results: Results, rtts_ms: list[float], traffic: list[tuple[float, float]]) -> str:
    """The cost table (every run's model inputs) and production latency per window."""
    header = (
        "operation",
        "side",
        "path",
        "wall",
        "model",
        "round trips",
        "commands",
        "server CPU",
        "client CPU",
        "peak RSS",
        "prod p50 / p99 / max",
    )
    lines = [header]
    idle = Latency.of(in_windows(traffic, results.idle))
    lines.append(("(idle)", "-", "-", "-", "-", "-", "-", "-", "-", "-", idle.render()))
    for path in ["loopback", *(f"{r:g} ms" for r in rtts_ms), "busy"]:
        for pair in PAIRS:
            for side in ("ours", "reference"):
                cost = results.cost(pair.name, side, path)
                if cost is None:
                    continue
                rtt = results.rtt.get(path, results.rtt.get("loopback", 0.0))
                model = projected_wall(cost.round_trips, rtt, cost.server_cpu_s, cost.client_cpu_s)
                prod = Latency.of(in_windows(traffic, results.windows(pair.name, side, path)))
                lines.append(
                    (
                        pair.name,
                        side if side == "ours" else pair.reference,
                        path,
                        f"{cost.wall_s:.2f}s",
                        f"{model:.2f}s" if cost.round_trips else "-",
                        str(cost.round_trips or "-"),
                        str(cost.commands),
                        f"{cost.server_cpu_s:.2f}s",
                        f"{cost.client_cpu_s:.2f}s",
                        f"{cost.peak_rss_mb} MB",
                        prod.render(),
                    )
                )
    escaped = [tuple(c.replace("|", "\\|") for c in line) for line in lines]
    widths = [max(len(line[i]) for line in escaped) for i in range(len(header))]
    out = ["| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(line)) + " |" for line in escaped]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    rtts = ", ".join(f"{path} {rtt * 1e3:.3f} ms" for path, rtt in results.rtt.items())
    return "\n".join(
        [
            *out,
            "",
            f"- measured PING round trip per path: {rtts}",
            f"- load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        ]
    )
