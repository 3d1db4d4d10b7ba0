"""One operator per target: the lease a changing run holds, on real redis-server processes and real runs.

The first run is held at its approval prompt (a pty the test answers) while the second one tries: the
condition under test is held by the test, never by a timer.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from engine.run.lease import KEY
from engine.transcript.verify import verify_transcript
from tests.integration.cli_support import REPO, events, of_type, runbook, transcript_path

HEADER = "title: T\nsection: test\ndescription: test procedure\nrequires: [redis]\n"
TWO_WRITES = """\
steps:
  - id: first
    name: First write
    redis: {command: [SET, first, "1"]}
    confirm: Set first?
  - id: second
    name: Second write
    redis: {command: [SET, second, "2"]}
    confirm: Set second?
"""
LOCAL_WRITE = """\
steps:
  - id: write
    name: Write a marker file
    local:
      write: {path: "{{ where }}", content: "x"}
    confirm: Write it?
params:
  where: {type: string, required: true}
"""


@pytest.fixture
def server(redis_server):
    return redis_server()


def _procedures(tmp_path):
    directory = tmp_path / "procs"
    directory.mkdir(exist_ok=True)
    (directory / "two.yaml").write_text(f"id: test/two\n{HEADER}{TWO_WRITES}")
    (directory / "local.yaml").write_text(f"id: test/local\n{HEADER}{LOCAL_WRITE}")
    return directory


def _args(url, tmp_path, procedure="test/two", *extra):
    return [
        "run",
        procedure,
        "--redis",
        url,
        "--procedures",
        str(_procedures(tmp_path)),
        "--transcripts-dir",
        str(tmp_path / "t"),
        *extra,
    ]


def _held_at_prompt(url, tmp_path, *extra, procedure="test/two", operator="alice"):
    """A run by `operator` waiting at its first approval prompt (it holds the lease by then)."""
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "engine.cli", *_args(url, tmp_path, procedure, "--operator", operator, "--incident", "INC-7", *extra)],
        cwd=str(REPO),
        encoding="utf-8",
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"},
    )
    child.expect(r"\[y/N\]")
    return child


def lease_of(server):
    """The lease lives in the highest-numbered database (15 here), away from the data the procedures count."""
    return server.client(db=15).get(KEY)


def _url(server):
    return f"redis://127.0.0.1:{server.port}/0"


def test_a_second_run_with_changes_is_refused_with_the_holders_name(server, tmp_path):
    first = _held_at_prompt(_url(server), tmp_path)
    try:
        lease = json.loads(lease_of(server))
        assert lease["operator"] == "alice" and lease["procedure"] == "test/two"
        assert server.client().dbsize() == 0  # nothing of ours in the data's database
        second = runbook(*_args(_url(server), tmp_path, "test/two", "--yes", "--operator", "bob"))
        assert second.code == 3, second.output
        assert "leased by alice" in second.output and "INC-7" in second.output and "test/two" in second.output
        assert server.client().get("first") is None  # bob changed nothing
        refused = of_type(events(transcript_path(second)), "lease.refused")
        assert refused and refused[0]["holder"]["operator"] == "alice" and "token" not in refused[0]["holder"]
        # a dry-run and a read need no lease: they still run while alice holds it
        rehearsal = runbook(*_args(_url(server), tmp_path, "test/two", "--dry-run"))
        assert rehearsal.code == 0, rehearsal.output
    finally:
        first.sendline("y")
        first.expect(r"\[y/N\]")
        first.sendline("y")
        first.expect(__import__("pexpect").EOF)
        first.close()
    assert first.exitstatus == 0
    assert lease_of(server) is None  # released at the end
    path = next(p for p in (tmp_path / "t").glob("**/*.jsonl") if events(p)[0]["operator"] == "alice")
    kinds = [e["type"] for e in events(path)]
    assert kinds.index("lease.acquired") < kinds.index("approval.given") and "lease.released" in kinds
    assert verify_transcript(path).ok


def test_steal_lease_takes_over_and_both_transcripts_say_so(server, tmp_path):
    first = _held_at_prompt(_url(server), tmp_path)
    try:
        thief = runbook(
            *_args(_url(server), tmp_path, "test/two", "--yes", "--operator", "bob", "--steal-lease", "alice is away")
        )
        assert thief.code == 0, thief.output
        stolen = of_type(events(transcript_path(thief)), "lease.stolen")
        assert stolen[0]["reason"] == "alice is away" and stolen[0]["previous"]["operator"] == "alice"
        first.sendline("y")  # alice approves her first step, then her run finds the lease gone at the next one
        pexpect = pytest.importorskip("pexpect")
        first.expect(pexpect.EOF)
    finally:
        first.close(force=True)
    assert first.exitstatus == 3
    path = next(p for p in (tmp_path / "t").glob("**/*.jsonl") if events(p)[0]["operator"] == "alice")
    evts = events(path)
    assert of_type(evts, "lease.lost")
    assert of_type(evts, "approval.refused")[-1]["method"] == "lease"


def test_the_lease_of_a_killed_run_expires(server, tmp_path):
    first = _held_at_prompt(_url(server), tmp_path, "--lease-ttl", "1")
    os.kill(first.pid, signal.SIGKILL)
    first.close(force=True)
    assert lease_of(server) is not None  # left behind by the killed run ...
    deadline = time.monotonic() + 60  # ... until its TTL runs out (a safety net, not a timing assertion)
    while lease_of(server) is not None:
        assert time.monotonic() < deadline, "the lease of a killed run never expired"
        time.sleep(0.1)
    second = runbook(*_args(_url(server), tmp_path, "test/two", "--yes", "--operator", "bob"))
    assert second.code == 0, second.output
    assert server.client().get("second") == "2"


def test_with_redis_down_the_lease_is_a_file_in_the_shared_transcripts_dir(redis_server, tmp_path):
    server = redis_server()
    url = _url(server)
    server.stop()
    marker = tmp_path / "marker"
    first = _held_at_prompt(url, tmp_path, "--var", f"where={marker}", procedure="test/local")
    try:
        leases = list((tmp_path / "t" / "leases").glob("*.json"))
        assert len(leases) == 1 and json.loads(leases[0].read_text())["operator"] == "alice"
        second = runbook(
            *_args(url, tmp_path, "test/local", "--yes", "--operator", "bob", "--var", f"where={tmp_path / 'other'}")
        )
        assert second.code == 3, second.output
        assert "leased by alice" in second.output and "leases" in second.output
        assert not (tmp_path / "other").exists()
    finally:
        first.sendline("y")
        first.expect(__import__("pexpect").EOF)
        first.close()
    assert first.exitstatus == 0 and marker.exists()
    assert not list((tmp_path / "t" / "leases").glob("*.json"))  # released


def test_a_lease_evicted_under_memory_pressure_is_taken_back_not_lost(server, tmp_path):
    """allkeys-lru may evict the lease key; nobody else took it, so the holder simply takes it again."""
    first = _held_at_prompt(_url(server), tmp_path)
    pexpect = pytest.importorskip("pexpect")
    try:
        assert server.client(db=15).delete(KEY) == 1  # what an eviction does
        first.sendline("y")
        first.expect(r"\[y/N\]")  # the second change is asked: the lease is still ours
        assert json.loads(lease_of(server))["operator"] == "alice"
        first.sendline("y")
        first.expect(pexpect.EOF)
    finally:
        first.close(force=True)
    assert first.exitstatus == 0
    path = next((tmp_path / "t").glob("**/*.jsonl"))
    assert not of_type(events(path), "lease.lost")


def test_the_lease_connection_names_itself(server):
    """The lease's own connection says what it is (CLIENT SETNAME), so a kill of the default user's
    sessions never counts it as one of them."""
    from engine.adapters.redis import LEASE_CLIENT_NAME
    from engine.run.lease_redis import LeaseRedis
    from engine.targets import RedisEndpoint

    call = LeaseRedis(RedisEndpoint(host="127.0.0.1", port=server.port))
    info = call(["CLIENT", "INFO"])
    assert f"name={LEASE_CLIENT_NAME} " in info


@pytest.mark.parametrize("value", ["[" * 100_000, "[1, 2]", "7", "not json"], ids=["deep", "list", "number", "text"])
def test_a_damaged_lease_refuses_the_run_with_a_clear_holder_not_a_traceback(server, tmp_path, value):
    """Anyone who can write the target can write its lease key: 100,000 '[' made the parser raise
    RecursionError, and JSON that is not an object AttributeError. Each reads as an unreadable lease,
    held by nobody named, and the run is refused."""
    server.client(db=15).set(KEY, value, px=60_000)
    refused = runbook(*_args(_url(server), tmp_path, "test/two", "--yes", "--operator", "bob"))
    assert refused.code == 3, refused.output
    assert "Traceback" not in refused.output and "unreadable lease" in refused.output
    assert server.client().get("first") is None
