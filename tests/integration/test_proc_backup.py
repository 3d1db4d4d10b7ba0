"""Backups end to end against real redis-server (and sshd) processes, through the real CLI.

redis/backup-snapshot (BGSAVE), redis/backup-tenant + redis/restore-tenant (lossless tenant export
and restore), redis/backup-full (RDB over the replication protocol) and redis/backup-verify.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.sandbox.seed import seed_bulk, seed_somabrain
from engine.sandbox.sshd import install_redis_service, inventory_for, write_inventory
from engine.transcript.verify import verify_transcript
from tests.conftest import require_binary
from tests.integration.cli_support import REPO, events, of_type, runbook, transcript_path
from tests.integration.proc_support import processes

TENANT = "tenant:acme:*"


@pytest.fixture
def seeded(redis_server):
    server = redis_server()
    seed_somabrain(server.client())
    return server


def run(server, tmp_path, procedure, *args, env=None):
    return runbook(
        "run",
        procedure,
        "--redis",
        server.url,
        "--transcripts-dir",
        str(tmp_path / "transcripts"),
        "--json",
        *args,
        env=env,
    )


def steps_of(result) -> dict:
    return {s["id"]: s for s in result.json()["steps"]}


def finished(result, step_id: str) -> dict:
    return next(e for e in of_type(events(transcript_path(result)), "step.finished") if e["step"]["id"] == step_id)


def failed_messages(step: dict) -> list[str]:
    return [e["message"] for e in step["expectations"] if e["held"] is False]


# -- redis/backup-snapshot -------------------------------------------------------------------------
def test_snapshot_advances_lastsave_and_reports_the_file(seeded, tmp_path):
    client = seeded.client()
    before = client.lastsave()
    rdb_file = seeded.directory / "dump.rdb"
    assert not rdb_file.exists()  # sandbox servers start with save "" and no dump
    result = run(seeded, tmp_path, "redis/backup-snapshot", "--yes")
    assert result.code == 0, result.output
    assert client.lastsave() > before
    steps = steps_of(result)
    assert steps["lastsave-after"]["result"] > steps["lastsave-before"]["result"]
    assert steps["wait"]["result"]["rdb_last_bgsave_status"] == "ok"
    size = rdb_file.stat().st_size
    assert steps["size-local"]["result"] == {**steps["size-local"]["result"], "exists": True, "size": size}
    assert (
        f"{rdb_file}: " in steps["size-local"]["summary"]
        and f"({size} bytes, via local stat)" in steps["size-local"]["summary"]
    )
    assert steps["size-ssh"]["outcome"] == "skipped"
    evts = events(transcript_path(result))
    started = next(e for e in of_type(evts, "step.started") if e["step"]["id"] == "bgsave")
    assert started["command"] == "BGSAVE SCHEDULE" and started["effect"] == "write"
    assert of_type(evts, "approval.given")[0]["by"] == "flag"
    assert verify_transcript(transcript_path(result)).ok


def test_snapshot_refused_and_dry_run_take_no_snapshot(seeded, tmp_path):
    client = seeded.client()
    saves = client.info("persistence")["rdb_saves"]
    refused = run(seeded, tmp_path, "redis/backup-snapshot")
    assert refused.code == 3, refused.output
    assert of_type(events(transcript_path(refused)), "approval.refused")
    dry = run(seeded, tmp_path, "redis/backup-snapshot", "--dry-run")
    assert dry.code == 0, dry.output
    steps = steps_of(dry)
    assert steps["bgsave"]["outcome"] == "predicted"
    assert {e["held"] for e in steps["wait"]["expectations"]} == {None}  # predicted, not checked
    assert client.info("persistence")["rdb_saves"] == saves
    assert not (seeded.directory / "dump.rdb").exists()


def _save_child(server) -> int:
    """The pid of the server's background-save child (a forked redis-server whose parent is the server)."""
    for process in processes():
        if process.parent == server.pid:
            return process.pid
    raise AssertionError("no background save child found")


