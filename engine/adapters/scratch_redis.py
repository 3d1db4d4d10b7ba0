"""A throwaway redis-server on the operator's machine, to load an RDB file into and count its keys.

Production code (the `rdb: verify` step's test load), not the test sandbox: 127.0.0.1 on a free port
(never 6379), a temp directory holding only a link to the file, no persistence, no password, stopped
and removed on every way out. It touches nothing but its own temp directory, so it is a read.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine.adapters.local import find_program
from engine.spawn import signals_deferred

PORT_ATTEMPTS = 5


class _PortTaken(RuntimeError):
    pass


def load_and_count(path: Path, timeout: float) -> dict[str, Any]:
    """Load `path` into a throwaway redis-server and count its keys -> {ok, error, keys, keyspace, ...}."""
    binary = find_program("redis-server")
    if binary is None:
        return _failed("redis-server not found on PATH; apt-get install redis-server")
    workdir = Path(tempfile.mkdtemp(prefix="runbook-rdb-load-")).resolve()
    try:
        target = workdir / "dump.rdb"
        try:
            os.symlink(path.resolve(), target)  # no copy of a large file; the server only reads it
        except OSError:
            shutil.copyfile(path, target)
        for _ in range(PORT_ATTEMPTS):
            try:
                return _load(binary, workdir, timeout)
            except _PortTaken:
                continue
        return _failed(f"redis-server could not find a free port after {PORT_ATTEMPTS} attempts")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _failed(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error, "keys": None, "keyspace": {}}


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


def _load(binary: str, workdir: Path, timeout: float) -> dict[str, Any]:
    port = _free_port()
    log = workdir / "redis.log"
    config = workdir / "redis.conf"
    config.write_text(
        "\n".join(
            [
                f"port {port}",
                "bind 127.0.0.1",
                f'dir "{workdir}"',
                "daemonize no",
                f'logfile "{log}"',
                "dbfilename dump.rdb",
                "protected-mode yes",
                "appendonly no",
                'save ""',
            ]
        )
        + "\n"
    )
    proc: subprocess.Popen[bytes] | None = None
    client: redis.Redis | None = None
    try:
        # held (and stopped below) before a signal may raise: a Ctrl-C during the start orphans no server
        with open(log, "ab") as out, signals_deferred():
            proc = subprocess.Popen(
                [binary, str(config)],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = redis.Redis(
            host="127.0.0.1",
            port=port,
            decode_responses=True,
            socket_timeout=10,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        refused = _wait_ready(proc, client, log, timeout)
        if refused is not None:
            return _failed(refused)
        keyspace = client.info("keyspace")
        persistence = client.info("persistence")
    finally:
        if client is not None:
            client.close()
        if proc is not None:
            _stop(proc)
    counts = {db: v.get("keys", 0) for db, v in keyspace.items() if isinstance(v, dict)}
    return {
        "ok": True,
        "error": None,
        "keys": sum(counts.values()),
        "keyspace": counts,
        "keys_loaded": persistence.get("rdb_last_load_keys_loaded"),
        "keys_expired_on_load": persistence.get("rdb_last_load_keys_expired"),
    }


def _wait_ready(proc: subprocess.Popen[bytes], client: redis.Redis, log: Path, timeout: float) -> str | None:
    """None once the server answers PING with the file loaded; else why it will not (from its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _tail(log)
            if "Address already in use" in tail:
                raise _PortTaken(tail)
            # the server refused the file: its log's warnings (lines "pid:M date # text") say why
            warnings = [ln.split(" # ", 1)[1] for ln in tail.splitlines() if " # " in ln]
            reason = "; ".join(warnings[-2:]) if warnings else f"redis-server exited with {proc.returncode}"
            return reason[:400]
        try:
            if client.ping():
                return None
        except (redis.BusyLoadingError, redis.ConnectionError, redis.TimeoutError):
            pass  # still starting, or still loading the file
        time.sleep(0.05)
    return f"redis-server did not load the file within {timeout:.0f}s"


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (no save is configured), then SIGKILL if it lingers; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
