"""What a short procedure costs in CPU: an operator in an incident runs many of them, one process each.

`runbook run redis/health-check` against a throwaway redis-server (a free port, never 6379), next to
`python -c 'import redis'` (the least any Python tool that talks to Redis pays), alternately, in one run.
The figure is user + system CPU of the child (os.wait4), not wall time: on a busy machine, waiting for a
core is not start-up. Both get the same environment: a fresh cache directory (the first run of ours
validates the procedure and fills it, as an operator's first run does, and is not counted) and a
private bytecode cache (so neither compiles source on the counted runs).

`python -m bench.startup [--rounds N] [--engine DIR ...]`: DIR is a checkout to measure (default: this
one); several are measured in the same rounds (a before and an after, side by side).
"""

from __future__ import annotations

import argparse
import os
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


def health_check(rounds: int, engines: list[Path] | None = None) -> list[Row]:
    """Median CPU of `runbook run redis/health-check` (each engine checkout given) and of
    `python -c 'import redis'`, alternately: one row per engine, all against the same reference runs."""
    from engine.sandbox import RedisServer

    engines = engines or [ROOT]
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp, RedisServer.start() as server:
        work = Path(tmp)
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPROFILEIMPORTTIME")}
        base.pop("REDISCLI_AUTH", None)
        reference = [sys.executable, "-c", "import redis"]
        runs = []
        for n, engine_root in enumerate(engines):
            env = {
                **base,
                "PYTHONPATH": str(engine_root),
                "XDG_CACHE_HOME": str(work / f"cache-{n}"),
                "PYTHONPYCACHEPREFIX": str(work / "pycache"),
            }
            argv = [sys.executable, "-m", "engine.cli", "run", "redis/health-check"]
            argv += ["--redis", f"redis://127.0.0.1:{server.port}/0", "--transcripts-dir", str(work / "transcripts")]
            runs.append((argv, env))
        reference_env = {**base, "PYTHONPYCACHEPREFIX": str(work / "pycache")}
        first = [cpu_of(argv, env, work) for argv, env in runs]  # validates, fills the caches, writes bytecode
        cpu_of(reference, reference_env, work)
        mine: list[list[float]] = [[] for _ in runs]
        theirs: list[float] = []
        for _ in range(rounds):
            for n, (argv, env) in enumerate(runs):
                mine[n].append(cpu_of(argv, env, work))
            theirs.append(cpu_of(reference, reference_env, work))
    base_s = statistics.median(theirs)
    return [
        Row(
            "runbook run redis/health-check, CPU (vs python -c 'import redis')"
            + (f" [{engine_root}]" if len(engines) > 1 else ""),
            statistics.median(cpu),
            base_s,
            None,
            limit_s=LIMIT_S,
            note=f"CPU (user+sys), median of {rounds}, min {min(cpu):.3f}s (reference min {min(theirs):.3f}s); "
            f"the first run (validating the procedure, filling the caches, compiling bytecode) took {cold:.3f}s",
        )
        for engine_root, cpu, cold in zip(engines, mine, first, strict=True)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument(
        "--engine",
        type=Path,
        action="append",
        help="a checkout whose engine runs (default: this one); repeatable, all measured in the same rounds",
    )
    args = parser.parse_args(argv)
    rows = health_check(args.rounds, [e.resolve() for e in args.engine] if args.engine else None)
    print(render(rows))
    return 0 if all(r.met != "NO" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
