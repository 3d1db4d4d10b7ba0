"""Run the real `runbook` CLI in a subprocess (no terminal unless a test uses a pty) and read what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
