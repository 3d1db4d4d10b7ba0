"""A transcript disk that is full, or too full to record a change: a real small tmpfs, a real ENOSPC.

The run must say so clearly, exit 4, print its --json object, leave no empty transcript behind, and
never change anything it could not record.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.sandbox.seed import seed_somabrain
from engine.transcript.reader import read_transcript
from engine.transcript.verify import verify_transcript
from engine.transcript.writer import MIN_FREE_BEFORE_CHANGE, free_bytes
from tests.integration.cli_support import REPO, events, of_type, runbook

KEY = "tenant:acme:wm:active"


@pytest.fixture
def seeded(redis_server):
    server = redis_server()
    seed_somabrain(server.client())
    return server


@pytest.fixture
def small_disk(tmp_path):
    """Mount a tmpfs of the size asked for; unmounted at teardown."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            if os.environ.get("CI"):
                pytest.fail(f"mount -t tmpfs failed in CI: {proc.stderr.strip()}")
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> None:
    """Write until the filesystem says ENOSPC: full to the brim."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 16, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    assert free_bytes(directory) == 0


def wm_clear(server, transcripts: Path, *extra: str):
    return runbook(
        "run",
        "redis/wm-clear",
        "--redis",
        f"redis://127.0.0.1:{server.port}/0",
        "--var",
        "tenant=acme",
        "--transcripts-dir",
        str(transcripts),
        "--json",
        *extra,
    )


def test_full_disk_before_start_exits_4_with_json_and_no_empty_transcript(seeded, small_disk):
    disk = small_disk("64k")
    fill(disk)
    result = wm_clear(seeded, disk / "transcripts", "--yes")
    assert result.code == 4, result.output
    assert "Traceback" not in result.output
    data = result.json()
    assert data["exit_code"] == 4 and data["outcome"] == "error" and data["transcript"] is None
    assert "No space left on device" in data["error"] and "could not be written" in data["error"]
    assert "runbook: transcript" in result.stderr and "No space left on device" in result.stderr
    assert not list(disk.rglob("*.jsonl"))  # no empty transcript left behind
    assert seeded.client().exists(KEY) == 1


def test_too_little_space_refuses_the_change_before_the_gate(seeded, small_disk):
    disk = small_disk("1m")  # the reads fit; a change could not be recorded with confidence
    assert free_bytes(disk) < MIN_FREE_BEFORE_CHANGE
    result = wm_clear(seeded, disk, "--yes")
    assert result.code == 4, result.output
    assert "Traceback" not in result.output
    data = result.json()
    assert data["outcome"] == "error" and data["exit_code"] == 4
    assert "bytes free" in data["error"] and "nothing was changed" in data["error"]
    assert seeded.client().exists(KEY) == 1
    path = Path(data["transcript"])
    evts = events(path)
    assert not of_type(evts, "approval.requested") and not of_type(evts, "approval.given")
    assert evts[-1]["type"] == "run.ended" and evts[-1]["exit_code"] == 4
    assert verify_transcript(path).ok


def test_too_little_space_does_not_stop_a_dry_run(seeded, small_disk):
    """A dry-run records no change, so it needs no room for one."""
    disk = small_disk("1m")
    result = wm_clear(seeded, disk, "--dry-run")
    assert result.code == 0, result.output
    assert verify_transcript(result.json()["transcript"]).ok


FILLS = """\
id: test/fills-the-disk
title: A change, a big read, another change
section: test
description: the disk fills while the first gate waits
requires: [redis]
steps:
  - id: mark
    name: Mark the start
    redis: {command: [SET, "scratch:mark", "1"]}
    effect: write
    confirm: Mark?
  - id: big
    name: Read a big value
    redis: {command: [GET, "scratch:big"]}
  - id: delete
    name: Delete the working memory
    redis: {command: [UNLINK, "tenant:acme:wm:active"]}
    effect: destructive
    confirm: Delete?
"""


def test_disk_filling_mid_run_stops_before_the_next_change(seeded, small_disk, tmp_path):
    """Room enough when the first gate asks; full by the time it is answered. A real ENOSPC (the big
    read's output cannot fit in any slack) ends the run with exit 4, and the later change never runs."""
    pexpect = pytest.importorskip("pexpect")
    seeded.client().set("scratch:big", "x" * 200_000)
    procedure = tmp_path / "fills.yaml"
    procedure.write_text(FILLS)
    disk = small_disk(f"{MIN_FREE_BEFORE_CHANGE // 1024 + 1024}k")
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "engine.cli",
            "run",
            str(procedure),
            "--redis",
            f"redis://127.0.0.1:{seeded.port}/0",
            "--transcripts-dir",
            str(disk),
            "--json",
        ],
        cwd=str(REPO),
        encoding="utf-8",
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"},
    )
    child.expect(r"Proceed\?")  # the run waits here until the test answers
    fill(disk)
    child.sendline("y")
    child.expect(pexpect.EOF)
    child.close()
    output = child.before
    assert child.exitstatus == 4, output
    assert "Traceback" not in output
    data = json.loads(output.strip().splitlines()[-1])
    assert data["exit_code"] == 4 and data["outcome"] == "error"
    assert "No space left on device" in data["error"]
    assert "No space left on device" in output.split("outcome:", 1)[1]  # said on the terminal too
    assert seeded.client().exists(KEY) == 1  # the change after the failed write never ran
    path = next(disk.rglob("*.jsonl"))
    evts = read_transcript(path).events  # the last line may be half-written: the reader sets it aside
    assert not [e for e in evts if e.get("step", {}).get("id") == "delete"]
    assert verify_transcript(path).ok  # cut off, not tampered: a warning, as after a crash


def test_a_note_on_a_full_disk_exits_4_without_traceback(small_disk):
    disk = small_disk("64k")
    first = runbook("note", "alert fired", "--incident", "INC-3", "--transcripts-dir", str(disk))
    assert first.code == 0, first.output
    fill(disk)
    result = runbook("note", "x" * 20_000, "--incident", "INC-3", "--transcripts-dir", str(disk))
    assert result.code == 4, result.output
    assert "Traceback" not in result.output and "No space left on device" in result.stderr
