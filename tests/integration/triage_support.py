"""`runbook serve` as a real subprocess on a free port (it prints where it listens), for the triage tests."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TOKEN = "t0ken-for-the-triage-tests-0123456789"


@contextmanager
def serve(tmp: Path, inventory: Path, *extra: str) -> Iterator[tuple[str, int, subprocess.Popen[str]]]:
    token_file = tmp / "serve.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_SERVE")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "serve",
            "--inventory",
            str(inventory),
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            str(token_file),
            "--transcripts-dir",
            str(tmp / "transcripts"),
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the server says where it listens once it does (EOF if it died)
        found = re.search(r"http://([\d.]+):(\d+)/", line)
        assert found, f"runbook serve did not start: {line}{proc.stderr.read() if proc.poll() is not None else ''}"
        yield found[1], int(found[2]), proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def post(
    host: str,
    port: int,
    body: bytes,
    *,
    token: str | None = TOKEN,
    path: str = "/alertmanager",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        conn.request("POST", path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}
    finally:
        conn.close()


def wait_for(path: Path, proc: subprocess.Popen[str], deadline_s: float = 300) -> Path:
    """Poll until `path` exists; the deadline is only a safety net (a dead server fails at once)."""
    import time

    deadline = time.monotonic() + deadline_s
    while not path.exists():
        assert proc.poll() is None, f"runbook serve exited {proc.returncode}"
        assert time.monotonic() < deadline, f"{path} not written within {deadline_s}s"
        time.sleep(0.1)
    return path


def get(host: str, port: int, path: str = "/healthz") -> int:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def notification(group_key: str, labels: dict[str, str], status: str = "firing") -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": group_key,
            "status": status,
            "receiver": "runbook",
            "alerts": [{"status": status, "labels": labels, "startsAt": "2026-11-29T01:02:03.123456789Z"}],
        }
    ).encode()