def _attempts_started(transcripts: Path, step_id: str) -> int:
    return sum(
        1
        for path in transcripts.glob("**/*.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and '"step.started"' in line and json.loads(line)["step"]["id"] == step_id
    )


def test_snapshot_waits_for_a_save_already_in_progress(seeded, tmp_path):
    """The running save is held by the test until the procedure has polled it twice: no race.

    The save child is forked with rdb-key-save-delay at one second per key, so it cannot finish on its
    own within the test, however busy the machine; the test releases it with SIGUSR1, the signal Redis
    treats as a deliberate abort (no error status), once the procedure has seen it running twice.
    """
    client = seeded.client()
    client.config_set("rdb-key-save-delay", 1_000_000)  # microseconds per key, fixed in the child at fork
    client.bgsave()
    child = _save_child(seeded)
    client.config_set("rdb-key-save-delay", 0)  # the held child keeps its delay; the next save is quick
    try:
        assert client.info("persistence")["rdb_bgsave_in_progress"] == 1
        saves = client.info("persistence")["rdb_saves"]
        transcripts = tmp_path / "transcripts"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "run",
                "redis/backup-snapshot",
                "--redis",
                seeded.url,
                "--transcripts-dir",
                str(transcripts),
                "--json",
                "--yes",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
        )
        deadline = time.monotonic() + 120  # a safety net for a broken engine, not a timing assertion
        while _attempts_started(transcripts, "running") < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the procedure never polled the running save"
            time.sleep(0.05)
    finally:
        os.kill(child, signal.SIGUSR1)  # release: Redis reaps it as an aborted save, status stays ok
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    steps = {s["id"]: s for s in json.loads(out.strip().splitlines()[-1])["steps"]}
    assert steps["running"]["result"]["rdb_bgsave_in_progress"] == 0
    assert steps["bgsave"]["outcome"] == "ok"
    assert client.info("persistence")["rdb_saves"] == saves + 1  # ours ran after the first one finished


def test_snapshot_reports_the_size_over_ssh(redis_server, sshd_host, tmp_path):
    redis = redis_server()
    seed_somabrain(redis.client())
    host = sshd_host()
    service = install_redis_service(host, redis)
    inventory = write_inventory(tmp_path / "inventory.yaml", inventory_for(redis, host, service))
    result = runbook(
        "run",
        "redis/backup-snapshot",
        "--inventory",
        str(inventory),
        "--target",
        "sandbox",
        "--yes",
        "--transcripts-dir",
        str(tmp_path / "t"),
        "--json",
    )
    assert result.code == 0, result.output
    steps = steps_of(result)
    size = (redis.directory / "dump.rdb").stat().st_size
    assert steps["size-ssh"]["result"]["stdout"].split()[0] == str(size)
    assert f"({size} bytes, via stat over SSH on" in steps["size-ssh"]["summary"]
    assert steps["size-local"]["outcome"] == "skipped"


# -- redis/backup-tenant + redis/restore-tenant ----------------------------------------------------
def key_state(client, pattern: str) -> dict[str, tuple]:
    """Type, value and PTTL of every key matching `pattern`, read with plain commands."""
    readers = {
        "string": client.get,
        "hash": client.hgetall,
        "list": lambda k: client.lrange(k, 0, -1),
        "set": client.smembers,
        "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
    }
    state = {}
    for key in client.scan_iter(pattern, count=1000):
        kind = client.type(key)
        state[key] = (kind, readers[kind](key), client.pttl(key))
    return state


def export_tenant(server, tmp_path, tenant="acme") -> tuple[Path, dict]:
    out = tmp_path / "exports"
    out.mkdir(exist_ok=True)
    result = run(server, tmp_path, "redis/backup-tenant", "--var", f"tenant={tenant}", "--var", f"output={out}")
    assert result.code == 0, result.output
    backup = steps_of(result)["export"]["result"]
    return Path(backup["path"]), backup


def test_tenant_round_trip_keeps_type_value_and_ttl(seeded, tmp_path):
    client = seeded.client()
    before = key_state(client, TENANT)
    others = key_state(client, "tenant:globex:*")
    taken = time.monotonic()
    path, backup = export_tenant(seeded, tmp_path)
    assert backup["key_count"] == len(before) == 31
    kinds = [state[0] for state in before.values()]
    assert backup["types"] == {kind: kinds.count(kind) for kind in set(kinds)}
    assert backup["types"]["hash"] == 7 and backup["types"]["list"] == 1 and backup["types"]["set"] == 1
    assert path.name.startswith("tenant-acme-") and path.name.endswith(".keys.jsonl")
    header = json.loads(path.read_text().splitlines()[0])
    assert header["source"] == seeded.url and header["keys"] == 31 and header["redis_version"]

    client.delete(*before)
    assert not key_state(client, TENANT)
    result = run(seeded, tmp_path, "redis/restore-tenant", "--var", f"input={path}", "--var", "tenant=acme", "--yes")
    assert result.code == 0, result.output
    after = key_state(client, TENANT)
    elapsed_ms = (time.monotonic() - taken) * 1000
    assert set(after) == set(before)
    for key, (kind, value, pttl) in before.items():
        a_kind, a_value, a_pttl = after[key]
        assert (a_kind, a_value) == (kind, value), key
        assert (a_pttl == -1) == (pttl == -1), key  # TTL presence kept
        if pttl != -1:  # the TTL left at export time, not a fresh or a lost one
            assert pttl - elapsed_ms - 1000 <= a_pttl <= pttl, (key, pttl, a_pttl)
    untouched = key_state(client, "tenant:globex:*")
    assert {k: v[:2] for k, v in untouched.items()} == {k: v[:2] for k, v in others.items()}
    restore = finished(result, "restore")
    assert restore["effect"] == "write"
    assert restore["changes"][0]["kind"] == "keys_written" and restore["changes"][0]["count"] == 31
    assert restore["changes"][0]["command"] == "RESTORE"
    assert verify_transcript(transcript_path(result)).ok


