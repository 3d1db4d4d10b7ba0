"""`python -m bench.fleet_cases`: a read-only procedure across N sandbox Redis targets vs on one, and a
rolling change across N interrupted at target K, then continued.

Starts N redis-servers of its own (never the one on 6379), writes an inventory of them, and times
`runbook run ... --target 'bench/*'` against `runbook run ... --target bench/r0`, alternately, medians.
Then rolls a two-change procedure over all N (`--yes`, one at a time), holds target K in a wait between
its changes (the bench holds it: the target's `go` key is not set), sends Ctrl-C, sets `go` everywhere
and runs `runbook continue`: every counter must end at exactly 1 and no finished target runs again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.harness import measured_env
from bench.measure import Row, alternate, render
from engine.sandbox import RedisServer

REPO = Path(__file__).resolve().parents[1]
PROCEDURE = """\
id: bench/fleet-check
title: Fleet check
section: bench
description: three reads and an expectation, as a health check does
requires: [redis]
steps:
  - id: ping
    name: Ping
    redis: {command: [PING]}
  - id: memory
    name: Memory
    redis: {command: [INFO, memory]}
  - id: mode
    name: Read the marker
    redis: {command: [GET, mode]}
    register: mode
    expect:
      - that: "mode == 'good'"
        message: "mode is {{ mode }}"
"""


def fleet(targets: int, rounds: int, forks: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        directory = Path(tmp)
        servers = [stack.enter_context(RedisServer.start()) for _ in range(targets)]
        for server in servers:
            server.client().set("mode", "good")
        (directory / "procs").mkdir()
        (directory / "procs" / "check.yaml").write_text(PROCEDURE)
        inventory = directory / "inventory.yaml"
        lines = ["environments:", "  bench:", "    targets:"]
        for i, server in enumerate(servers):
            lines += [f"      r{i}:", f"        redis: {{url: 'redis://127.0.0.1:{server.port}/0'}}"]
        inventory.write_text("\n".join(lines) + "\n")
        base = [sys.executable, "-m", "engine.cli", "run", "bench/fleet-check", "--inventory", str(inventory)]
        base += ["--procedures", str(directory / "procs"), "--transcripts-dir", str(directory / "t")]
        env = measured_env()

        def run(*extra: str) -> None:
            subprocess.run([*base, *extra], check=True, capture_output=True, env=env, cwd=str(REPO), timeout=600)

        run("--target", "bench/r0")  # uncounted: fills the bytecode and validation caches, as an install has them

        ours, reference = alternate(
            lambda: run("--target", "bench/*", "--forks", str(forks)), lambda: run("--target", "bench/r0"), rounds
        )
        return [Row(f"read-only on {targets} targets, --forks {forks} (vs 1 target)", ours, reference, 2.0)]


ROLLOUT = (Path(__file__).resolve().parent / "procedures" / "hold.yaml").read_text()


def _finished_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n")[:-1] if line.strip()]


def rollout_continue(targets: int, stop_at: int) -> bool:
    """A rolling change interrupted at target `stop_at` (1-based), then continued: True if nothing ran twice."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        directory = Path(tmp)
        servers = [stack.enter_context(RedisServer.start()) for _ in range(targets)]
        for server in servers[: stop_at - 1]:
            server.client().set("go", "1")  # the targets before the held one go straight through
        (directory / "procs").mkdir()
        (directory / "procs" / "hold.yaml").write_text(ROLLOUT)
        inventory = directory / "inventory.yaml"
        lines = ["environments:", "  bench:", "    targets:"]
        for i, server in enumerate(servers):
            lines += [f"      r{i}:", f"        redis: {{url: 'redis://127.0.0.1:{server.port}/0'}}"]
        inventory.write_text("\n".join(lines) + "\n")
        common = ["--procedures", str(directory / "procs"), "--transcripts-dir", str(directory / "t"), "--yes"]
        env = measured_env()
        argv = [sys.executable, "-m", "engine.cli", "run", "bench/hold", "--inventory", str(inventory)]
        started = time.monotonic()
        proc = subprocess.Popen(
            [*argv, "--target", "bench/*", *common, "--json"],
            cwd=str(REPO),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            held = f"*.bench.r{stop_at - 1}.jsonl"
            while not any(
                e["type"] == "step.started" and e["step"]["id"] == "wait"
                for found in (directory / "t").rglob(held)
                for e in _finished_lines(found)
            ):
                if proc.poll() is not None or time.monotonic() - started > 600:
                    raise RuntimeError(f"the rollout never reached target {stop_at}: {proc.communicate()}")
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGINT)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        interrupted = time.monotonic() - started
        run_id = json.loads(out.strip().splitlines()[-1])["run_id"]
        for server in servers:
            server.client().set("go", "1")
        started = time.monotonic()
        resumed = subprocess.run(
            [sys.executable, "-m", "engine.cli", "continue", run_id, *common, "--json"],
            cwd=str(REPO),
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        continued = time.monotonic() - started
        summary = json.loads(resumed.stdout.strip().splitlines()[-1])
        reused = sum(1 for t in summary["targets"] if t.get("reused_from"))
        firsts = [s.client().get("first") for s in servers]
        seconds = [s.client().get("second") for s in servers]
        exactly_once = firsts == ["1"] * targets and seconds == ["1"] * targets
        print(
            f"rollout of {targets} targets interrupted at target {stop_at} ({interrupted:.1f}s), continued "
            f"({continued:.1f}s, exit {resumed.returncode}): {reused} finished targets reused, not run again; "
            f"every change made exactly once: {'yes' if exactly_once else 'NO'} "
            f"(first {firsts.count('1')}/{targets}, second {seconds.count('1')}/{targets})"
        )
        return resumed.returncode == 0 and exactly_once and reused == stop_at - 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_cases", description=__doc__)
    parser.add_argument("--targets", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--forks", type=int, default=8)
    parser.add_argument("--stop-at", type=int, default=12, help="the target (1-based) the rollout is held at")
    args = parser.parse_args(argv)
    rows = fleet(args.targets, args.rounds, args.forks)
    print(render(rows))
    once = rollout_continue(args.targets, args.stop_at)
    return 0 if all(r.met != "NO" for r in rows) and once else 1


if __name__ == "__main__":
    sys.exit(main())
