"""Keyspace operations on the big keyspace, ours (the `runbook` CLI, start-up included) vs redis-cli."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.keyspace import TENANTS, start_loaded
from bench.measure import Row, alternate, shell, timed

RUNBOOK = [sys.executable, "-m", "engine.cli", "run"]
SLOW_US = 1000  # SLOWLOG threshold while we run: every server-side call over 1 ms is recorded


def _run(args: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run the CLI; (seconds, peak RSS in MB of that process)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*RUNBOOK, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise RuntimeError(f"runbook {' '.join(args)} failed: {proc.stderr.read().decode()[-2000:]}")
    proc.stderr.close()
    return elapsed, usage.ru_maxrss // 1024


def run(keys: int, rounds: int) -> list[Row]:
    work = Path(tempfile.mkdtemp(prefix="runbook-bench-work-"))
    server = start_loaded(keys)
    cli = f"redis-cli -h 127.0.0.1 -p {server.port}"
    url = f"redis://127.0.0.1:{server.port}/0"
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "noscript", "on", ">bench", "~*", "&*", "+@all", "-@scripting")
    rows: list[Row] = []
    peak: dict[str, int] = {}
    tick = iter(range(10**6))

    ours_slow: list[dict] = []  # SLOWLOG entries recorded while one of OUR runs was going on

    def ours(name: str, *args: str, env: dict[str, str] | None = None, with_url: str = url):
        def go() -> None:
            admin.slowlog_reset()
            _, rss = _run([*args, "--redis", with_url, "--transcript", str(work / f"t{next(tick)}.jsonl")], env)
            ours_slow.extend(admin.slowlog_get(100_000))
            peak[name] = max(peak.get(name, 0), rss)

        return go

    try:
        admin.config_set("slowlog-log-slower-than", SLOW_US)
        admin.config_set("slowlog-max-len", 100_000)
        admin.slowlog_reset()
        a, b = alternate(ours("audit", "redis/audit-ttl"), shell(f"{cli} --scan --pattern 'tenant:*' | wc -l"), rounds)
        rows.append(
            Row(
                "audit-ttl, 1M keys (vs redis-cli --scan | wc -l)",
                a,
                b,
                0.35,
                note=f"server-side Lua batches; peak RSS {peak['audit']} MB (target <= 150 MB)",
            )
        )
        a, b = alternate(
            ours(
                "audit-noscript",
                "redis/audit-ttl",
                env={"REDISCLI_AUTH": "bench"},
                with_url=f"redis://noscript@127.0.0.1:{server.port}/0",
            ),
            shell(f"{cli} --scan --pattern 'tenant:*' | wc -l"),
            rounds,
        )
        rows.append(
            Row(
                "audit-ttl, scripts refused by ACL (vs the same)",
                a,
                b,
                0.7,
                note=f"client-side pipelined path; peak RSS {peak['audit-noscript']} MB",
            )
        )
        a, b = alternate(ours("memory", "redis/memory-report"), shell(f"{cli} --memkeys > /dev/null"), rounds)
        rows.append(
            Row("memory-report, 1M keys (vs redis-cli --memkeys)", a, b, 0.5, note=f"peak RSS {peak['memory']} MB")
        )
        rows += _tenant_cases(server, cli, url, work, rounds, ours)
        slow = sorted(ours_slow, key=lambda e: -e["duration"])
        worst = slow[0]["duration"] if slow else 0
        top = "; ".join(
            f"{e['duration'] / 1000:.1f} ms {e['command'][:48].decode(errors='replace')!r}" for e in slow[:4]
        )
        rows.append(
            Row(
                "longest single server-side call during our runs",
                worst / 1e6,
                0.005,
                1.0,
                note=f"from SLOWLOG (threshold {SLOW_US} us), target: no call over 5 ms; slowest: {top}",
            )
        )
        rows += _bash_loop_record(server, cli)
    finally:
        server.stop()
    return rows


def _tenant_cases(server, cli: str, url: str, work: Path, rounds: int, ours) -> list[Row]:
    """One 5,000-key tenant: export (vs the runbook's xargs mget), then delete and TTL-by-pattern of others."""
    tenants = iter(range(TENANTS))
    export_times, mget_times = [], []
    for _ in range(rounds):
        tenant = f"t{next(tenants)}"
        output = work / f"{tenant}.keys.jsonl"  # a new file must end in .jsonl (docs/cli.md, Limits)
        export_times.append(
            timed(ours("export", "redis/backup-tenant", "--var", f"tenant={tenant}", "--var", f"output={output}"))
        )
        mget_times.append(timed(shell(f"{cli} --scan --pattern 'tenant:{tenant}:*' | xargs {cli} mget > /dev/null")))
    export_s, mget_s = sorted(export_times)[rounds // 2], sorted(mget_times)[rounds // 2]
    rows = [
        Row(
            "backup-tenant, 5,000 keys (vs --scan | xargs mget)",
            export_s,
            mget_s,
            0.25,
            note="lossless (type, value, TTL) where the reference drops every non-string",
        )
    ]
    procedures = str(Path(__file__).resolve().parent / "procedures")
    delete_times, expire_times = [], []
    for _ in range(rounds):
        delete_times.append(
            timed(
                ours(
                    "delete",
                    "bench/delete-tenant",
                    "--procedures",
                    procedures,
                    "--yes",
                    "--var",
                    f"tenant=t{next(tenants)}",
                )
            )
        )
        expire_times.append(
            timed(
                ours(
                    "expire",
                    "bench/expire-tenant",
                    "--procedures",
                    procedures,
                    "--yes",
                    "--var",
                    f"tenant=t{next(tenants)}",
                )
            )
        )
    rows.append(
        Row(
            "pattern delete of a tenant (vs our export of one)",
            sorted(delete_times)[rounds // 2],
            export_s,
            1.5,
            note="keyspace delete_matching: one measuring SCAN, then UNLINK of the measured keys",
        )
    )
    rows.append(
        Row(
            "TTL by pattern of a tenant (vs our export of one)",
            sorted(expire_times)[rounds // 2],
            export_s,
            1.5,
            note="keyspace expire_matching: one measuring SCAN, then EXPIRE NX of the measured keys",
        )
    )
    return rows


def _bash_loop_record(server, cli: str) -> list[Row]:
    """The runbook's own loop (a redis-cli per key) on 10,000 keys, for the record."""
    loop = (
        f"{cli} --scan --pattern 'tenant:*' | head -n 10000 | while read key; do "
        f'ttl=$({cli} ttl "$key"); if [ "$ttl" = "-1" ]; then echo "No TTL: $key"; fi; done > /dev/null'
    )
    loop_s = timed(shell(loop))
    return [
        Row(
            "runbook's bash TTL loop, 10,000 keys (record)",
            loop_s,
            loop_s,
            None,
            note=f"{10_000 / loop_s:.0f} keys/s: {1_000_000 / (10_000 / loop_s) / 60:.0f} min for 1M keys",
        )
    ]
