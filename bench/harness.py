"""The processes a keyspace benchmark runs beside Redis, and what one run of an operation cost.

Every process started here (relays, the production-traffic generator, CPU spinners) is registered
with a `Processes` that ends them on every way out: the normal one, an exception, Ctrl-C, SIGTERM or
SIGHUP (turned into SystemExit by `exit_on_signals`), and interpreter exit (atexit). They also watch
their stdin, so a benchmark killed with SIGKILL leaves none of them running.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.relay import read_stats
from bench.stats import Cost, calls, calls_delta, cpu_seconds, steal_seconds

LAUNCHER = Path(__file__).resolve().parent / "rusage.py"  # run with -S: a small parent, see its docstring


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP end the benchmark like Ctrl-C does: through every finally block."""

    def leave(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, leave)


class Processes:
    """Children that must not outlive the benchmark."""

    def __init__(self) -> None:
        self._children: list[subprocess.Popen[bytes]] = []
        atexit.register(self.stop_all)

    def start(self, argv: list[str], read_line: bool = False) -> tuple[subprocess.Popen[bytes], str]:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=measured_env())
        self._children.append(proc)
        line = proc.stdout.readline().decode().strip() if read_line and proc.stdout else ""
        return proc, line

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            if proc.stdin:
                proc.stdin.close()  # each child ends when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc in self._children:
            self._children.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self._children):
            self.stop(proc)


ROOT = Path(__file__).resolve().parent.parent


def tool_env() -> dict[str, str]:
    """What every command the bench starts or measures runs with: this checkout's engine, its bytecode read
    from `__pycache__` as an installed tool's is (pip compiles it at install; `compile_bytecode` does here).

    Why: a checkout run with PYTHONDONTWRITEBYTECODE=1 (this machine's default) compiles about 270 modules
    at every start, which is not what an operator pays: measured beside two CPU spinners, the 1M-key audit
    took 3.3-3.6 s that way and 2.0-2.4 s with its bytecode (docs/performance.md). A PYTHONPYCACHEPREFIX
    is dropped too: there the standard library's and site-packages' bytecode would be compiled afresh."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    return {**env, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@functools.cache
def compile_bytecode() -> None:
    """Once per bench process, before anything is measured: the engine's and bench's bytecode (compileall
    skips what is current; the standard library and site-packages come compiled by their installers)."""
    argv = [sys.executable, "-m", "compileall", "-q", "-j", "0", str(ROOT / "engine"), str(ROOT / "bench")]
    subprocess.run(argv, env=tool_env(), stdout=subprocess.DEVNULL, check=True)


def measured_env() -> dict[str, str]:
    """`tool_env`, the bytecode compiled first."""
    compile_bytecode()
    return tool_env()


@dataclass(frozen=True)
class Relayed:
    """A delaying relay in front of the server, with the round-trip time it really adds."""

    port: int
    stats: Path
    one_way_ms: float
    rtt_s: float  # measured: median PING round trip through the relay


def start_relay(processes: Processes, port: int, one_way_ms: float, stats: Path) -> Relayed:
    argv = [sys.executable, "-m", "bench.relay", "--target", f"127.0.0.1:{port}", "--one-way-ms", str(one_way_ms)]
    _, line = processes.start([*argv, "--stats", str(stats)], read_line=True)
    relay_port = int(line)
    return Relayed(relay_port, stats, one_way_ms, ping_rtt(relay_port))


def ping_rtt(port: int, pings: int = 200) -> float:
    """Median PING round trip to 127.0.0.1:port, in seconds."""
    client = redis.Redis(port=port)
    try:
        client.ping()
        times = []
        for _ in range(pings):
            began = time.perf_counter()
            client.ping()
            times.append(time.perf_counter() - began)
        return statistics.median(times)
    finally:
        client.close()


@dataclass(frozen=True)
class Measured:
    cost: Cost
    window: tuple[float, float]  # monotonic start and end, to find the production traffic sent meanwhile
    commands: dict[str, int]


def _steal() -> float:
    """The machine's steal time so far (0 where /proc/stat is not there to say)."""
    try:
        return steal_seconds(Path("/proc/stat").read_text(), os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError):
        return 0.0


class Meter:
    """Runs one command (the runbook CLI or a shell pipeline) and measures what it cost."""

    def __init__(self, admin: redis.Redis) -> None:
        self.admin = admin
        self.idle_cpu_per_s = 0.0  # server CPU the traffic beside us costs per second, subtracted

    def calibrate_idle(self, seconds: float) -> tuple[float, float]:
        """Let only the production traffic run; learn its server CPU rate. Returns the idle window."""
        cpu0, began = cpu_seconds(self.admin.info("cpu")), time.monotonic()
        time.sleep(seconds)
        cpu1, ended = cpu_seconds(self.admin.info("cpu")), time.monotonic()
        self.idle_cpu_per_s = max(0.0, (cpu1 - cpu0) / (ended - began))
        return began, ended

    def run(self, argv: list[str] | str, relay: Relayed | None = None, env: dict[str, str] | None = None) -> Measured:
        calls0, cpu0 = calls(self.admin.info("commandstats")), cpu_seconds(self.admin.info("cpu"))
        steal0 = _steal()
        turns0 = read_stats(relay.stats)[0] if relay else 0
        with tempfile.NamedTemporaryFile(prefix="bench-rusage-", suffix=".json", delete=False) as handle:
            report = Path(handle.name)
        try:
            command = ["--shell", argv] if isinstance(argv, str) else ["--", *argv]
            proc = subprocess.run(
                [sys.executable, "-S", str(LAUNCHER), str(report), *command],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={**measured_env(), **(env or {})},
            )
            usage = json.loads(report.read_text()) if report.stat().st_size else {}
        finally:
            report.unlink(missing_ok=True)
        if proc.returncode != 0 or usage.get("status") not in (0, 1):
            raise RuntimeError(f"{argv!r} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
        cpu1, calls1 = cpu_seconds(self.admin.info("cpu")), calls(self.admin.info("commandstats"))
        turns = self._turns(relay) - turns0 if relay else 0
        commands = calls_delta(calls0, calls1)
        began, ended = usage["began"], usage["ended"]
        wall = ended - began
        server = max(0.0, cpu1 - cpu0 - self.idle_cpu_per_s * wall)
        cost = Cost(
            wall_s=wall,
            round_trips=turns,
            server_cpu_s=server,
            client_cpu_s=usage["cpu"],
            peak_rss_mb=usage["maxrss_kb"] // 1024,
            commands=sum(commands.values()),
            steal_s=max(0.0, _steal() - steal0),
        )
        return Measured(cost, (began, ended), commands)

    @staticmethod
    def _turns(relay: Relayed) -> int:
        """The relay's turn count once every connection of the finished run is closed."""
        deadline = time.monotonic() + 10
        turns, open_ = read_stats(relay.stats)
        while open_ and time.monotonic() < deadline:
            time.sleep(0.01)
            turns, open_ = read_stats(relay.stats)
        return turns