def test_export_is_a_read_that_writes_no_file_in_a_dry_run(seeded, tmp_path):
    client = seeded.client()
    before = key_state(client, TENANT)
    out = tmp_path / "dry"
    out.mkdir()
    result = run(seeded, tmp_path, "redis/backup-tenant", "--var", "tenant=acme", "--var", f"output={out}", "--dry-run")
    assert result.code == 0, result.output
    export = finished(result, "export")
    assert export["outcome"] == "ok" and export["effect"] == "read" and export["result"]["key_count"] == 31
    assert export["result"]["written"] is False and export["result"]["bytes"] > 0
    assert steps_of(result)["check"]["outcome"] == "skipped"
    assert {k: v[:2] for k, v in key_state(client, TENANT).items()} == {k: v[:2] for k, v in before.items()}
    assert list(out.iterdir()) == []  # a dry-run creates no file, not even a temporary one


def test_an_existing_output_file_is_refused_as_existing(seeded, tmp_path):
    path, _ = export_tenant(seeded, tmp_path)
    content = path.read_bytes()
    again = run(seeded, tmp_path, "redis/backup-tenant", "--var", "tenant=acme", "--var", f"output={path}")
    assert again.code == 2, again.output
    assert "exists already" in again.output and "never overwrites" in again.output
    assert "corrupt" not in again.output
    assert path.read_bytes() == content and list(path.parent.iterdir()) == [path]


def test_restore_refuses_to_overwrite_without_replace(seeded, tmp_path):
    client = seeded.client()
    path, _ = export_tenant(seeded, tmp_path)
    client.set("tenant:acme:cache:0", "changed after the export", keepttl=True)
    result = run(seeded, tmp_path, "redis/restore-tenant", "--var", f"input={path}", "--var", "tenant=acme", "--yes")
    assert result.code == 1, result.output
    assert "exist already" in result.output and "replace=true" in result.output
    assert client.get("tenant:acme:cache:0") == "changed after the export"
    evts = events(transcript_path(result))
    assert not [e for e in of_type(evts, "step.started") if e["step"]["id"] == "restore"]


def test_restore_with_replace_refused_dry_run_and_approved(seeded, tmp_path):
    client = seeded.client()
    path, _ = export_tenant(seeded, tmp_path)
    original = client.hgetall("tenant:acme:wm:active")
    client.hset("tenant:acme:wm:active", "goal", "overwritten by a bad deploy")
    client.delete("tenant:acme:cache:1")
    args = ("--var", f"input={path}", "--var", "tenant=acme", "--var", "replace=true")

    refused = run(seeded, tmp_path, "redis/restore-tenant", *args)
    assert refused.code == 3, refused.output
    assert client.hget("tenant:acme:wm:active", "goal") == "overwritten by a bad deploy"
    assert not client.exists("tenant:acme:cache:1")

    dry = run(seeded, tmp_path, "redis/restore-tenant", *args, "--dry-run")
    assert dry.code == 0, dry.output
    restore = finished(dry, "restore")
    assert restore["outcome"] == "predicted" and restore["effect"] == "destructive"
    assert restore["blast_radius"]["existing"] == 30 and restore["blast_radius"]["count"] == 31
    assert restore["predicted_changes"][0]["count"] == 31
    assert client.hget("tenant:acme:wm:active", "goal") == "overwritten by a bad deploy"
    assert not client.exists("tenant:acme:cache:1")

    approved = run(seeded, tmp_path, "redis/restore-tenant", *args, "--yes")
    assert approved.code == 0, approved.output
    assert client.hgetall("tenant:acme:wm:active") == original
    assert client.exists("tenant:acme:cache:1")
    restore = finished(approved, "restore")
    assert restore["effect"] == "destructive" and restore["result"]["restored"] == 31
    assert restore["changes"][0]["command"] == "RESTORE REPLACE" and restore["changes"][0]["replaced"] == 30
    requested = of_type(events(transcript_path(approved)), "approval.requested")[0]
    assert "OVERWRITTEN" in requested["confirm"]


