"""The two first procedures end to end against real redis-server processes: gate, dry-run, secrets, errors."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from engine.sandbox.seed import seed_somabrain
from engine.transcript.verify import verify_transcript
from tests.integration.cli_support import REPO, events, of_type, runbook, transcript_path

KEY = "tenant:acme:wm:active"


@pytest.fixture
def seeded(redis_server):
    server = redis_server()
    seed_somabrain(server.client())
    return server


def url(server) -> str:
    return f"redis://127.0.0.1:{server.port}/0"


def test_health_check_reports_live_values(seeded, tmp_path):
    result = runbook("run", "redis/health-check", "--redis", url(seeded), "--transcripts-dir", str(tmp_path), "--json")
    assert result.code == 0, result.output
    data = result.json()
    assert data["outcome"] == "ok" and data["procedure"] == "redis/health-check"
    steps = {s["id"]: s for s in data["steps"]}
    assert steps["ping"]["summary"] == "PONG"
    info = seeded.client().info("clients")
    # this run's own connection is one of them; the value came from the server, not a constant
    assert steps["clients"]["result"]["connected_clients"] >= 1
    assert steps["clients"]["result"]["blocked_clients"] == info["blocked_clients"]
    assert steps["memory"]["result"]["used_memory"] > 0
    assert verify_transcript(data["transcript"]).ok


def test_health_check_flags_too_many_clients(seeded, tmp_path):
    leaked = [seeded.client() for _ in range(5)]
    for client in leaked:
        client.ping()  # five idle connections held open, like a leaking application
    result = runbook(
        "run",
        "redis/health-check",
        "--redis",
        url(seeded),
        "--transcripts-dir",
        str(tmp_path),
        "--var",
        "clients_alert=3",
        "--json",
    )
    assert result.code == 1, result.output
    assert "investigate connection leaks" in result.stderr
    clients = next(s for s in result.json()["steps"] if s["id"] == "clients")
    assert clients["result"]["connected_clients"] >= 6
    assert next(e["held"] for e in clients["expectations"]) is False


def test_wm_clear_without_terminal_is_refused_and_key_survives(seeded, tmp_path):
    result = runbook(
        "run", "redis/wm-clear", "--redis", url(seeded), "--var", "tenant=acme", "--transcripts-dir", str(tmp_path)
    )
    assert result.code == 3, result.output
    assert seeded.client().exists(KEY) == 1
    evts = events(transcript_path(result))
    refused = of_type(evts, "approval.refused")
    assert len(refused) == 1 and "no terminal" in refused[0]["reason"]
    assert evts[-1]["type"] == "run.ended" and evts[-1]["outcome"] == "refused" and evts[-1]["exit_code"] == 3
    assert not [e for e in of_type(evts, "step.finished") if e["step"]["id"] == "delete" and e["outcome"] == "ok"]


def test_wm_clear_with_yes_deletes_and_records_approval_by_flag(seeded, tmp_path):
    result = runbook(
        "run",
        "redis/wm-clear",
        "--redis",
        url(seeded),
        "--var",
        "tenant=acme",
        "--yes",
        "--transcripts-dir",
        str(tmp_path),
        "--operator",
        "alice",
    )
    assert result.code == 0, result.output
    assert seeded.client().exists(KEY) == 0
    assert seeded.client().exists("tenant:globex:wm:active") == 1  # nothing else touched
    evts = events(transcript_path(result))
    started = next(e for e in of_type(evts, "step.started") if e["step"]["id"] == "delete")
    assert started["command"] == f"UNLINK {KEY}" and started["effect"] == "destructive"
    given = of_type(evts, "approval.given")
    assert len(given) == 1 and given[0]["by"] == "flag"
    assert given[0]["command_sha256"] == hashlib.sha256(started["command"].encode()).hexdigest()
    finished = next(e for e in of_type(evts, "step.finished") if e["step"]["id"] == "delete")
    assert finished["changes"] == [{"kind": "keys_removed", "count": 1, "keys": [KEY]}]
    # the command was on disk before it was sent: step.started comes before approval and finish
    assert started["seq"] < given[0]["seq"] < finished["seq"]
    assert evts[0]["operator"] == "alice"


def test_wm_clear_dry_run_leaves_key_and_records_would_run(seeded, tmp_path):
    before = seeded.client().hgetall(KEY)
    result = runbook(
        "run",
        "redis/wm-clear",
        "--redis",
        url(seeded),
        "--var",
        "tenant=acme",
        "--dry-run",
        "--transcripts-dir",
        str(tmp_path),
    )
    assert result.code == 0, result.output
    assert seeded.client().hgetall(KEY) == before
    evts = events(transcript_path(result))
    assert evts[0]["mode"] == "dry-run"
    delete = next(e for e in of_type(evts, "step.finished") if e["step"]["id"] == "delete")
    assert delete["outcome"] == "predicted"
    assert delete["blast_radius"]["keys"][0]["key"] == KEY and delete["blast_radius"]["keys"][0]["type"] == "hash"
    assert delete["predicted_changes"][0]["kind"] == "keys_removed"
    assert not of_type(evts, "approval.given")
    verify = next(e for e in of_type(evts, "step.finished") if e["step"]["id"] == "verify")
    assert [x["held"] for x in verify["expectations"]] == [None]  # predicted, not failed


def test_invalid_tenant_values_are_refused_before_connecting(seeded, tmp_path):
    dbsize = seeded.client().dbsize()
    for bad in ("a*", "x;id", "a b", "tenant:*"):
        result = runbook(
            "run",
            "redis/wm-clear",
            "--redis",
            url(seeded),
            "--var",
            f"tenant={bad}",
            "--yes",
            "--transcripts-dir",
            str(tmp_path),
        )
        assert result.code == 2, (bad, result.output)
        assert "does not match" in result.stderr
    assert seeded.client().dbsize() == dbsize
    assert not list(tmp_path.rglob("*.jsonl"))  # refused before a run existed


def test_password_never_appears_anywhere(redis_server, tmp_path):
    password = "s3cr3t-Pa55w0rd-for-test"
    server = redis_server(password=password)
    seed_somabrain(server.client())
    env = {"REDISCLI_AUTH": password}
    outputs = []
    for args in (("redis/health-check",), ("redis/wm-clear", "--var", "tenant=acme", "--yes")):
        result = runbook("run", *args, "--redis", url(server), "--transcripts-dir", str(tmp_path), "--json", env=env)
        assert result.code == 0, result.output
        outputs.append(result.output)
    assert server.client().exists(KEY) == 0
    files = list(tmp_path.rglob("*.jsonl"))
    assert len(files) == 2
    for text in [*outputs, *(f.read_text() for f in files)]:
        assert password not in text
    header = events(files[0])[0]
    assert header["target"]["redis"] == url(server)


def test_password_in_url_is_refused(seeded, tmp_path):
    result = runbook(
        "run",
        "redis/health-check",
        "--redis",
        f"redis://:hunter2@127.0.0.1:{seeded.port}/0",
        "--transcripts-dir",
        str(tmp_path),
    )
    assert result.code == 2
    assert "hunter2" not in result.output and "REDISCLI_AUTH" in result.stderr


def test_wrong_password_exits_4_with_whole_transcript(redis_server, tmp_path):
    server = redis_server(password="right-password")
    result = runbook(
        "run",
        "redis/health-check",
        "--redis",
        url(server),
        "--transcripts-dir",
        str(tmp_path),
        env={"REDISCLI_AUTH": "wrong-password"},
    )
    assert result.code == 4, result.output
    assert "wrong-password" not in result.output
    path = transcript_path(result)
    assert "wrong-password" not in path.read_text()
    evts = events(path)
    assert evts[0]["type"] == "run.started" and evts[-1]["type"] == "run.ended"
    assert evts[-1]["outcome"] == "error" and evts[-1]["exit_code"] == 4
    assert "authentication" in evts[-1]["error"].lower() or "WRONGPASS" in evts[-1]["error"]
    assert verify_transcript(path).ok


@pytest.mark.parametrize("password", ["WRONG", "a", "PASS"])
def test_a_short_wrong_password_leaves_the_servers_message_intact(redis_server, tmp_path, password):
    """Redaction replaces whole values: `WRONG` must not turn WRONGPASS into `[SECRET:...]PASS`."""
    server = redis_server(password="right-password")
    result = runbook(
        "run",
        "redis/health-check",
        "--redis",
        url(server),
        "--transcripts-dir",
        str(tmp_path),
        env={"REDISCLI_AUTH": password},
    )
    assert result.code == 4, result.output
    path = transcript_path(result)
    for text in (result.output, path.read_text()):
        assert "WRONGPASS invalid username-password pair" in text
        assert "]PASS" not in text and "SECRET:REDISCLI_AUTH" not in text


def test_unreachable_server_exits_4(redis_server, tmp_path):
    server = redis_server()
    port = server.port
    server.stop()
    result = runbook(
        "run", "redis/health-check", "--redis", f"redis://127.0.0.1:{port}/0", "--transcripts-dir", str(tmp_path)
    )
    assert result.code == 4, result.output
    assert "Restart service" in result.output  # the runbook's Common Errors advice
    assert events(transcript_path(result))[-1]["outcome"] == "error"


def _pty_run(args: list[str], answer: str) -> tuple[int, str]:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "engine.cli", *args],
        cwd=str(REPO),
        encoding="utf-8",
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"},
    )
    child.expect("Type the target name")
    child.sendline(answer)
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, child.before


def test_pty_wrong_answer_refuses_right_answer_deletes(seeded, tmp_path):
    args = [
        "run",
        "redis/wm-clear",
        "--redis",
        url(seeded),
        "--var",
        "tenant=acme",
        "--transcripts-dir",
        str(tmp_path),
        "--operator",
        "bob",
    ]
    code, _ = _pty_run(args, "production")
    assert code == 3
    assert seeded.client().exists(KEY) == 1
    code, output = _pty_run(args, f"127.0.0.1:{seeded.port}")
    assert code == 0, output
    assert seeded.client().exists(KEY) == 0
    files = sorted(tmp_path.rglob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    refused = of_type(events(files[0]), "approval.refused")
    assert refused and refused[0]["reason"] == "wrong target name typed" and refused[0]["by"] == "bob"
    given = of_type(events(files[1]), "approval.given")
    assert given and given[0]["by"] == "bob" and given[0]["method"] == "typed-target"


def test_sigint_mid_run_leaves_verifiable_transcript(seeded, tmp_path):
    procedure = tmp_path / "slow.yaml"
    procedure.write_text(
        "id: test/slow\ntitle: Slow\nsection: test\ndescription: waits\nrequires: [redis]\nsteps:\n"
        "  - id: ping\n    name: Ping\n    redis: {command: [PING]}\n"
        "  - id: wait\n    name: Wait a long time\n    wait: 30s\n"
        "  - id: after\n    name: Never reached\n    redis: {command: [PING]}\n"
    )
    transcript = tmp_path / "t.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            str(procedure),
            "--redis",
            url(seeded),
            "--transcript",
            str(transcript),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120  # a safety net for a broken engine, not a timing assertion
    while not (transcript.exists() and '"id":"wait"' in transcript.read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached the wait step"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=20)
    assert proc.returncode == 130
    evts = events(transcript)
    assert evts[-1]["type"] == "run.ended" and evts[-1]["outcome"] == "interrupted"
    assert not [e for e in evts if e.get("step", {}).get("id") == "after"]
    assert verify_transcript(transcript).ok


def test_tampered_transcript_is_found(seeded, tmp_path):
    result = runbook(
        "run",
        "redis/wm-clear",
        "--redis",
        url(seeded),
        "--var",
        "tenant=acme",
        "--yes",
        "--transcripts-dir",
        str(tmp_path),
    )
    path = transcript_path(result)
    assert runbook("transcript", "verify", str(path)).code == 0
    lines = path.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if '"type":"approval.given"' in line)
    lines[index] = lines[index].replace('"by":"flag"', '"by":"mallory"')  # someone rewrites who approved
    path.write_text("\n".join(lines) + "\n")
    check = runbook("transcript", "verify", str(path))
    assert check.code == 1
    assert f"line {index + 2}" in check.output  # the next line no longer chains to the edited one
