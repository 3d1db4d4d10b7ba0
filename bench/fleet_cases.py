"""`python -m bench.fleet_cases`: a read-only procedure across N sandbox Redis targets vs on one.

Starts N redis-servers of its own (never the one on 6379), writes an inventory of them, and times
`runbook run ... --target 'bench/*'` against `runbook run ... --target bench/r0`, alternately, medians.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

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
        env = {**os.environ, "PYTHONPATH": str(REPO)}

        def run(*extra: str) -> None:
            subprocess.run([*base, *extra], check=True, capture_output=True, env=env, cwd=str(REPO), timeout=600)

        ours, reference = alternate(
            lambda: run("--target", "bench/*", "--forks", str(forks)), lambda: run("--target", "bench/r0"), rounds
        )
        return [Row(f"read-only on {targets} targets, --forks {forks} (vs 1 target)", ours, reference, 2.0)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_cases", description=__doc__)
    parser.add_argument("--targets", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--forks", type=int, default=8)
    args = parser.parse_args(argv)
    rows = fleet(args.targets, args.rounds, args.forks)
    print(render(rows))
    return 0 if all(r.met != "NO" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
