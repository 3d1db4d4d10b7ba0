"""`runbook continue` on real redis-server processes through the CLI: inside a call and a foreach, and in flight.

Every condition a test waits on is held by the test: the run sits at an approval prompt (a pty) until the
test answers, or its command sits at the server behind the test's own `CLIENT PAUSE ... WRITE`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from engine.transcript.verify import verify_transcript
from tests.integration.cli_support import REPO, events, of_type, runbook

pexpect = pytest.importorskip("pexpect")

HEADER = "title: T\nsection: test\ndescription: test procedure\nrequires: [redis]\n"
OUTER = """\
id: test/outer
steps:
  - id: prep
    name: Read the prefix
    redis: {command: [GET, prep]}
    register: prep
  - id: nested
    name: Count the keys
    call: {procedure: test/counter, params: {prefix: "{{ prep }}"}}
    register: counter
  - id: after
    name: Mark it done
    redis: {command: [SET, done, "{{ counter.look }}"]}
    confirm: Mark it?
"""
COUNTER = """\
id: test/counter
params:
  prefix: {type: string}
steps:
  - id: look
    name: Read a marker
    redis: {command: [GET, look]}
    register: look
  - id: each
    name: Count one key
    redis: {command: [INCR, "{{ prefix }}:{{ item }}"]}
    foreach: '["a", "b", "c", "d"]'
    confirm: Count {{ item }}?
"""
INFLIGHT = """\
id: test/inflight
steps:
  - id: before
    name: Read a value
    redis: {command: [GET, before]}
    register: before
  - id: wipe
    name: Delete the cache keys
    redis: {command: [DEL, cache:a, cache:b]}
    confirm: Delete them?
  - id: mark
    name: Count the run
    redis: {command: [INCR, marks]}
    confirm: Count it?
"""


def _procs(tmp_path: Path) -> Path:
    directory = tmp_path / "procs"
    directory.mkdir(exist_ok=True)
    for text in (OUTER, COUNTER, INFLIGHT):
        name = text.split("\n", 1)[0].split("/")[1]
        (directory / f"{name}.yaml").write_text(text.replace("\n", "\n" + HEADER, 1))
    return directory


def _spawn(args: list[str]):
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    env["PYTHONPATH"] = str(REPO)
    return pexpect.spawn(
        sys.executable, ["-m", "engine.cli", *args], cwd=str(REPO), env=env, encoding="utf-8", timeout=60
    )


def _verified(path: Path) -> None:
    report = verify_transcript(path)
    assert report.ok, report.render()


def _item(event: dict) -> tuple:
    step = event["step"]
    return (step["id"], step.get("iteration"), step["call_depth"])


def test_continue_reruns_nothing_done_inside_a_call_and_its_foreach(tmp_path, redis_server):
    server = redis_server()
    client = server.client()
    client.mset({"prep": "c", "look": "v1"})
    url = f"redis://127.0.0.1:{server.port}/0"
    procs = _procs(tmp_path)
    tdir = tmp_path / "t"
    child = _spawn(["run", "test/outer", "--redis", url, "--procedures", str(procs), "--transcripts-dir", str(tdir)])
    for answer in ("y", "y", "n"):  # items a and b counted; c refused, inside the called procedure
        child.expect(r"Proceed\? \[y/N\]")
        child.sendline(answer)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3
    assert [client.get(f"c:{k}") for k in "abcd"] == ["1", "1", None, None]
    (first_path,) = list(tdir.rglob("*.jsonl"))
    first = events(first_path)
    run_id = first[0]["run_id"]
    (inner,) = [e for e in of_type(first, "step.finished") if _item(e) == ("each", 0, 1)]
    assert inner["step"]["call_path"] == [{"procedure": "test/outer", "step": "nested", "iteration": None}]
    client.set("look", "v2")  # a read done inside the call is not read again: its value comes from the transcript

    resumed = runbook("continue", run_id, "--transcripts-dir", str(tdir), "--procedures", str(procs), "--yes")
    assert resumed.code == 0, resumed.output
    assert "done, not run again: prep, nested > look, nested > each[0], nested > each[1]" in resumed.stdout
    # every counter exactly once; the callee's registered value came back from the first run
    assert [client.get(f"c:{k}") for k in "abcd"] == ["1", "1", "1", "1"]
    assert client.get("done") == "v1"
    (new_path,) = [p for p in tdir.rglob("*.jsonl") if p != first_path and "leases" not in p.parts]
    again = events(new_path)
    assert again[0]["resumes"] == run_id
    assert [_item(e) for e in of_type(again, "step.resumed")] == [
        ("prep", None, 0),
        ("look", None, 1),
        ("each", 0, 1),
        ("each", 1, 1),
    ]
    started = [_item(e) for e in of_type(again, "step.started")]
    assert started == [("nested", None, 0), ("each", 2, 1), ("each", 3, 1), ("after", None, 0)]
    _verified(first_path)
    _verified(new_path)


def _pending(client, command: str) -> list[str]:
    """The server's clients whose `command` waits (flag b): sent, not answered."""
    lines = client.execute_command("CLIENT", "LIST")
    lines = lines.decode() if isinstance(lines, bytes) else lines
    return [line for line in lines.splitlines() if f" cmd={command} " in f" {line} " and "flags=b" in line]


