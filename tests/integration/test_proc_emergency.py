"""The emergency procedures end to end against real servers: Memory Emergency (OOM) and Security Breach.

OOM: a redis-server with maxmemory 1mb (4mb where a flush must be needed) and noeviction, filled until
writes fail with "OOM command not allowed"; the procedure runs approved, in a dry-run, refused without a
terminal, and refused at the FLUSHDB gate on a terminal. Security breach: a password-protected server
whose password is in an inventory password_file, an intruder's session open with the old password and a
MONITOR watching; the new password must never appear on the terminal, in the transcript or in --json.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.sandbox.redis_server import RedisServer
from engine.sandbox.sshd import install_redis_service, inventory_for, write_inventory
from engine.steps.local_step import parse_redis_conf
from engine.transcript.verify import verify_transcript
from tests.integration.cli_support import REPO, CliResult, events, of_type, runbook, transcript_path

OOM = "redis/emergency-oom"
BREACH = "redis/emergency-security-breach"
OLD_PASSWORD = "old-Breached-Passw0rd-1234"


def finished(evts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["step"]["id"]: e for e in of_type(evts, "step.finished")}


# -- Memory Emergency (OOM) -------------------------------------------------------------------------------
def oom_server(redis_server: Any, limit: str = "1mb") -> RedisServer:
    """maxmemory `limit` + noeviction, filled with 1 KB values until Redis refuses writes."""
    server = redis_server(config={"maxmemory": limit, "maxmemory-policy": "noeviction"})
    client = server.client()
    for start in range(0, 100_000, 200):  # pipelined pages of SETs, until one of them is refused
        pipe = client.pipeline(transaction=False)
        for i in range(start, start + 200):
            pipe.set(f"cache:{i}", "x" * 1000)
        if any(isinstance(r, redis.exceptions.OutOfMemoryError) for r in pipe.execute(raise_on_error=False)):
            return server
    raise AssertionError("maxmemory never refused a write")


def state(server: RedisServer) -> dict[str, Any]:
    client = server.client()
    config = client.config_get("maxmemory*")
    return {"maxmemory": config["maxmemory"], "policy": config["maxmemory-policy"], "keys": client.dbsize()}


def writes_refused(server: RedisServer) -> bool:
    try:
        server.client().set("after-the-run", "1", px=1000)
    except redis.exceptions.OutOfMemoryError:
        return True
    return False


def run_oom(server: RedisServer, tmp_path: Path, *args: str, **variables: Any) -> CliResult:
    argv = ["run", OOM, "--redis", server.url, "--transcripts-dir", str(tmp_path / "transcripts"), *args]
    for name, value in variables.items():
        argv += ["--var", f"{name}={value}"]
    return runbook(*argv)


def just_above(server: RedisServer) -> int:
    """A maxmemory the used memory is ~93% of (more with the run's own connection): a flush is still needed."""
    return int(server.client().info("memory")["used_memory"] * 1.08)


def test_oom_approved_raises_the_limit_sets_lru_and_keeps_every_key(redis_server, tmp_path):
    server = oom_server(redis_server)
    before = state(server)
    refused = server.client().info("errorstats")["errorstat_OOM"]["count"]  # the fill's refused SETs
    result = run_oom(server, tmp_path, "--yes", maxmemory="64mb")
    assert result.code == 0, result.output
    after = state(server)
    assert after == {"maxmemory": str(64 * 1024**2), "policy": "allkeys-lru", "keys": before["keys"]}
    assert not writes_refused(server)
    assert server.client().keys("runbook:oom-probe:*") == []  # the probe left nothing behind
    evts = events(transcript_path(result))
    steps = finished(evts)
    assert f"{refused} commands refused with OOM" in steps["refused-writes"]["summary"]
    # the run's lease could not be written into a full Redis: it was taken in the transcripts directory
    assert of_type(evts, "lease.acquired")[0]["where"].startswith("file ")
    assert steps["plan"]["result"]["over_limit"] is True
    assert steps["raise-maxmemory"]["changes"] == [
        {"kind": "config", "name": "maxmemory", "before": "1048576", "after": str(64 * 1024**2)}
    ]
    assert steps["eviction-policy"]["changes"][0]["before"] == "noeviction"
    assert not any(e["step"]["id"] == "flush" for e in of_type(evts, "step.finished"))  # skipped, not run
    assert "no flush needed" in steps["flush-needed"]["summary"]
    assert steps["probe-write"]["outcome"] == "ok" and steps["probe-delete"]["changes"][0]["count"] == 1
    assert [x["held"] for x in steps["verify"]["expectations"]] == [True, True]
    assert {e["by"] for e in of_type(evts, "approval.given")} == {"flag"}
    assert verify_transcript(transcript_path(result)).ok


def test_oom_approved_flushes_when_the_raise_is_not_enough(redis_server, tmp_path):
    server = oom_server(redis_server, "4mb")
    keys = server.client().dbsize()
    limit = just_above(server)
    result = run_oom(server, tmp_path, "--yes", maxmemory=limit)
    assert result.code == 0, result.output
    assert state(server) == {"maxmemory": str(limit), "policy": "allkeys-lru", "keys": 0}
    assert not writes_refused(server)
    evts = events(transcript_path(result))
    steps = finished(evts)
    flush = steps["flush"]
    assert flush["effect"] == "destructive" and flush["blast_radius"]["keys"] == keys
    assert flush["blast_radius"]["used_memory"] > 4 * 1024**2 * 0.9
    assert flush["changes"] == [{"kind": "keys_removed", "count": keys, "keys": [], "scope": "FLUSHDB"}]
    asked = next(e for e in of_type(evts, "approval.requested") if e["step"]["id"] == "flush")
    assert asked["command"] == "FLUSHDB ASYNC"
    assert f"deletes ALL {keys} keys" in asked["confirm"] and "frees about" in asked["confirm"]
    final = steps["verify"]
    assert [x["held"] for x in final["expectations"]] == [True, True]
    assert final["result"]["used_memory"] < limit * 0.9


def test_oom_dry_run_changes_nothing_and_predicts_the_flush(redis_server, tmp_path):
    server = oom_server(redis_server, "4mb")
    before = state(server)
    result = run_oom(server, tmp_path, "--dry-run", maxmemory=just_above(server))
    assert result.code == 0, result.output
    assert state(server) == before
    assert writes_refused(server)  # still in the emergency: nothing was sent
    evts = events(transcript_path(result))
    assert evts[0]["mode"] == "dry-run"
    steps = finished(evts)
    for step in ("raise-maxmemory", "eviction-policy", "flush", "probe-write", "probe-delete"):
        assert steps[step]["outcome"] == "predicted", step
    assert steps["flush"]["blast_radius"]["keys"] == before["keys"]
    assert steps["flush"]["predicted_changes"][0] == {
        "kind": "keys_removed",
        "count": before["keys"],
        "keys": [],
        "scope": "FLUSHDB",
    }
    assert steps["raise-maxmemory"]["predicted_changes"][0]["before"] == before["maxmemory"]
    assert [x["held"] for x in steps["verify"]["expectations"]] == [None, None]
    assert not of_type(evts, "approval.requested")


def test_oom_refused_without_a_terminal_changes_nothing(redis_server, tmp_path):
    server = oom_server(redis_server)
    before = state(server)
    result = run_oom(server, tmp_path)
    assert result.code == 3, result.output
    assert state(server) == before and writes_refused(server)
    evts = events(transcript_path(result))
    refused = of_type(evts, "approval.refused")
    assert [e["step"]["id"] for e in refused] == ["raise-maxmemory"] and "no terminal" in refused[0]["reason"]
    assert evts[-1]["outcome"] == "refused"
    assert not [e for e in of_type(evts, "step.finished") if e.get("changes")]


def test_oom_flush_refused_at_the_gate_keeps_every_key(redis_server, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    server = oom_server(redis_server, "4mb")
    limit = just_above(server)
    argv = ["run", OOM, "--redis", server.url, "--var", f"maxmemory={limit}", "--operator", "carol"]
    child = pexpect.spawn(
        sys.executable,
        ["-m", "engine.cli", *argv, "--transcripts-dir", str(tmp_path / "transcripts")],
        cwd=str(REPO),
        encoding="utf-8",
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"},
    )
    for _ in range(2):  # the raise and the policy: y/N questions
        child.expect(r"Proceed\? \[y/N\]")
        child.sendline("y")
    child.expect("Type the target name")
    panel = child.before
    child.sendline("not-this-one")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3, panel + child.before
    # what the operator saw before typing: the keys and the memory, measured now, and why
    keys = server.client().dbsize()  # every key is still there (allkeys-lru evicts only above the limit)
    assert "[DESTRUCTIVE]" in panel and "FLUSHDB ASYNC" in panel
    assert f"keys affected: {keys} (" in panel and "in use)" in panel
    assert f"deletes ALL {keys} keys" in " ".join(panel.split())
    assert state(server) == {"maxmemory": str(limit), "policy": "allkeys-lru", "keys": keys}  # approved steps only
    evts = events(next((tmp_path / "transcripts").rglob("*.jsonl")))
    refused = of_type(evts, "approval.refused")
    assert refused[0]["step"]["id"] == "flush" and refused[0]["by"] == "carol"
    assert refused[0]["reason"] == "wrong target name typed"


def test_oom_flush_false_never_flushes_and_reports_memory_still_high(redis_server, tmp_path):
    server = oom_server(redis_server, "4mb")
    keys = server.client().dbsize()
    result = run_oom(server, tmp_path, "--yes", maxmemory=just_above(server), flush="false")
    assert result.code == 1, result.output
    steps = finished(events(transcript_path(result)))
    assert "flush=false: no FLUSHDB" in steps["flush-needed"]["summary"]
    assert "flush" not in steps
    evicted = steps["evictions-after"]["result"]["evicted_keys"] - steps["evictions"]["result"]["evicted_keys"]
    assert server.client().dbsize() == keys - evicted  # nothing flushed; allkeys-lru may have evicted a few
    # writes are accepted again (the raise and allkeys-lru), but memory stays above the alert threshold
    assert [x["held"] for x in steps["verify"]["expectations"]] == [True, False]
    assert "scale horizontally (runbook step 4)" in result.stdout


def test_oom_refuses_a_limit_larger_than_the_host(redis_server, tmp_path):
    server = oom_server(redis_server)
    before = state(server)
    result = run_oom(server, tmp_path, "--yes", maxmemory="100tb")
    assert result.code == 1, result.output
    assert "more than this" in result.stdout and "host's RAM" in result.stdout
    assert state(server) == before
    assert not of_type(events(transcript_path(result)), "approval.requested")


# -- Security Breach ---------------------------------------------------------------------------------------
class Intruder:
    """A session opened with the old password, and a MONITOR: what an attacker holding it would keep open."""

    def __init__(self, server: RedisServer):
        self.client = server.client(password=OLD_PASSWORD)
        self.client.ping()
        self.id = self.client.client_id()
        self.monitored: list[str] = []
        self._monitor = server.client(password=OLD_PASSWORD).monitor()
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        watcher = server.client(password=OLD_PASSWORD)
        deadline = time.monotonic() + 60  # a safety net: MONITOR is on once __enter__ has its OK
        while "flags=O" not in watcher.execute_command("CLIENT", "LIST"):
            assert time.monotonic() < deadline, "the intruder's MONITOR never showed"
            time.sleep(0.02)
        watcher.close()

    def _watch(self) -> None:
        try:
            for entry in self._monitor.listen():
                self.monitored.append(entry["command"])
        except (redis.RedisError, OSError, ValueError):
            pass  # cut off: the rotation killed it

    def stop(self) -> None:
        self._monitor.connection.disconnect()  # ends listen() if the rotation has not already
        self._thread.join(timeout=5)

    def alive(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False


@pytest.fixture
def breach(redis_server, tmp_path):
    server = redis_server(password=OLD_PASSWORD)
    server.client().set("tenant:acme:wm:active", "data")
    password_file = server.write_password_file()
    inventory = write_inventory(tmp_path / "inventory.yaml", inventory_for(server, None, None))
    intruder = Intruder(server)
    yield server, password_file, inventory, intruder
    intruder.stop()
    server.password = password_file.read_text().strip()  # whatever it is now, so the fixture can shut it down


def run_breach(inventory: Path, tmp_path: Path, *args: str) -> CliResult:
    return runbook(
        "run",
        BREACH,
        "--inventory",
        str(inventory),
        "--target",
        "sandbox",
        "--transcripts-dir",
        str(tmp_path / "transcripts"),
        "--json",
        *args,
    )


def accepted(server: RedisServer, password: str | None) -> bool:
    try:
        return bool(server.client(password=password).ping())
    except redis.AuthenticationError:
        return False


def nothing_leaked(result: CliResult, tmp_path: Path, *secrets: str) -> None:
    files = list((tmp_path / "transcripts").rglob("*.jsonl"))
    assert files
    places = {"stdout (--json)": result.stdout, "stderr": result.stderr}
    places.update({str(f): f.read_bytes().decode() for f in files})
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a password is in {where}"


def test_breach_approved_rotates_cuts_old_sessions_and_never_shows_the_password(redis_server, sshd_host, tmp_path):
    server = redis_server(password=OLD_PASSWORD)
    server.client().set("tenant:acme:wm:active", "data")
    host = sshd_host()
    service = install_redis_service(host, server)  # writes <dir>/redis.pass, the inventory's password_file
    password_file = server.directory / "redis.pass"
    inventory = write_inventory(tmp_path / "inventory.yaml", inventory_for(server, host, service))
    intruder = Intruder(server)
    try:
        result = run_breach(inventory, tmp_path, "--yes")
    finally:
        intruder.stop()
        server.password = password_file.read_text()  # whatever it is now, so the fixture can shut it down
    assert result.code == 0, result.output
    new = server.password

    # the file: the new password only, owner-only
    assert len(new) == 32 and new != OLD_PASSWORD
    assert password_file.stat().st_mode & 0o777 == 0o600
    # the server: old refused, new accepted, persisted in its config file
    assert not accepted(server, OLD_PASSWORD) and accepted(server, new)
    assert parse_redis_conf(server.config_path.read_text())["requirepass"] == new
    assert server.client().get("tenant:acme:wm:active") == "data"  # no data touched
    # the intruder's session is gone, and the MONITOR it held never saw the new password
    assert not intruder.alive()
    clients = server.client().execute_command("CLIENT", "LIST")
    assert f"id={intruder.id} " not in clients
    assert intruder.monitored, "the MONITOR saw nothing: it was not watching"
    assert not [c for c in intruder.monitored if new in c]
    # nowhere to be read: terminal, transcript, --json
    nothing_leaked(result, tmp_path, new, OLD_PASSWORD)

    data = result.json()
    steps = {s["id"]: s for s in data["steps"]}
    assert steps["generate"]["result"] == "[SECRET:new_password]"
    assert steps["old-refused"]["result"]["accepted"] is False
    assert steps["new-accepted"]["result"]["accepted"] is True
    assert steps["use-new"]["result"]["switched"] is True
    assert steps["credentials"]["outcome"] == "ok" and steps["incident-response"]["outcome"] == "ok"
    evts = events(transcript_path(result))
    done = finished(evts)
    assert intruder.id in done["sessions-before"]["result"]["ids"]  # the audit: who was connected
    assert done["acl-log"]["outcome"] == "ok"
    rotate = done["rotate"]
    assert rotate["blast_radius"]["sessions"]["count"] >= 2 and rotate["blast_radius"]["sessions"]["monitors"] == 1
    assert rotate["changes"][0] == {"kind": "password_rotated", "name": "requirepass"}
    assert rotate["result"]["sessions_killed"] >= 2
    assert [e["held"] for e in done["sessions-after"]["expectations"]] == [True]
    assert done["write-password-file"]["changes"] == [{"kind": "file", "path": str(password_file), "action": "written"}]
    assert done["rewrite"]["outcome"] == "ok"
    assert done["firewall"]["outcome"] == "ok" and "# iptables -S" in done["firewall"]["result"]["stdout"]
    assert done["server-log"]["outcome"] == "ok"
    # the crash-safe order: add, write the file, then make it the only one
    order = [e["step"]["id"] for e in of_type(evts, "approval.given")]
    assert order == ["add-password", "write-password-file", "rotate", "rewrite"]
    assert verify_transcript(transcript_path(result)).ok


def test_breach_dry_run_changes_nothing(breach, tmp_path):
    server, password_file, inventory, intruder = breach
    file_before = (password_file.read_bytes(), password_file.stat().st_mtime_ns)
    config_before = server.config_path.read_bytes()
    result = run_breach(inventory, tmp_path, "--dry-run")
    assert result.code == 0, result.output
    assert (password_file.read_bytes(), password_file.stat().st_mtime_ns) == file_before
    assert server.config_path.read_bytes() == config_before
    assert accepted(server, OLD_PASSWORD) and intruder.alive()
    assert len(server.client().acl_getuser("default")["passwords"]) == 1
    nothing_leaked(result, tmp_path, OLD_PASSWORD)
    done = finished(events(transcript_path(result)))
    for step in ("add-password", "write-password-file", "rotate", "rewrite"):
        assert done[step]["outcome"] == "predicted", step
    assert done["rotate"]["blast_radius"]["sessions"]["count"] >= 2
    for step in ("old-refused", "new-accepted", "sessions-after"):
        assert [e["held"] for e in done[step]["expectations"]] == [None], step
    assert done["use-new"]["result"]["switched"] is False
    assert done["generate"]["result"] == "[SECRET:new_password]"


def test_breach_refused_without_a_terminal_changes_nothing(breach, tmp_path):
    server, password_file, inventory, intruder = breach
    file_before = password_file.read_bytes()
    config_before = server.config_path.read_bytes()
    result = run_breach(inventory, tmp_path)
    assert result.code == 3, result.output
    assert password_file.read_bytes() == file_before and server.config_path.read_bytes() == config_before
    assert accepted(server, OLD_PASSWORD) and intruder.alive()
    assert len(server.client().acl_getuser("default")["passwords"]) == 1
    evts = events(transcript_path(result))
    assert [e["step"]["id"] for e in of_type(evts, "approval.refused")] == ["add-password"]
    nothing_leaked(result, tmp_path, OLD_PASSWORD)


def test_breach_without_a_password_file_stops_before_rotating(redis_server, tmp_path):
    server = redis_server(password=OLD_PASSWORD)
    inventory = write_inventory(
        tmp_path / "inventory.yaml", inventory_for(server, None, None, password_env="BREACH_TEST_PASSWORD")
    )
    result = runbook(
        "run",
        BREACH,
        "--inventory",
        str(inventory),
        "--target",
        "sandbox",
        "--yes",
        "--transcripts-dir",
        str(tmp_path / "transcripts"),
        env={"BREACH_TEST_PASSWORD": OLD_PASSWORD},
    )
    assert result.code == 1, result.output
    assert "Stopped before changing anything" in result.stdout and "password_file" in result.stdout
    assert accepted(server, OLD_PASSWORD)
    assert len(server.client().acl_getuser("default")["passwords"]) == 1
    evts = events(transcript_path(result))
    assert [e["step"]["id"] for e in of_type(evts, "step.finished")] == ["password-file"]
    assert not of_type(evts, "approval.requested")
    nothing_leaked(result, tmp_path, OLD_PASSWORD)


# -- why the breach procedure generates and sets its password through redis_auth -----------------------------
def test_compute_secret_step_keeps_the_generated_password_out_of_transcript_and_json(redis_server, tmp_path):
    (tmp_path / "procs").mkdir()
    (tmp_path / "procs" / "gen.yaml").write_text(
        "id: test/generate\ntitle: Generate\nsection: test\ndescription: a secret compute step\nsteps:\n"
        "  - id: gen\n    name: Generate a password\n    compute:\n      password: random_password(32)\n"
        "    register: creds\n    secret: true\n"
        "  - id: length\n    name: Use it\n    compute:\n      length: creds.password | length\n"
    )
    server = redis_server()
    result = runbook(
        "run",
        "test/generate",
        "--procedures",
        str(tmp_path / "procs"),
        "--redis",
        server.url,
        "--json",
        "--transcripts-dir",
        str(tmp_path / "transcripts"),
    )
    assert result.code == 0, result.output
    steps = {s["id"]: s for s in result.json()["steps"]}
    assert steps["length"]["result"] == {"length": 32}  # the value was generated and usable
    assert steps["gen"]["result"] == {"password": "[SECRET:creds.password]"}  # --json
    gen = next(e for e in of_type(events(transcript_path(result)), "step.finished") if e["step"]["id"] == "gen")
    assert gen["result"] == {"password": "[SECRET:creds.password]"}  # the transcript


def test_raw_acl_setuser_step_never_shows_its_password_to_monitor(redis_server, tmp_path):
    (tmp_path / "procs").mkdir()
    (tmp_path / "procs" / "acl.yaml").write_text(
        "id: test/acl-user\ntitle: ACL user\nsection: test\ndescription: a raw ACL SETUSER\nrequires: [redis]\n"
        "params:\n  pw:\n    type: string\n    secret: true\n    required: true\nsteps:\n"
        "  - id: add\n    name: Create a user\n    redis:\n      command: [ACL, SETUSER, probe, 'on', '>{{ pw }}']\n"
        "    confirm: Create the ACL user probe.\n"
    )
    server = redis_server()
    monitored: list[str] = []
    monitor = server.client().monitor()
    monitor.__enter__()

    def watch() -> None:
        try:
            for entry in monitor.listen():
                monitored.append(entry["command"])
        except (redis.RedisError, OSError, ValueError):
            pass

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()  # MONITOR is on already: monitor.__enter__ waited for its OK
    result = runbook(
        "run",
        "test/acl-user",
        "--procedures",
        str(tmp_path / "procs"),
        "--redis",
        server.url,
        "--yes",
        "--var",
        "pw=Monitor-Must-Not-See-This-42",
        "--transcripts-dir",
        str(tmp_path / "transcripts"),
    )
    server.client().echo("monitor-sentinel")  # fed after every command of the run: seen last
    deadline = time.monotonic() + 60  # a safety net: the watcher reads what the server already sent
    while not any("monitor-sentinel" in c for c in monitored):
        assert time.monotonic() < deadline, "the MONITOR never delivered the sentinel"
        time.sleep(0.02)
    monitor.connection.disconnect()
    thread.join(timeout=5)
    assert result.code == 0, result.output
    assert server.client().acl_getuser("probe") is not None
    assert monitored
    assert not [c for c in monitored if "Monitor-Must-Not-See-This-42" in c], monitored
