"""Procedures that work on the Redis host over SSH, end to end against real redis-server and sshd processes.

Each test builds its own world (a Redis, an sshd on a loopback address, the systemctl-like service
script, an inventory) in ~0.3 s, runs the procedure through the real CLI and checks what happened to
the server and to the files on the host (the host is this machine, so they are local files too).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.sandbox.redis_server import RedisServer
from engine.sandbox.sshd import ServiceCommands, SshHost, install_redis_service, inventory_for, write_inventory
from engine.transcript.verify import verify_transcript
from tests.integration.cli_support import CliResult, events, of_type, runbook, transcript_path


@dataclass
class World:
    redis: RedisServer
    host: SshHost
    service: ServiceCommands
    inventory: Path
    tmp: Path

    def run(self, procedure: str, *args: str, **variables: Any) -> CliResult:
        argv = ["run", procedure, "--inventory", str(self.inventory), "--target", "sandbox"]
        for name, value in variables.items():
            argv += ["--var", f"{name}={value}"]
        argv += ["--transcripts-dir", str(self.tmp / "transcripts"), "--json", *args]
        return runbook(*argv, timeout=120)

    def client(self):
        return self.redis.client()


@pytest.fixture
def http_base(health_endpoint):
    return health_endpoint().base_url


@pytest.fixture
def world(redis_server, sshd_host, http_base, tmp_path):
    def make(**redis_kwargs: Any) -> World:
        redis = redis_server(**redis_kwargs)
        host = sshd_host()
        service = install_redis_service(host, redis)
        inventory = write_inventory(
            tmp_path / "inventory.yaml", inventory_for(redis, host, service, http_base_url=http_base)
        )
        return World(redis, host, service, inventory, tmp_path)

    return make


def steps_of(result: CliResult) -> dict[str, dict[str, Any]]:
    """Step id -> its JSON record (the last one when a step ran more than once, e.g. in a call)."""
    return {s["id"]: s for s in result.json()["steps"]}


def finished(result: CliResult, step_id: str) -> list[dict[str, Any]]:
    return [e for e in of_type(events(transcript_path(result)), "step.finished") if e["step"]["id"] == step_id]


def _run_stalled(w: World, procedure: str, *, until: str) -> CliResult:
    """Run `procedure` (approved) with Redis stopped (SIGSTOP: a stalled server) until its step `until` ended."""
    pid = w.redis.pid
    assert pid is not None
    done = threading.Event()
    os.kill(pid, signal.SIGSTOP)
    releaser = threading.Thread(target=_continue_after, args=(until, w.tmp / "transcripts", pid, done))
    releaser.start()
    try:
        return w.run(procedure, "--yes")
    finally:
        done.set()
        releaser.join()


def _continue_after(step: str, transcripts: Path, pid: int, done: threading.Event) -> None:
    """SIGCONT `pid` as soon as a transcript under `transcripts` records the end of `step` (or `done` is set)."""
    try:
        while not done.is_set():
            for path in transcripts.glob("**/*.jsonl"):
                if any(e["type"] == "step.finished" and e["step"]["id"] == step for e in _complete_events(path)):
                    return
            time.sleep(0.05)
    finally:
        os.kill(pid, signal.SIGCONT)


def _complete_events(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].split("\n") if line.strip()]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_dataset(client) -> dict[str, Any]:
    """Keys of every type (some with TTLs); returns what a restore must bring back."""
    pipe = client.pipeline(transaction=False)
    for i in range(40):
        pipe.set(f"tenant:acme:cache:{i}", f"value-{i}")
    pipe.hset("tenant:acme:wm:active", mapping={"goal": "draft reply", "turns": "3"})
    pipe.expire("tenant:acme:wm:active", 3600)
    pipe.rpush("tenant:acme:wm:history", "turn 0", "turn 1")
    pipe.sadd("tenant:globex:cache:tags", "faq", "billing")
    pipe.zadd("tenant:globex:rank", {"a": 1, "b": 2})
    pipe.execute()
    return {
        "count": 44,
        "cache_7": "value-7",
        "wm": {"goal": "draft reply", "turns": "3"},
        "history": ["turn 0", "turn 1"],
        "tags": {"faq", "billing"},
    }


def assert_dataset(client, expected: dict[str, Any]) -> None:
    assert client.dbsize() == expected["count"]
    assert client.get("tenant:acme:cache:7") == expected["cache_7"]
    assert client.hgetall("tenant:acme:wm:active") == expected["wm"]
    assert client.ttl("tenant:acme:wm:active") > 3000
    assert client.lrange("tenant:acme:wm:history", 0, -1) == expected["history"]
    assert client.smembers("tenant:globex:cache:tags") == expected["tags"]
    assert client.zrange("tenant:globex:rank", 0, -1, withscores=True) == [("a", 1.0), ("b", 2.0)]


def backup_of(world: World, name: str = "redis-dump-20261126.rdb") -> Path:
    """SAVE, then copy dump.rdb to a backup directory on the host, as a nightly job would."""
    world.client().save()
    backups = world.tmp / "backups"
    backups.mkdir(exist_ok=True)
    target = backups / name
    shutil.copyfile(world.service.rdb_path, target)
    return target


def lose_everything(world: World) -> None:
    """FLUSHALL and SAVE: the on-disk dump is empty too, as with save points configured."""
    client = world.client()
    client.flushall()
    client.save()


# -- redis/restore-rdb ------------------------------------------------------------------------------


def test_restore_rdb_really_recovers_the_data(world):
    w = world()
    expected = write_dataset(w.client())
    backup = backup_of(w)
    lose_everything(w)
    assert w.client().dbsize() == 0
    pid_before = w.redis.pid

    result = w.run("redis/restore-rdb", "--yes", backup=backup, expect_keys=44)

    assert result.code == 0, result.output
    assert_dataset(w.client(), expected)
    assert w.redis.pid != pid_before  # it really was stopped and started
    steps = steps_of(result)
    assert steps["backup-report"]["result"]["key_count"] == 44
    assert "44 keys after the restore" in steps["verify-keys"]["summary"]
    run_id = result.json()["run_id"]
    kept = Path(f"{w.service.rdb_path}.before-restore-{run_id}")
    assert kept.exists()  # the dump that was replaced (the empty one) is kept, never deleted
    check = subprocess.run(["redis-check-rdb", str(kept)], capture_output=True, text=True)
    assert "[info] 0 keys read" in check.stdout
    assert sha(w.service.rdb_path) == sha(backup)
    assert not list(w.service.rdb_path.parent.glob("dump.rdb.restoring-*"))
    evts = events(transcript_path(result))
    approved = {e["step"]["id"] for e in of_type(evts, "approval.given")}
    assert approved == {"stop", "keep-current", "put-backup", "start"}
    stop = next(e for e in of_type(evts, "step.finished") if e["step"]["id"] == "stop")
    assert stop["effect"] == "destructive" and stop["changes"][0]["kind"] == "command"
    started = next(e for e in of_type(evts, "step.started") if e["step"]["id"] == "put-backup")
    assert f"chown {w.service.service_user}:" in started["command"].replace("'", "")
    assert verify_transcript(transcript_path(result)).ok


def test_restore_rdb_without_terminal_is_refused_and_redis_keeps_running(world):
    w = world()
    write_dataset(w.client())
    backup = backup_of(w)
    lose_everything(w)
    pid, dump = w.redis.pid, sha(w.service.rdb_path)

    result = w.run("redis/restore-rdb", backup=backup)

    assert result.code == 3, result.output
    assert w.redis.pid == pid and w.client().ping() and w.client().dbsize() == 0
    assert sha(w.service.rdb_path) == dump
    assert not list(w.service.rdb_path.parent.glob("dump.rdb.before-restore-*"))
    evts = events(transcript_path(result))
    assert [e["step"]["id"] for e in of_type(evts, "approval.refused")] == ["stop"]
    assert evts[-1]["outcome"] == "refused" and evts[-1]["exit_code"] == 3
    # the backup was checked before the gate was ever reached
    assert steps_of(result)["backup-report"]["result"]["key_count"] == 44


def test_restore_rdb_dry_run_predicts_every_change_and_makes_none(world):
    w = world()
    write_dataset(w.client())
    backup = backup_of(w)
    lose_everything(w)
    pid, dump = w.redis.pid, sha(w.service.rdb_path)

    result = w.run("redis/restore-rdb", "--dry-run", backup=backup)

    assert result.code == 0, result.output
    assert w.redis.pid == pid and w.client().dbsize() == 0 and sha(w.service.rdb_path) == dump
    assert not list(w.service.rdb_path.parent.glob("dump.rdb.*"))
    steps = steps_of(result)
    for step_id in ("stop", "keep-current", "put-backup", "start"):
        assert steps[step_id]["outcome"] == "predicted", step_id
    assert [e["held"] for e in steps["verify-keys"]["expectations"]] == [None, None]
    assert steps["backup-report"]["outcome"] == "ok"  # reads ran for real


def test_restore_rdb_refuses_when_aof_is_enabled(world):
    w = world(appendonly=True)
    write_dataset(w.client())
    backup = backup_of(w)
    pid = w.redis.pid

    result = w.run("redis/restore-rdb", "--yes", backup=backup)

    assert result.code == 1, result.output
    assert "AOF is enabled" in result.output and "Nothing was stopped" in result.output
    assert w.redis.pid == pid and w.client().dbsize() == 44
    assert {s["id"] for s in result.json()["steps"]}.isdisjoint({"stop", "put-backup"})


def test_restore_rdb_refuses_a_corrupt_backup_before_stopping(world):
    w = world()
    write_dataset(w.client())
    backup = backup_of(w)
    backup.write_bytes(backup.read_bytes()[:-40])  # cut short: the checksum and the last keys are gone
    pid = w.redis.pid

    result = w.run("redis/restore-rdb", "--yes", backup=backup)

    assert result.code == 1, result.output
    assert "not a valid RDB" in result.output and w.redis.pid == pid and w.client().dbsize() == 44


def test_restore_rdb_rejects_unsafe_backup_paths_before_connecting(tmp_path):
    result = runbook(
        "run",
        "redis/restore-rdb",
        "--redis",
        "redis://127.0.0.1:1/0",
        "--var",
        "backup=/backups/../etc/shadow.rdb",
        "--transcripts-dir",
        str(tmp_path),
    )
    assert result.code == 2, result.output
    assert "does not match" in result.output and not any(tmp_path.iterdir())  # no transcript: never started
    # the same check, in process, for the other shapes a backup path must not have
    from engine.errors import UsageError
    from engine.run.session import RunRequest, prepare

    for path in ("/backups/x.rdb;reboot", "backups/x.rdb", "/x.tar", "/b/$(id).rdb", "/b/x y.rdb"):
        with pytest.raises(UsageError, match="does not match"):
            prepare(RunRequest("redis/restore-rdb", variables={"backup": path}))
    assert prepare(RunRequest("redis/restore-rdb", variables={"backup": "/var/backups/redis-dump-1.rdb"}))[1] == {
        "backup": "/var/backups/redis-dump-1.rdb",
        "expect_keys": None,
        "start_timeout": 300.0,  # the runbook's bound on waiting for Redis to answer after the start (5m)
    }


# -- redis/emergency-service-down -------------------------------------------------------------------


def test_service_down_restarts_redis_with_its_last_snapshot(world):
    w = world(password="s3cret-pw-for-the-sandbox")  # the service script and the engine both need it
    expected = write_dataset(w.client())
    w.client().save()
    w.client().set("written-after-the-snapshot", "lost")  # no save point: this one dies with the process
    w.redis.kill()
    assert w.redis.pid is None

    result = w.run("redis/emergency-service-down", "--yes")

    assert result.code == 0, result.output
    assert w.redis.pid is not None
    assert_dataset(w.client(), expected)
    assert w.client().exists("written-after-the-snapshot") == 0
    steps = steps_of(result)
    assert "inactive" in steps["status"]["summary"]
    assert steps["ping-before"]["outcome"] == "error"  # nothing answered before the restart
    assert steps["restart"]["outcome"] == "ok" and steps["restart"]["effect"] == "destructive"
    assert steps["verify-ping"]["outcome"] == "ok"
    assert "44 keys" in steps["loaded"]["summary"]
    assert "start-failed" not in steps or steps["start-failed"]["outcome"] == "skipped"
    assert of_type(events(transcript_path(result)), "approval.given")[0]["step"]["id"] == "restart"
    assert "s3cret-pw-for-the-sandbox" not in transcript_path(result).read_text()


def test_service_down_does_not_restart_a_redis_that_answers(world):
    w = world()
    pid = w.redis.pid
    result = w.run("redis/emergency-service-down")  # no --yes, no terminal: nothing to approve anyway
    assert result.code == 0, result.output
    assert w.redis.pid == pid
    assert steps_of(result)["restart"]["outcome"] == "skipped"


def test_service_down_does_not_restart_a_redis_that_answers_a_fresh_probe(world):
    """PING timed out (Redis stopped, held by the test until that step ended), then Redis answers again: the
    fresh probe right before the question sees it, and nothing is restarted or asked."""
    w = world()
    pid = w.redis.pid
    result = _run_stalled(w, "redis/emergency-service-down", until="ping-before")
    steps = steps_of(result)
    assert steps["ping-before"]["outcome"] == "error", steps["ping-before"]
    assert steps["recheck"]["result"]["reply"] == "+PONG", steps["recheck"]
    assert steps["restart"]["outcome"] == "skipped"
    assert w.redis.pid == pid
    assert of_type(events(transcript_path(result)), "approval.given") == []


def test_service_down_does_not_restart_for_a_password_problem(world):
    """The client's PING is refused (no password in the inventory); Redis itself answers (-NOAUTH): a restart
    cures no password, so none is offered."""
    w = world(password="the-right-one")
    pid = w.redis.pid
    data = inventory_for(w.redis, w.host, w.service)
    del data["environments"]["sandbox"]["targets"]["sandbox"]["redis"]["password_file"]
    write_inventory(w.inventory, data)
    result = w.run("redis/emergency-service-down", "--yes")
    steps = steps_of(result)
    assert steps["ping-before"]["outcome"] == "error"
    assert steps["recheck"]["result"]["reply"].startswith("-NOAUTH"), steps["recheck"]
    assert steps["restart"]["outcome"] == "skipped"
    assert w.redis.pid == pid


def test_service_down_refused_and_dry_run_leave_redis_down(world):
    w = world()
    w.redis.kill()
    refused = w.run("redis/emergency-service-down")
    assert refused.code == 3, refused.output
    rehearsal = w.run("redis/emergency-service-down", "--dry-run")
    assert rehearsal.code == 0, rehearsal.output
    assert steps_of(rehearsal)["restart"]["outcome"] == "predicted"
    assert w.redis.pid is None


def test_service_down_when_redis_will_not_start_points_to_restore(world):
    w = world()
    w.redis.kill()
    with open(w.redis.config_path, "a") as conf:
        conf.write("maxmemory not-a-size\n")  # a bad edit: redis-server refuses to start

    result = w.run("redis/emergency-service-down", "--yes")

    assert result.code == 1, result.output
    assert w.redis.pid is None
    assert "Redis did not start" in result.output and "redis/restore-rdb" in result.output
    assert "maxmemory" in result.output  # the reason, from redis-server itself
    assert steps_of(result)["start-failed-report"]["outcome"] == "failed"
    assert result.json()["outcome"] == "failed"


# -- redis/troubleshoot-corruption ------------------------------------------------------------------


def cut_the_aof(w: World) -> tuple[Path, int]:
    """Write, stop Redis cleanly, then cut the last INCR file in the middle of its last command.

    With aof-load-truncated no, Redis refuses to start on it, as it does on any damage before the end.
    """
    client = w.client()
    expected = write_dataset(client)
    for i in range(20):
        client.set(f"late:{i}", "x" * 100)
    subprocess.run(w.service.stop, shell=True, check=True, capture_output=True)
    incr = next(w.service.aof_dir.glob("*.incr.aof"))
    size = incr.stat().st_size
    incr.write_bytes(incr.read_bytes()[: size - 60])  # inside the value of late:19
    start = subprocess.run(
        [shutil.which("redis-server") or "redis-server", str(w.redis.config_path), "--daemonize", "no"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert start.returncode != 0  # Redis really cannot start on this AOF
    assert "Unexpected end of file" in w.redis.log_path.read_text()
    return incr, expected["count"]


def test_corruption_fixes_a_cut_aof_after_keeping_a_copy_and_redis_serves_again(world):
    w = world(appendonly=True, config={"aof-load-truncated": "no"})
    incr, keys_before_cut = cut_the_aof(w)
    cut_size = incr.stat().st_size

    result = w.run("redis/troubleshoot-corruption", "--yes")

    assert result.code == 1, result.output  # findings: the log errors and the damaged AOF were real
    steps = steps_of(result)
    assert steps["aof-report"]["result"]["invalid"] == [incr.name]
    assert steps["aof-report"]["result"]["multipart"] is True
    assert any("Unexpected end of file" in e["message"] for e in steps["log-report"]["result"]["errors"])
    assert steps["fix-aof"]["outcome"] == "ok" and steps["recheck-aof"]["outcome"] == "ok"
    # Redis is back and serves everything written before the cut
    client = w.client()
    assert client.ping()
    assert client.dbsize() == keys_before_cut + 19
    assert client.get("late:18") == "x" * 100 and client.exists("late:19") == 0
    assert client.hgetall("tenant:acme:wm:active") == {"goal": "draft reply", "turns": "3"}
    assert "63 keys served" in steps["verify-keys"]["summary"]
    # the damaged original was copied aside, untouched, before --fix truncated it
    run_id = result.json()["run_id"]
    kept = w.service.aof_dir.with_name(f"appendonlydir.before-fix-{run_id}")
    assert (kept / incr.name).stat().st_size == cut_size
    assert incr.stat().st_size < cut_size
    approved = [e["step"]["id"] for e in of_type(events(transcript_path(result)), "approval.given")]
    assert approved == ["keep-aof", "fix-aof", "start"]  # stop skipped: Redis was already down
    assert steps["restore"]["outcome"] == "skipped"


def test_corruption_refused_and_dry_run_leave_the_aof_alone(world):
    w = world(appendonly=True, config={"aof-load-truncated": "no"})
    incr, _ = cut_the_aof(w)
    digest = sha(incr)

    refused = w.run("redis/troubleshoot-corruption")
    assert refused.code == 3, refused.output
    rehearsal = w.run("redis/troubleshoot-corruption", "--dry-run")
    assert rehearsal.code == 1, rehearsal.output  # the findings are real, the fix only predicted
    steps = steps_of(rehearsal)
    assert steps["keep-aof"]["outcome"] == "predicted" and steps["fix-aof"]["outcome"] == "predicted"
    assert steps["start"]["outcome"] == "predicted"  # the dry-run shows the start the real run does

    assert sha(incr) == digest and w.redis.pid is None
    assert not list(w.service.aof_dir.parent.glob("appendonlydir.before-fix-*"))


def test_corruption_restores_a_corrupt_rdb_through_restore_rdb_while_redis_is_down(world):
    w = world()
    expected = write_dataset(w.client())
    backup = backup_of(w)
    w.redis.kill()
    dump = w.service.rdb_path
    dump.write_bytes(dump.read_bytes()[:-40])  # the dump on the host is damaged; Redis is down

    result = w.run("redis/troubleshoot-corruption", "--yes", backup=backup)

    assert result.code == 1, result.output  # the corrupt dump is a finding
    records = result.json()["steps"]
    outer = {s["id"]: s for s in records if s["procedure"] == "redis/troubleshoot-corruption"}
    assert outer["rdb-report"]["result"]["ok"] is False
    assert outer["rdb-report"]["result"]["error"] == "Unexpected EOF reading RDB file"
    assert outer["aof-check"]["outcome"] == "skipped"  # appendonly off: no AOF on the host
    inner = {s["id"]: s for s in records if s["procedure"] == "redis/restore-rdb"}
    assert inner["config"]["outcome"] == "skipped" and inner["aof-files"]["outcome"] == "ok"  # down: asked the disk
    assert inner["verify-keys"]["expectations"][0]["held"] is True
    assert_dataset(w.client(), expected)
    kept = Path(f"{dump}.before-restore-{result.json()['run_id']}")
    assert "RDB ERROR DETECTED" in subprocess.run(["redis-check-rdb", str(kept)], capture_output=True, text=True).stdout


# -- redis/troubleshoot-connection ------------------------------------------------------------------


def test_connection_checks_of_a_healthy_redis_find_its_process_and_port(world):
    w = world()
    result = w.run("redis/troubleshoot-connection")  # reads only: no terminal needed
    assert result.code == 0, result.output
    steps = steps_of(result)
    assert steps["tcp"]["result"]["connected"] is True and steps["tcp"]["result"]["reply"] == "+PONG"
    listeners = [s for s in steps["sockets"]["result"] if s["port"] == w.redis.port]
    assert [(s["pid"], s["process"]) for s in listeners] == [(w.redis.pid, "redis-server")]
    assert f"pid {w.redis.pid} " in steps["processes"]["summary"]
    free = subprocess.run(["free", "-b"], capture_output=True, text=True).stdout.split("\n")[1].split()
    assert steps["memory-report"]["result"]["mem"]["total"] == int(free[1])
    assert steps["disk-report"]["result"][0]["size"] > 0
    assert steps["config"]["result"]["port"] == str(w.redis.port)
    assert steps["restart"]["outcome"] == "skipped"


def test_connection_does_not_offer_a_restart_for_a_password_problem(world):
    w = world(password="the-right-one")
    data = inventory_for(w.redis, w.host, w.service)
    del data["environments"]["sandbox"]["targets"]["sandbox"]["redis"]["password_file"]  # the client has none
    write_inventory(w.inventory, data)

    result = w.run("redis/troubleshoot-connection", "--yes")

    assert result.code == 1, result.output
    steps = steps_of(result)
    assert steps["tcp"]["result"]["reply"] == "-NOAUTH Authentication required."
    assert steps["ping"]["outcome"] == "error"
    assert (
        steps["scope"]["expectations"][0]["held"] is False
        and "credentials" in steps["scope"]["expectations"][0]["message"]
    )
    assert steps["restart"]["outcome"] == "skipped"


def test_connection_restarts_a_dead_redis_only_when_approved(world):
    w = world()
    write_dataset(w.client())
    w.client().save()
    w.redis.kill()

    refused = w.run("redis/troubleshoot-connection")
    assert refused.code == 3, refused.output
    rehearsal = w.run("redis/troubleshoot-connection", "--dry-run")
    assert rehearsal.code == 1, rehearsal.output
    assert steps_of(rehearsal)["restart"]["outcome"] == "predicted"
    assert w.redis.pid is None

    result = w.run("redis/troubleshoot-connection", "--yes")

    assert result.code == 1, result.output  # the findings (refused connection, nothing listening) stand
    steps = steps_of(result)
    assert "connection refused" in steps["tcp"]["result"]["error"]
    assert [e["held"] for e in steps["sockets"]["expectations"]] == [True, False]
    assert steps["restart"]["outcome"] == "ok" and steps["verify"]["result"]["reply"] == "+PONG"
    assert w.redis.pid is not None and w.client().dbsize() == 44


@pytest.mark.parametrize("stalled_until", ["tcp", "ping"])
def test_connection_does_not_restart_a_redis_that_answers_again(world, stalled_until):
    """Redis is stopped (SIGSTOP, held by the test) until the step `stalled_until` has ended: the first probe
    caught it stalled, and with `ping` the client's PING too. It answers again before the restart would be
    offered: a restart would drop every client for nothing, so none is (the fresh probe right before it
    sees Redis answer)."""
    w = world()
    with w.client() as client:
        run_id = client.info("server")["run_id"]
    result = _run_stalled(w, "redis/troubleshoot-connection", until=stalled_until)
    steps = steps_of(result)
    assert steps["tcp"]["result"]["connected"] is True and steps["tcp"]["result"]["reply"] is None, steps["tcp"]
    assert "no reply to PING" in steps["tcp"]["result"]["error"]
    if stalled_until == "tcp":  # the client's PING answered: nothing to probe again
        assert steps["ping"]["outcome"] == "ok" and steps["recheck"]["outcome"] == "skipped"
    else:
        assert steps["ping"]["outcome"] == "error"
        assert steps["recheck"]["result"]["reply"] == "+PONG", steps["recheck"]
    assert steps["restart"]["outcome"] == "skipped"
    assert result.code == 1, result.output  # the stall the first probe saw stays a finding
    with w.client() as client:
        assert client.info("server")["run_id"] == run_id  # the same process: never restarted


# -- redis/emergency-data-loss ----------------------------------------------------------------------


def test_data_loss_pauses_writes_assesses_restores_and_documents(world):
    w = world()
    expected = write_dataset(w.client())
    backup = backup_of(w)
    lose_everything(w)

    result = w.run(
        "redis/emergency-data-loss", "--yes", "--incident", "INC-7", last_known_keys=50, backup=backup, pause_ms=5000
    )

    assert result.code == 1, result.output  # findings: 50 keys known, 0 left, 44 restored
    assert_dataset(w.client(), expected)
    records = result.json()["steps"]
    steps = {s["id"]: s for s in records if s["procedure"] == "redis/emergency-data-loss"}
    assert steps["pause-writes"]["outcome"] == "ok" and steps["pause-writes"]["effect"] == "destructive"
    assert steps["scope"]["result"] == 0 and "50 keys missing (100.0%)" in steps["scope"]["summary"]
    assert steps["after"]["result"] == 44 and steps["after"]["expectations"][0]["held"] is False
    assert steps["notify"]["result"] == [
        {"item": "Notify affected tenants and applications", "done": True, "by": "flag"}
    ]
    assert "runbook postmortem --incident INC-7" in steps["document"]["result"]
    inner = [s["id"] for s in records if s["procedure"] == "redis/restore-rdb"]
    assert {"stop", "put-backup", "start", "verify-keys"} <= set(inner)
    run_id = result.json()["run_id"]
    at_incident = Path(f"{w.service.rdb_path}.at-incident-{run_id}")
    assert (
        "[info] 0 keys read"
        in subprocess.run(["redis-check-rdb", str(at_incident)], capture_output=True, text=True).stdout
    )
    evts = events(transcript_path(result))
    pause = next(e for e in of_type(evts, "step.started") if e["step"]["id"] == "pause-writes")
    assert pause["command"] == "CLIENT PAUSE 5000 WRITE"
    assert evts[0]["type"] == "run.started" and evts[0]["incident"] == "INC-7"


def test_data_loss_pause_really_blocks_writes_and_is_bounded(world):
    w = world()
    w.client().set("k", "v")
    # five minutes: still paused when the run is over however slow the machine; the test unpauses
    result = w.run("redis/emergency-data-loss", "--yes", pause_ms=300000)
    client = w.client()
    try:
        assert result.code == 0, result.output
        assert steps_of(result)["no-backup"]["outcome"] == "ok"
        import redis as redis_py

        blocked = w.redis.client(socket_timeout=0.5)
        with pytest.raises(redis_py.TimeoutError):
            blocked.set("k", "written during the pause")
        assert client.get("k") == "v"  # reads go on
    finally:
        client.execute_command("CLIENT", "UNPAUSE")


def test_data_loss_refused_and_dry_run_pause_nothing(world):
    w = world()
    write_dataset(w.client())
    backup = backup_of(w)
    refused = w.run("redis/emergency-data-loss", backup=backup)
    assert refused.code == 3, refused.output
    rehearsal = w.run("redis/emergency-data-loss", "--dry-run", backup=backup, last_known_keys=44)
    assert rehearsal.code == 0, rehearsal.output
    records = rehearsal.json()["steps"]
    predicted = {(s["procedure"], s["id"]) for s in records if s["outcome"] == "predicted"}
    assert {
        ("redis/emergency-data-loss", "pause-writes"),
        ("redis/emergency-data-loss", "keep-dump"),
        ("redis/restore-rdb", "stop"),
        ("redis/restore-rdb", "put-backup"),
    } <= predicted
    client = w.redis.client(socket_timeout=1)
    client.set("still-writable", "yes")  # no pause is in effect
    assert client.dbsize() == 45
    assert not list(w.service.rdb_path.parent.glob("dump.rdb.*"))


# -- redis/verify-checklist -------------------------------------------------------------------------


def probe_keys(client) -> list[str]:
    return list(client.scan_iter("tenant:_runbook_probe:*", count=1000))


def test_verify_checklist_all_items_pass_and_the_probe_leaves_nothing(world):
    w = world()
    backup = backup_of(w)
    (backup.parent / "older.rdb").write_bytes(b"not an rdb")  # older: the newest file is the one checked
    older = backup.parent / "older.rdb"
    import os

    os.utime(older, (backup.stat().st_mtime - 3600, backup.stat().st_mtime - 3600))

    result = w.run("redis/verify-checklist", "--yes", backup_dir=backup.parent)

    assert result.code == 0, result.output
    steps = steps_of(result)
    assert set(steps["summary"]["result"].values()) == {"pass"}
    assert steps["wm-read"]["result"]["written_by"] == result.json()["run_id"]
    assert steps["backup-report"]["result"]["key_count"] == 0 and steps["backup-find"]["summary"].startswith(
        str(backup)
    )
    assert steps["somabrain"]["result"]["json"] == {"status": "ok", "redis": "ok"}
    assert probe_keys(w.client()) == []
    evts = events(transcript_path(result))
    written = next(e for e in of_type(evts, "step.finished") if e["step"]["id"] == "wm-write")
    assert written["changes"][0]["keys"] == [f"tenant:_runbook_probe:wm:probe-{result.json()['run_id']}"]
    deleted = next(e for e in of_type(evts, "step.finished") if e["step"]["id"] == "wm-delete")
    assert deleted["changes"][0]["kind"] == "keys_removed" and deleted["changes"][0]["count"] == 1

    # refused: stops at the first change, nothing written
    refused = w.run("redis/verify-checklist", backup_dir=backup.parent)
    assert refused.code == 3, refused.output
    assert probe_keys(w.client()) == []
    # dry-run: the probe is predicted, never written; the other items are really checked
    rehearsal = w.run("redis/verify-checklist", "--dry-run", backup_dir=backup.parent)
    assert rehearsal.code in (0, 1), rehearsal.output
    dry = steps_of(rehearsal)
    assert dry["wm-write"]["outcome"] == "predicted" and dry["wm-delete"]["outcome"] == "predicted"
    assert dry["summary"]["result"]["working_memory"] == "not checked (dry-run)"
    assert dry["summary"]["result"]["backup_valid"] == "pass" and dry["summary"]["result"]["no_error_logs"] == "pass"
    assert probe_keys(w.client()) == []


def test_verify_checklist_grades_each_failing_item(world, tmp_path):
    w = world()
    from datetime import datetime

    stamp = datetime.now().strftime("%d %b %Y %H:%M:%S.000")
    with open(w.redis.log_path, "a") as log:  # as Redis would write it, just now by the host's clock
        log.write(f"999:M {stamp} # Fatal error writing the AOF: No space left on device\n")
        log.write("999:M 01 Jan 2020 00:00:00.000 # Fatal error long ago, outside the window\n")
    broken = tmp_path / "broken-backups"
    broken.mkdir()
    (broken / "redis-dump-20261126.rdb").write_bytes(b"REDIS0011 cut short")
    w.client().config_set("maxmemory", "1mb")  # used_memory is above 90% of it, and writes hit OOM

    result = w.run("redis/verify-checklist", "--yes", backup_dir=broken)

    assert result.code == 1, result.output
    items = steps_of(result)["summary"]["result"]
    assert items == {
        "service_running": "pass",
        "memory_normal": "fail",
        "somabrain_connects": "pass",
        "working_memory": "fail",
        "no_error_logs": "fail",
        "backup_valid": "fail",
    }
    log = steps_of(result)["log-errors"]["result"]
    assert log["error_count"] == 1 and "No space left" in log["errors"][0]["message"]
    assert "[ ] Backup integrity (fail) - FAILED" in result.output
    assert "OOM command not allowed" in steps_of(result)["wm-write"]["message"]  # the probe shows why
    w.client().config_set("maxmemory", "0")
    assert probe_keys(w.client()) == []