def _until(predicate, why: str) -> None:
    """Poll for a state the test itself holds (the pause); the bound only turns a bug into a failure."""
    deadline = time.monotonic() + 60
    while not predicate():
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def test_kill_9_with_the_destructive_command_in_flight_then_continue_asks_again(tmp_path, redis_server):
    server = redis_server()
    client = server.client()
    client.mset({"before": "v1", "cache:a": "1", "cache:b": "2"})
    url = f"redis://127.0.0.1:{server.port}/0"
    procs = _procs(tmp_path)
    tdir = tmp_path / "t"
    args = ["run", "test/inflight", "--redis", url, "--procedures", str(procs), "--transcripts-dir", str(tdir)]
    pauser = server.client()
    child = _spawn(args)
    try:
        child.expect("Type the target name")  # the lease is taken before this question: no write of ours is left
        pauser.execute_command("CLIENT", "PAUSE", "600000", "WRITE")
        child.sendline(f"127.0.0.1:{server.port}")
        # the DEL reached the server and waits behind the pause: sent, not answered
        _until(lambda: _pending(pauser, "del"), "the runbook's DEL never reached the paused server")
        assert child.isalive()
        os.kill(child.pid, signal.SIGKILL)
        child.expect(pexpect.EOF)
        child.close()
        _until(lambda: not _pending(pauser, "del"), "the server never noticed the killed client")
    finally:
        pauser.execute_command("CLIENT", "UNPAUSE")
        if child.isalive():
            child.kill(signal.SIGKILL)
    (transcript,) = list(tdir.rglob("*.jsonl"))
    old = events(transcript)
    run_id = old[0]["run_id"]
    wipe = [e["type"] for e in old if e.get("step", {}).get("id") == "wipe"]
    assert wipe == ["step.started", "approval.requested", "approval.given"]  # approved, sent, never finished
    # whichever way the paused DEL went (a killed client's postponed command is dropped by Redis 7), the
    # continued run measures what is there now; someone also restores a key by hand meanwhile
    client.set("cache:b", "restored-by-hand")
    live = {key: bool(client.exists(key)) for key in ("cache:a", "cache:b")}
    assert live["cache:b"]

    resumed = _spawn(["continue", run_id, "--transcripts-dir", str(tdir), "--procedures", str(procs)])
    resumed.expect("IN DOUBT: step 'wipe'")
    resumed.expect("IN DOUBT: run")  # the gate says it again beside the blast radius it measured just now
    for key, exists in live.items():
        resumed.expect(f"{key}: string" if exists else f"{key}: does not exist")
    resumed.expect("Type the target name")
    resumed.sendline(f"127.0.0.1:{server.port}")
    resumed.expect(r"Proceed\? \[y/N\]")  # the next change, asked as usual
    resumed.sendline("y")
    resumed.expect("outcome: ok")
    resumed.expect(pexpect.EOF)
    resumed.close()
    assert resumed.exitstatus == 0
    assert client.exists("cache:a", "cache:b") == 0
    assert client.get("marks") == "1"  # the change after it ran exactly once
    (new_path,) = [p for p in tdir.rglob("*.jsonl") if p != transcript and "leases" not in p.parts]
    evts = events(new_path)
    assert evts[0]["resumes"] == run_id
    assert [e["step"]["id"] for e in of_type(evts, "step.resumed")] == ["before"]
    (asked,) = [e for e in of_type(evts, "approval.requested") if e["step"]["id"] == "wipe"]
    assert asked["in_doubt"]["run"] == run_id and asked["in_doubt"]["was_approved"] is True
    measured = {k["key"]: bool(k.get("exists")) for k in asked["blast_radius"]["keys"]}
    assert measured == live
    (stolen,) = of_type(evts, "lease.stolen")  # the killed run's lease, taken over by its continuation
    assert stolen["previous"]["run_id"] == run_id
    _verified(new_path)


