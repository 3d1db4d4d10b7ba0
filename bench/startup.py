"""What a short procedure costs in CPU: an operator in an incident runs many of them, one process each.

`runbook run redis/health-check` against a throwaway redis-server (a free port, never 6379), next to
`python -c 'import redis'` (the least any Python tool that talks to Redis pays), alternately, in one run.
The figure is user + system CPU of the child (os.wait4), not wall time: on a busy machine, waiting for a
core is not start-up. Both get the same environment: a fresh cache directory (the first run of ours
validates the procedure and fills it, as an operator's first run does, and is not counted) and a
private bytecode cache (so neither compiles source on the counted runs).

`python -m bench.startup [--rounds N] [--engine DIR]`: DIR is another checkout to measure (a before).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.measure import Row, render

LIMIT_S = 0.35
"""The target: CPU of `runbook run redis/health-check`, the procedure validated before."""
ROOT = Path(__file__).resolve().parent.parent


def cpu_of(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """User + system CPU seconds of one child (and any children it waited for); a failed run raises."""
    with open(os.devnull, "wb") as sink:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.PIPE, env=env, cwd=cwd)
        assert proc.stderr is not None
        errors = proc.stderr.read()
        proc.stderr.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {errors.decode(errors='replace')[-2000:]}")
    return usage.ru_utime + usage.ru_stime


def health_check(rounds: int, engine_root: Path = ROOT) -> list[Row]:
    """Median CPU of `runbook run redis/health-check` and of `python -c 'import redis'`, alternately."""
    from engine.sandbox import RedisServer

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp, RedisServer.start() as server:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPROFILEIMPORTTIME")}
        env.update(
            PYTHONPATH=str(engine_root),
            XDG_CACHE_HOME=str(work / "cache"),
            PYTHONPYCACHEPREFIX=str(work / "pycache"),
        )
        env.pop("REDISCLI_AUTH", None)
        ours = [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            "redis/health-check",
            "--redis",
            f"redis://127.0.0.1:{server.port}/0",
            "--transcripts-dir",
            str(work / "transcripts"),
        ]
        reference = [sys.executable, "-c", "import redis"]
        first = cpu_of(ours, env, work)  # validates, fills the caches, writes the bytecode
        cpu_of(reference, env, work)
        mine, theirs = [], []
        for _ in range(rounds):
            mine.append(cpu_of(ours, env, work))
            theirs.append(cpu_of(reference, env, work))
        shutil.rmtree(work / "transcripts", ignore_errors=True)
    median, base = statistics.median(mine), statistics.median(theirs)
    return [
        Row(
            "runbook run redis/health-check, CPU (vs python -c 'import redis')",
            median,
            base,
            None,
            limit_s=LIMIT_S,
            note=f"CPU (user+sys) median of {rounds}, min {min(mine):.3f}s / {min(theirs):.3f}s; the first run "
            f"(validating the procedure, filling the cache, compiling bytecode) took {first:.3f}s",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--engine", type=Path, default=ROOT, help="the checkout whose engine runs (default: this)")
    args = parser.parse_args(argv)
    rows = health_check(args.rounds, args.engine.resolve())
    print(render(rows))
    return 0 if all(r.met != "NO" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
