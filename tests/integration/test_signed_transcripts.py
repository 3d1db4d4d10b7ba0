"""Signed transcripts: approvals and the run's end carry the operator's SSH signature (SSHSIG).

Real keys made by ssh-keygen, a real ssh-agent, a real redis-server; OpenSSH's own `ssh-keygen -Y verify`
checks that what we write is the standard format.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.transcript.allowed_signers import load_allowed_signers
from engine.transcript.signer import NAMESPACE
from engine.transcript.verify import verify_transcript
from engine.transcript.writer import serialise
from tests.conftest import require_binary
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


@pytest.fixture
def server(redis_server):
    return redis_server()


@pytest.fixture
def keys(tmp_path):
    require_binary("ssh-keygen")
    out = {}
    for name, kind in (("alice", "ed25519"), ("mallory", "ed25519"), ("rsa", "rsa")):
        path = tmp_path / "keys" / name
        path.parent.mkdir(exist_ok=True)
        extra = ["-b", "2048"] if kind == "rsa" else []
        subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", name, "-f", str(path)], check=True)
        out[name] = path
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(
        f'alice@example.org namespaces="{NAMESPACE}" {(out["alice"].with_suffix(".pub")).read_text()}'
        f"rsa@example.org {(out['rsa'].with_suffix('.pub')).read_text()}"
    )
    out["allowed"] = allowed
    return out


def _procedure(tmp_path: Path) -> None:
    (tmp_path / "procs").mkdir(exist_ok=True)
    (tmp_path / "procs" / "two.yaml").write_text(f"id: test/two\n{HEADER}{TWO_WRITES}")


def _run(server, tmp_path, *args, env=None):
    _procedure(tmp_path)
    return runbook(
        "run",
        "test/two",
        "--redis",
        f"redis://127.0.0.1:{server.port}/0",
        "--procedures",
        str(tmp_path / "procs"),
        "--transcripts-dir",
        str(tmp_path / "t"),
        "--operator",
        "alice@example.org",
        *args,
        env=env,
    )


def _verify(path, allowed=None):
    return verify_transcript(path, load_allowed_signers(allowed) if allowed else None)


def test_a_key_file_signs_every_approval_and_the_end_and_verify_names_the_signer(server, tmp_path, keys):
    result = _run(server, tmp_path, "--yes", "--signing-key", str(keys["alice"]))
    assert result.code == 0, result.output
    assert server.client().get("second") == "2"
    path = transcript_path(result)
    evts = events(path)
    signed = [e for e in evts if "signature" in e]
    assert [e["type"] for e in signed] == ["approval.given", "approval.given", "run.ended"]
    assert evts[0]["signing_key"]["source"] == "file"
    text = path.read_text()
    assert "PRIVATE KEY" not in text and keys["alice"].read_text().splitlines()[1] not in text

    report = _verify(path, keys["allowed"])
    assert report.ok, report.render()
    assert "signed by alice@example.org" in report.signing
    assert "unsigned tail" not in report.signing

    cli = runbook("transcript", "verify", str(path), "--allowed-signers", str(keys["allowed"]))
    assert cli.code == 0 and "alice@example.org" in cli.stdout


def test_openssh_verifies_our_signatures(server, tmp_path, keys):
    """The signature is standard SSHSIG: ssh-keygen -Y verify accepts it over the line without the field."""
    result = _run(server, tmp_path, "--yes", "--signing-key", str(keys["alice"]))
    end = of_type(events(transcript_path(result)), "run.ended")[0]
    payload = serialise({k: v for k, v in end.items() if k != "signature"})
    sig = tmp_path / "end.sig"
    sig.write_text(end["signature"]["armored"] + "\n")
    verify = ["ssh-keygen", "-Y", "verify", "-f", str(keys["allowed"]), "-I", "alice@example.org"]
    verify += ["-n", NAMESPACE, "-s", str(sig)]
    check = subprocess.run(verify, input=payload, capture_output=True)
    assert check.returncode == 0, check.stderr
    tampered = subprocess.run(verify, input=payload.replace(b'"outcome"', b'"outcomE"'), capture_output=True)
    assert tampered.returncode != 0


def test_an_rsa_key_signs_with_sha2(server, tmp_path, keys):
    result = _run(server, tmp_path, "--yes", "--signing-key", str(keys["rsa"]))
    assert result.code == 0, result.output
    report = _verify(transcript_path(result), keys["allowed"])
    assert report.ok, report.render()
    assert "rsa@example.org" in report.signing


def _rechain(path: Path, edit) -> None:
    """What a forger does: change a line, then recompute every later prev_sha256 (signatures kept)."""
    lines = path.read_bytes().splitlines()
    out: list[bytes] = []
    prev = None
    for raw in lines:
        event = json.loads(raw)
        event = edit(event)
        if out:
            event["prev_sha256"] = prev
        line = serialise(event)
        out.append(line)
        prev = hashlib.sha256(line).hexdigest()
    path.write_bytes(b"\n".join(out) + b"\n")


def test_a_rewritten_and_rechained_approval_fails(server, tmp_path, keys):
    result = _run(server, tmp_path, "--yes", "--signing-key", str(keys["alice"]))
    path = transcript_path(result)
    assert _verify(path, keys["allowed"]).ok

    def forge(event):
        if event["type"] == "approval.given":
            event["by"] = "bob"
        return event

    _rechain(path, forge)
    unsigned_check = verify_transcript(path)  # the chain alone is fine again: that is the attack
    assert not unsigned_check.ok  # ... but the signatures it carries no longer match
    report = _verify(path, keys["allowed"])
    assert not report.ok
    assert any("does not match the signed line" in p.message for p in report.problems)

    def strip(event):
        event.pop("signature", None)
        event.pop("signing_key", None)
        return event

    _rechain(path, strip)  # a forger who also strips every signature: unsigned, so refused with signers
    report = _verify(path, keys["allowed"])
    assert not report.ok
    assert any("not signed" in p.message or "no line is signed" in p.message for p in report.problems)
    assert verify_transcript(path).signing == "unsigned"


def test_a_key_not_in_allowed_signers_is_refused(server, tmp_path, keys):
    result = _run(server, tmp_path, "--yes", "--signing-key", str(keys["mallory"]))
    assert result.code == 0, result.output
    path = transcript_path(result)
    assert verify_transcript(path).ok  # a valid signature by some key ...
    report = _verify(path, keys["allowed"])  # ... that nobody vouches for
    assert not report.ok
    assert any("not in the allowed signers" in p.message for p in report.problems)


def test_an_unsigned_run_verifies_its_chain_and_says_so(server, tmp_path, keys):
    result = _run(server, tmp_path, "--yes")
    path = transcript_path(result)
    report = verify_transcript(path)
    assert report.ok and report.signing == "unsigned"
    assert "unsigned" in report.render()
    assert not _verify(path, keys["allowed"]).ok


def test_an_agent_key_signs(server, tmp_path, keys):
    require_binary("ssh-agent")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        env = {"SSH_AUTH_SOCK": str(sock)}
        deadline = time.monotonic() + 60  # a safety net: the agent binds its socket before it serves
        while not sock.exists():
            assert agent.poll() is None and time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.02)
        added = subprocess.run(["ssh-add", str(keys["alice"])], env={**os.environ, **env}, capture_output=True)
        assert added.returncode == 0, added.stderr
        result = _run(server, tmp_path, "--yes", "--signing-key", str(keys["alice"].with_suffix(".pub")), env=env)
        assert result.code == 0, result.output
        path = transcript_path(result)
        assert events(path)[0]["signing_key"]["source"] == "agent"
        report = _verify(path, keys["allowed"])
        assert report.ok, report.render()
        assert "alice@example.org" in report.signing
        # the same .pub without an agent is a clear usage error, before anything runs
        missing = _run(
            server,
            tmp_path,
            "--yes",
            "--signing-key",
            str(keys["alice"].with_suffix(".pub")),
            env={"SSH_AUTH_SOCK": ""},
        )
        assert missing.code == 2 and "SSH_AUTH_SOCK" in missing.output
    finally:
        agent.terminate()
        agent.wait()


def test_an_encrypted_or_bad_key_is_a_usage_error_before_anything_runs(server, tmp_path, keys):
    locked = tmp_path / "keys" / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret-pass", "-f", str(locked)], check=True)
    result = _run(server, tmp_path, "--yes", "--signing-key", str(locked))
    assert result.code == 2 and "encrypted" in result.output
    assert server.client().get("first") is None
    garbage = tmp_path / "garbage"
    garbage.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-key\n")
    result = _run(server, tmp_path, "--yes", "--signing-key", str(garbage))
    assert result.code == 2 and "not-a-key" not in result.output
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = _run(server, tmp_path, "--yes", "--signing-key", str(fifo))
    assert result.code == 2 and "not a regular file" in result.output


def test_a_run_killed_mid_way_verifies_up_to_its_last_signature(server, tmp_path, keys):
    """kill -9 at the second prompt: the first approval is signed, the tail after it is named unsigned."""
    pexpect = pytest.importorskip("pexpect")
    _procedure(tmp_path)
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "engine.cli",
            "run",
            "test/two",
            "--redis",
            f"redis://127.0.0.1:{server.port}/0",
            "--procedures",
            str(tmp_path / "procs"),
            "--transcripts-dir",
            str(tmp_path / "t"),
            "--signing-key",
            str(keys["alice"]),
            "--operator",
            "alice@example.org",
        ],
        cwd=str(REPO),
        encoding="utf-8",
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"},
    )
    child.expect(r"\[y/N\]")
    child.sendline("y")
    child.expect(r"\[y/N\]")  # the second write is waiting for its answer: kill the runbook now
    os.kill(child.pid, signal.SIGKILL)
    child.expect(pexpect.EOF)
    child.close()
    assert server.client().get("first") == "1" and server.client().get("second") is None
    path = next((tmp_path / "t").glob("**/*.jsonl"))
    report = _verify(path, keys["allowed"])
    assert report.ok, report.render()
    assert "unsigned tail from line" in report.signing
    assert any("not covered by a signature" in w for w in report.warnings)