def test_kill_9_in_flight_inside_a_call_and_its_foreach_then_continue_asks_about_that_item(tmp_path, redis_server):
    server = redis_server()
    client = server.client()
    client.mset({"prep": "c", "look": "v1"})
    url = f"redis://127.0.0.1:{server.port}/0"
    procs = _procs(tmp_path)
    tdir = tmp_path / "t"
    pauser = server.client()
    child = _spawn(["run", "test/outer", "--redis", url, "--procedures", str(procs), "--transcripts-dir", str(tdir)])
    try:
        for _ in range(2):  # items a and b counted
            child.expect(r"Proceed\? \[y/N\]")
            child.sendline("y")
        child.expect(r"Proceed\? \[y/N\]")  # item c: its INCR goes out behind the test's pause
        pauser.execute_command("CLIENT", "PAUSE", "600000", "WRITE")
        child.sendline("y")
        _until(lambda: _pending(pauser, "incr"), "the runbook's INCR never reached the paused server")
        os.kill(child.pid, signal.SIGKILL)
        child.expect(pexpect.EOF)
        child.close()
        _until(lambda: not _pending(pauser, "incr"), "the server never noticed the killed client")
    finally:
        pauser.execute_command("CLIENT", "UNPAUSE")
        if child.isalive():
            child.kill(signal.SIGKILL)
    (transcript,) = list(tdir.rglob("*.jsonl"))
    run_id = events(transcript)[0]["run_id"]
    went = client.get("c:c")  # whichever way the paused INCR went: None (dropped with its client) or "1"
    assert went in (None, "1")

    resumed = _spawn(["continue", run_id, "--transcripts-dir", str(tdir), "--procedures", str(procs)])
    resumed.expect(r"IN DOUBT: step 'nested > each\[2\]'")
    resumed.expect("IN DOUBT: run")
    resumed.expect("c:c: string" if went else "c:c: does not exist")  # what is there now
    resumed.expect(r"Proceed\? \[y/N\]")
    resumed.sendline("y")  # the operator saw it and sends it again
    for _ in range(2):  # item d, then the step after the call, asked as usual
        resumed.expect(r"Proceed\? \[y/N\]")
        resumed.sendline("y")
    resumed.expect("outcome: ok")
    resumed.expect(pexpect.EOF)
    resumed.close()
    assert resumed.exitstatus == 0
    assert [client.get(f"c:{k}") for k in "abd"] == ["1", "1", "1"]  # done once, never again
    assert client.get("c:c") == str(int(went or 0) + 1)  # in doubt: sent again only because the operator said so
    (new_path,) = [p for p in tdir.rglob("*.jsonl") if p != transcript and "leases" not in p.parts]
    evts = events(new_path)
    asked = [e for e in of_type(evts, "approval.requested") if e.get("in_doubt")]
    assert [_item(e) for e in asked] == [("each", 2, 1)]
    assert asked[0]["in_doubt"]["run"] == run_id and asked[0]["in_doubt"]["was_approved"] is True
    assert [_item(e) for e in of_type(evts, "step.resumed")] == [
        ("prep", None, 0),
        ("look", None, 1),
        ("each", 0, 1),
        ("each", 1, 1),
    ]
    _verified(new_path)