def test_a_corrupt_export_restores_nothing(seeded, tmp_path):
    client = seeded.client()
    path, _ = export_tenant(seeded, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the middle of a key line
    path.write_bytes(bytes(data))
    client.delete(*key_state(client, TENANT))
    result = run(seeded, tmp_path, "redis/restore-tenant", "--var", f"input={path}", "--var", "tenant=acme", "--yes")
    assert result.code == 1, result.output
    assert "Nothing was restored" in result.output
    inspect = steps_of(result)["inspect"]["result"]
    assert inspect["ok"] is False and ("checksum" in inspect["error"] or "line" in inspect["error"])
    assert not key_state(client, TENANT)
    assert not [e for e in of_type(events(transcript_path(result)), "step.started") if e["step"]["id"] == "restore"]


def test_export_of_5000_keys_is_pipelined_and_complete(redis_server, tmp_path):
    server = redis_server()
    client = server.client()
    summary = seed_bulk(client, 5000, tenants=1)
    client.config_resetstat()
    _, backup = export_tenant(server, tmp_path, tenant="t0")
    assert backup["key_count"] == 5000 and backup["types"] == summary.by_type
    assert backup["with_ttl"] == summary.with_ttl and backup["without_ttl"] == summary.without_ttl
    stats = client.info("commandstats")
    assert stats["cmdstat_dump"]["calls"] == 5000 and stats["cmdstat_pttl"]["calls"] == 5000
    assert stats["cmdstat_scan"]["calls"] <= 10  # COUNT 1000 pages, not one SCAN per key
    print(f"\nexport of 5000 keys: {backup['seconds']}s ({backup['keys_per_s']} keys/s), {backup['bytes']} bytes")


def test_export_and_restore_show_progress_on_a_terminal(redis_server, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    server = redis_server()
    client = server.client()
    seed_bulk(client, 3000, tenants=1)
    out = tmp_path / "exports"
    out.mkdir()
    common = ["--redis", server.url, "--transcripts-dir", str(tmp_path / "t")]

    def spawn(*args: str):
        env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
        return pexpect.spawn(
            sys.executable,
            ["-m", "engine.cli", "run", *args, *common],
            cwd=str(REPO),
            encoding="utf-8",
            timeout=30,
            env=env,
        )

    child = spawn("redis/backup-tenant", "--var", "tenant=t0", "--var", f"output={out}")
    child.expect(r"export tenant:t0:\*: [\d,]+")  # the progress line, on the terminal only
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    (path,) = out.iterdir()
    keys = list(client.scan_iter("tenant:t0:*", count=1000))
    client.delete(*keys)
    child = spawn("redis/restore-tenant", "--var", f"input={path}", "--var", "tenant=t0")
    child.expect(r"\[y/N\]")
    child.sendline("y")
    child.expect(rf"restore {path.name}: [\d,]+/3,000")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert client.dbsize() == 3000


# -- redis/backup-full -----------------------------------------------------------------------------
def check_rdb(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([require_binary("redis-check-rdb"), str(path)], capture_output=True, text=True)


def loaded_dbsize(redis_server, path: Path, tmp_path: Path) -> int:
    directory = tmp_path / f"load-{path.stem}"
    directory.mkdir()
    shutil.copyfile(path, directory / "dump.rdb")
    return redis_server(directory=directory).client().dbsize()


def test_backup_full_writes_an_rdb_that_check_rdb_accepts_and_that_loads(seeded, redis_server, tmp_path):
    out = tmp_path / "backup"
    syncs = seeded.client().info("stats")["sync_full"]
    # the server forks for a full sync: confirmed (exit 3 without a terminal), never sent in a dry-run
    assert run(seeded, tmp_path, "redis/backup-full", "--var", f"output_dir={out}").code == 3
    rehearsal = run(seeded, tmp_path, "redis/backup-full", "--var", f"output_dir={out}", "--dry-run")
    assert steps_of(rehearsal)["download"]["outcome"] == "predicted"
    assert rehearsal.code == 0, rehearsal.output  # the check of the dump that was only predicted is predicted
    assert [e["held"] for e in steps_of(rehearsal)["check"]["expectations"]] == [None, None]
    assert seeded.client().info("stats")["sync_full"] == syncs and not out.exists()
    result = run(seeded, tmp_path, "redis/backup-full", "--var", f"output_dir={out}", "--yes")
    assert result.code == 0, result.output
    dump = steps_of(result)["download"]["result"]
    path = Path(dump["path"])
    assert path.parent == out and path.name.startswith("redis-dump-") and path.suffix == ".rdb"
    assert [p.name for p in out.iterdir()] == [path.name]  # no temp file left behind
    assert dump["bytes"] == path.stat().st_size and dump["mode"] == "diskless"
    assert check_rdb(path).returncode == 0
    assert loaded_dbsize(redis_server, path, tmp_path) == seeded.client().dbsize() == 91
    check = steps_of(result)["check"]["result"]
    assert check["checksum_ok"] is True and check["check_rdb"]["ok"] is True
    assert check["keys"] == 92  # the 91 seeded keys and the lease the run held on its target while it dumped
    assert [e["held"] for e in steps_of(result)["check"]["expectations"]] == [True, True]  # checked for real


def test_backup_full_from_a_password_protected_server(redis_server, tmp_path):
    password = "backup-pw-7f3a9c1e"
    server = redis_server(password=password, config={"repl-diskless-sync": "no"})  # disk mode: $<len> framing
    seed_somabrain(server.client())
    out = tmp_path / "backup"
    denied = run(server, tmp_path, "redis/backup-full", "--var", f"output_dir={out}", "--yes")
    assert denied.code == 4 and not out.exists()
    result = run(
        server, tmp_path, "redis/backup-full", "--var", f"output_dir={out}", "--yes", env={"REDISCLI_AUTH": password}
    )
    assert result.code == 0, result.output
    dump = steps_of(result)["download"]["result"]
    assert dump["mode"] == "disk" and check_rdb(Path(dump["path"])).returncode == 0
    assert loaded_dbsize(redis_server, Path(dump["path"]), tmp_path) == 91
    assert password not in result.output
    assert password not in transcript_path(result).read_text()


# -- redis/backup-verify ---------------------------------------------------------------------------
@pytest.fixture
def rdb_file(seeded, tmp_path) -> Path:
    seeded.client().save()
    path = tmp_path / "redis-dump-test.rdb"
    shutil.copyfile(seeded.directory / "dump.rdb", path)
    return path


def corrupt(path: Path, how: str) -> Path:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "flipped":
        data[len(data) // 2] ^= 0x10
    else:
        data[:5] = b"RADIS"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("how", "expected"),
    [("truncated", "is truncated"), ("flipped", "CRC64 does not match"), ("magic", "is not an RDB file")],
)
def test_backup_verify_detects_damage(seeded, rdb_file, tmp_path, how, expected):
    corrupt(rdb_file, how)
    result = run(seeded, tmp_path, "redis/backup-verify", "--var", f"path={rdb_file}")
    assert result.code == 1, result.output
    verify = steps_of(result)["verify"]
    assert any(expected in message for message in failed_messages(verify)), failed_messages(verify)
    assert verify["result"]["ok"] is False


def test_backup_verify_accepts_a_good_backup_and_counts_its_keys_when_loaded(seeded, rdb_file, tmp_path):
    result = run(seeded, tmp_path, "redis/backup-verify", "--var", f"path={rdb_file.parent}", "--var", "load=true")
    assert result.code == 0, result.output
    v = steps_of(result)["verify"]["result"]
    assert v["path"] == str(rdb_file)  # a directory: its newest *.rdb
    assert v["checksum_ok"] is True and v["check_rdb"]["ok"] is True
    assert v["keys"] == 91 and v["keys_from"] == "loaded" and v["load"]["keyspace"] == {"db0": 91}
    assert v["source_keys"] == 91 and v["keys_match"] is True
    assert "91 keys (loaded)" in steps_of(result)["verify"]["summary"]

    wrong = run(seeded, tmp_path, "redis/backup-verify", "--var", f"path={rdb_file}", "--var", "expect_keys=500")
    assert wrong.code == 1, wrong.output
    assert any("500 were expected" in m for m in failed_messages(steps_of(wrong)["verify"]))


def test_backup_verify_missing_file_says_so(seeded, tmp_path):
    result = run(seeded, tmp_path, "redis/backup-verify", "--var", f"path={tmp_path / 'redis-dump-none.rdb'}")
    assert result.code == 1, result.output
    assert "file not found" in result.output
