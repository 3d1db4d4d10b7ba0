"""A sandbox whose owner was SIGKILLed is cleaned up by the next start; a live owner's never is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from engine.sandbox import RedisServer
from engine.sandbox.reaper import mark_owner, reap_orphans
from engine.sandbox.redis_server import pid_alive
from tests.conftest import require_binary

OWNER = """
import sys, time
from engine.sandbox import RedisServer, SshHost
server = RedisServer.start() if sys.argv[1] == "redis" else SshHost.start()
print(server.pid, server.directory, flush=True)
time.sleep(3600)
"""


def _start_and_kill_owner(tmp: Path, what: str = "redis") -> tuple[int, Path]:
    """A process that starts a sandbox server in `tmp`, then dies by SIGKILL (no clean-up ran)."""
    env = {**os.environ, "TMPDIR": str(tmp)}
    owner = subprocess.Popen([sys.executable, "-c", OWNER, what], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert owner.stdout is not None
        pid_text, directory = owner.stdout.readline().split()
    finally:
        owner.kill()
        owner.wait()
    return int(pid_text), Path(directory)


def _gone(pid: int) -> bool:
    for _ in range(400):  # SIGKILL is delivered at once; the wait only covers a loaded machine's scheduling
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_killed_owners_redis_server_is_reaped_and_a_live_owners_is_not(
    tmp_path: Path, redis_server: Callable[..., RedisServer]
):
    orphan, directory = _start_and_kill_owner(tmp_path)
    try:
        assert pid_alive(orphan), "the server outlived its SIGKILLed owner (what the reaper is for)"
        mine = redis_server(directory=tmp_path / "runbook-redis-mine")
        mark_owner(mine.directory)  # its owner, this test, is alive

        assert reap_orphans(tmp_path) == [orphan]

        assert _gone(orphan) and not directory.exists()
        assert mine.running and mine.directory.exists()
        assert reap_orphans(tmp_path) == []  # nothing left to reap; the live one still untouched
        assert mine.running
    finally:
        if pid_alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_a_killed_owners_sshd_is_reaped(tmp_path: Path):
    require_binary("sshd")
    orphan, directory = _start_and_kill_owner(tmp_path, "sshd")
    try:
        assert pid_alive(orphan)
        assert reap_orphans(tmp_path) == [orphan]
        assert _gone(orphan) and not directory.exists()
    finally:
        if pid_alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_a_directory_without_an_owner_file_or_with_a_reused_pid_is_judged_right(tmp_path: Path):
    unowned = tmp_path / "runbook-redis-unowned"
    unowned.mkdir()
    (unowned / "redis.pid").write_text(str(os.getpid()))  # our own pid: must never be killed
    reused = tmp_path / "runbook-redis-reused"
    reused.mkdir()
    (reused / "runbook.owner").write_text(f"{os.getpid()} 1\n")  # our pid, another start time: a dead owner
    (reused / "redis.pid").write_text(str(os.getpid()))  # names us, but we do not run in that directory

    assert reap_orphans(tmp_path) == []

    assert unowned.exists() and not reused.exists()
