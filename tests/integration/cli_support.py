"""Run the real `runbook` CLI in a subprocess (no terminal unless a test uses a pty) and read what it wrote."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.keyspace import pacing

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout.strip().splitlines()[-1])


def runbook(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,  # bounds a hang only: a busy machine makes a run slow, never wrong
    stdin: Any = subprocess.DEVNULL,
) -> CliResult:
    full_env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}  # only what the test gives
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
        stdin=stdin,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def events(path: str | Path) -> list[dict[str, Any]]:
    # split on \n only: a JSON string may hold U+2028 or \x85 raw, which splitlines() would cut at
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line.strip()]


def of_type(evts: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in evts if e["type"] == kind]


def transcript_path(result: CliResult) -> Path:
    for line in result.output.splitlines():
        if line.startswith("transcript: "):
            return Path(line.split(": ", 1)[1].strip())
    raise AssertionError(f"no transcript path printed:\n{result.output}")


def assert_path_follows_what_was_seen(method: str) -> None:
    """A step's `method:` line on the server's own host beside another client: the path its figures call for
    (shown rounded, so a figure at the threshold allows either side)."""
    seen = re.search(r"same host(?P<unconfirmed> \(not confirmed[^)]*\))?, round trip (?P<rtt>\d+\.\d+) ms", method)
    assert seen, method
    rtt = float(seen["rtt"])
    # the server named our own socket: direct whatever the round trip; else the round trip decides
    direct = not seen["unconfirmed"] or rtt <= pacing.FAST_RTT_S * 1000
    idle = float(re.search(r", (\d+\.\d) of \d+ cores idle: ", method).group(1))  # type: ignore[union-attr]
    if method.startswith("method: small pages (same host"):
        assert direct and idle >= pacing.SMALL_PAGES_CORES, method
        assert "own host beside other clients" in method and " round trips: " in method, method
    elif "round trips are dear" in method:
        assert method.startswith("method: server-side (scripts allowed;") and seen["unconfirmed"], method
        assert rtt >= pacing.FAST_RTT_S * 1000, method
    else:
        assert method.startswith("method: server-side (scripts allowed; same host"), method
        assert "no core to spare" in method and idle <= pacing.SMALL_PAGES_CORES, method
