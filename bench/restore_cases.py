"""A restore beside production traffic: ours against `redis-cli --pipe` of the same RESTOREs.

`python -m bench.restore_cases` (or `python -m bench --only restore`; by hand, never in the test suite)
exports the keys of many tenants at once from the benchmark keyspace (`--match`, by default
`tenant:t1??:*`: 100 of its 200 tenants, half the keys), so that a restore lasts long enough to weigh
against production traffic; then, on an empty redis-server of its own with `bench/load.py`'s traffic
(1,000 GET/SET per second over 4 connections, open loop), alternately (`--rounds` times, each first in
turn), restores it:

- ours: `runbook run bench/restore-file` (redis/restore-tenant's import step alone: verify the file and
  its scope in one pass, EXISTS for every key, RESTORE, EXISTS again), a fresh process as an operator
  runs it;
- the reference: the same RESTORE commands as raw protocol through `redis-cli --pipe`, the fastest a
  restore can go and what nothing checks (no checksum, no scope, no existing keys).

Between runs the server is emptied (FLUSHALL ASYNC, waited out before the next run starts). It reports
each side's wall time and cost (bench/harness.py Meter) and the production traffic's p50 / p99 / max
during each, from when each request was due and from when it was sent, against idle windows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Meter, Processes, exit_on_signals, measured_env
from bench.keyspace import start_loaded
from bench.keyspace_cases import LOAD_CLIENTS, LOAD_RATE
from bench.load import read_samples
from bench.measure import Row, render
from bench.stats import Latency, in_windows
from engine.backup import keyfile
from engine.backup.rdb import encode_command
from engine.sandbox import RedisServer

RUNBOOK = [sys.executable, "-m", "engine.cli", "run"]
PROCEDURES = str(Path(__file__).resolve().parent / "procedures")
MATCH = "tenant:t1??:*"
REFERENCE = "redis-cli --pipe"


def _export(source: RedisServer, match: str, work: Path) -> Path:
    path = work / "export.keys.jsonl"
    argv = [*RUNBOOK, "bench/export-matching", "--procedures", PROCEDURES, "--var", f"match={match}"]
    argv += ["--var", f"output={path}", "--redis", source.url, "--transcript", str(work / "export.jsonl")]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=measured_env())
    return path


def _protocol(export: Path, work: Path) -> Path:
    """The export's keys as RESTORE commands in raw protocol, for `redis-cli --pipe`."""
    path = work / "restore.resp"
    with path.open("wb") as out:
        for record in keyfile.records(export):
            out.write(encode_command("RESTORE", record.key, str(max(record.pttl, 0)), record.payload))
    return path


def _emptied(admin) -> None:  # type: ignore[no-untyped-def]
    admin.execute_command("FLUSHALL", "ASYNC")
    while admin.dbsize() > 200 or int(admin.info("memory").get("lazyfree_pending_objects", 0)):
        time.sleep(0.1)  # (the traffic's own 100 keys come back at once)
    time.sleep(1)


def _method(transcript: Path) -> str:
    for line in transcript.read_text().splitlines():
        event = json.loads(line)
        if event.get("type") == "step.output" and "RESTORE pipelines" in str(event.get("output")):
            return str(event["output"])
    return "(no method line)"


def run(keys: int, rounds: int, match: str = MATCH) -> tuple[list[Row], str]:
    processes = Processes()
    work = Path(tempfile.mkdtemp(prefix="runbook-bench-restore-"))
    target: RedisServer | None = None
    try:
        source = start_loaded(keys)
        try:
            export = _export(source, match, work)
        finally:
            source.stop()
            shutil.rmtree(source.directory, ignore_errors=True)
        protocol = _protocol(export, work)
        count = keyfile.verify(export)["key_count"]
        target = RedisServer.start(config={"save": ""})
        admin = target.client(socket_timeout=None)
        meter = Meter(admin)
        load = work / "load.bin"
        argv = [sys.executable, "-m", "bench.load", "--port", str(target.port), "--out", str(load)]
        processes.start([*argv, "--rate", str(LOAD_RATE), "--clients", str(LOAD_CLIENTS)])
        time.sleep(2)
        idle = [meter.calibrate_idle(3.0)]
        windows: dict[str, list[tuple[float, float]]] = {"ours": [], REFERENCE: []}
        walls: dict[str, list[float]] = {"ours": [], REFERENCE: []}
        methods: list[str] = []
        for i in range(rounds):
            for side in ("ours", REFERENCE) if i % 2 == 0 else (REFERENCE, "ours"):
                _emptied(admin)
                if side == "ours":
                    transcript = work / f"restore-{i}.jsonl"
                    ours = [*RUNBOOK, "bench/restore-file", "--procedures", PROCEDURES, "--var", f"input={export}"]
                    ours += ["--yes", "--redis", target.url, "--transcript", str(transcript)]
                    measured = meter.run(ours)
                    methods.append(_method(transcript))
                else:
                    measured = meter.run(f"redis-cli -p {target.port} --pipe < {protocol}")
                assert admin.dbsize() >= count, f"{side} restored {admin.dbsize()} of {count} keys"
                windows[side].append(measured.window)
                walls[side].append(measured.cost.wall_s)
        idle.append(meter.calibrate_idle(3.0))
        processes.stop_all()
        due, sent = read_samples(load), read_samples(load, service=True)
        latency = {
            name: (Latency.of(in_windows(due, w)), Latency.of(in_windows(sent, w)))
            for name, w in (("idle", idle), *windows.items())
        }
        scale = f"{count // 1000}k"
        rows = [
            Row(
                f"restore, {scale} keys beside production traffic (vs {REFERENCE})",
                sorted(walls["ours"])[len(walls["ours"]) // 2],
                sorted(walls[REFERENCE])[len(walls[REFERENCE]) // 2],
                None,
            ),
            Row(
                f"production p99 during our restore (vs during {REFERENCE})",
                latency["ours"][0].p99,
                latency[REFERENCE][0].p99,
                1.0,
            ),
        ]
        lines = [f"Production traffic during the restores of {count} keys ({match}), p50 / p99 / max:"]
        for name, (from_due, from_sent) in latency.items():
            lines.append(f"- {name}: {from_due.render()} from due, {from_sent.render()} from sending")
        lines += [f"- walls: ours {walls['ours']}, {REFERENCE} {walls[REFERENCE]}", f"- ours: {methods[-1]}"]
        return rows, "\n".join(lines)
    finally:
        processes.stop_all()
        if target is not None:
            target.stop()
            shutil.rmtree(target.directory, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restore_cases", description=__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000, help="the benchmark keyspace the export is taken from")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--match", default=MATCH, help=f"the keys exported and restored (default {MATCH})")
    args = parser.parse_args(argv)
    exit_on_signals()
    rows, report = run(args.keys, args.rounds, args.match)
    print(render(rows))
    print()
    print(report)
    return 0 if all(r.met != "NO" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
