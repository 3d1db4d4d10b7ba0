"""Signals that end a run at the gate: a real `runbook run` on a pty against a real redis-server.

Each test waits for the gate's prompt text (the process is then blocked reading the terminal, held
there by the test), sends the signal, and checks the run ended cleanly: approval refused, run.ended
with the reason and 128+signum, a transcript that verifies, nothing changed, no traceback.
"""

from __future__ import annotations

import io
import os
import signal
import sys

import pytest

from engine.sandbox.seed import seed_somabrain
from engine.transcript.verify import verify_transcript
from tests.integration.cli_support import REPO, events, of_type, runbook

pexpect = pytest.importorskip("pexpect")

KEY = "tenant:acme:wm:active"


@pytest.fixture
def seeded(redis_server):
    server = redis_server()
    seed_somabrain(server.client())
    return server


def _spawn_at_gate(server, transcript, *extra: str):
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "engine.cli",
            "run",
            "redis/wm-clear",
            "--redis",
            f"redis://127.0.0.1:{server.port}/0",
            "--var",
            "tenant=acme",
            "--transcript",
            str(transcript),
            "--operator",
            "bob",
            *extra,
        ],
        cwd=str(REPO),
        encoding="utf-8",
        timeout=60,
        env={**{k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}, "PYTHONPATH": str(REPO)},
    )
    child.expect("Type the target name")  # blocked on the terminal now: the test holds the gate
    return child


def _assert_ended_by(transcript, server, signum: int) -> None:
    name = signal.Signals(signum).name
    evts = events(transcript)
    refused = of_type(evts, "approval.refused")
    assert len(refused) == 1 and refused[0]["reason"] == f"interrupted by {name}" and refused[0]["by"] == "bob"
    assert evts[-1]["type"] == "run.ended"
    assert evts[-1]["outcome"] == "interrupted" and evts[-1]["exit_code"] == 128 + signum
    assert evts[-1]["error"] == f"interrupted by {name}"
    assert verify_transcript(transcript).ok
    assert runbook("transcript", "verify", str(transcript)).code == 0
    assert server.client().exists(KEY) == 1  # nothing changed
    assert not of_type(evts, "approval.given")


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_signal_at_the_gate_ends_the_run_cleanly(seeded, tmp_path, signum):
    transcript = tmp_path / "t.jsonl"
    child = _spawn_at_gate(seeded, transcript)
    child.kill(signum)
    child.expect(pexpect.EOF)
    child.close()
    output = child.before
    assert child.exitstatus == 128 + signum, output
    assert child.signalstatus is None  # exited by itself, not killed by the signal
    assert "Traceback" not in output
    assert f"outcome: interrupted (exit {128 + signum}): interrupted by {signal.Signals(signum).name}" in output
    _assert_ended_by(transcript, seeded, signum)


def test_ctrl_c_typed_at_the_gate_is_130(seeded, tmp_path):
    transcript = tmp_path / "t.jsonl"
    child = _spawn_at_gate(seeded, transcript)
    child.sendintr()  # the terminal's own Ctrl-C, delivered by the line discipline
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130, child.before
    assert "Traceback" not in child.before
    _assert_ended_by(transcript, seeded, signal.SIGINT)


def test_terminal_hang_up_ends_the_run_as_sighup(seeded, tmp_path):
    """The SSH session drops: the pty master closes, the kernel sends SIGHUP and reads fail."""
    transcript = tmp_path / "t.jsonl"
    child = _spawn_at_gate(seeded, transcript)
    os.close(child.child_fd)  # the terminal goes away; nobody reads what the run prints after this
    child.child_fd = -1
    _, status = os.waitpid(child.pid, 0)
    child.terminated = True
    assert os.WIFEXITED(status), status  # ended by itself, not killed
    assert os.WEXITSTATUS(status) == 129
    _assert_ended_by(transcript, seeded, signal.SIGHUP)


def test_end_of_input_at_the_gate_is_a_refusal(seeded, tmp_path):
    transcript = tmp_path / "t.jsonl"
    child = _spawn_at_gate(seeded, transcript)
    child.sendeof()  # Ctrl-D: the terminal says there will be no answer
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3, child.before
    assert "Traceback" not in child.before
    evts = events(transcript)
    refused = of_type(evts, "approval.refused")
    assert len(refused) == 1 and "no answer (input closed)" in refused[0]["reason"]
    assert evts[-1]["type"] == "run.ended" and evts[-1]["outcome"] == "refused" and evts[-1]["exit_code"] == 3
    assert verify_transcript(transcript).ok
    assert seeded.client().exists(KEY) == 1


def test_closed_stdout_ends_the_run_as_sigpipe(seeded, tmp_path):
    """`runbook run ... | head -1`: the reader goes away; the run stops, recorded, exit 141, no traceback."""
    import subprocess

    transcript = tmp_path / "t.jsonl"
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read stdout
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            "redis/health-check",
            "--redis",
            f"redis://127.0.0.1:{seeded.port}/0",
            "--transcript",
            str(transcript),
        ],
        stdin=subprocess.DEVNULL,
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
        timeout=60,
    )
    os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    evts = events(transcript)
    assert evts[-1]["type"] == "run.ended"
    assert evts[-1]["outcome"] == "interrupted" and evts[-1]["error"] == "interrupted by SIGPIPE"
    assert verify_transcript(transcript).ok


PROMPTS = """\
id: test/prompts
title: Ask twice
section: test
description: a secret and a plain answer, typed on the terminal
requires: [redis]
params:
  token:
    type: string
    secret: true
    description: a secret typed at the prompt
  size:
    type: integer
    description: a number typed at the prompt
steps:
  - id: token
    name: Ask for the token
    prompt: {message: "Token", param: token}
  - id: size
    name: Ask for the size
    prompt: {message: "Size", param: size}
    show: "size {{ size }}"
"""


def test_prompts_read_a_secret_without_echo_and_ask_again_after_a_bad_value(seeded, tmp_path):
    procedure = tmp_path / "prompts.yaml"
    procedure.write_text(PROMPTS)
    transcript = tmp_path / "t.jsonl"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "engine.cli", "run", str(procedure), "--redis", f"redis://127.0.0.1:{seeded.port}/0",
         "--transcript", str(transcript)],
        cwd=str(REPO), encoding="utf-8", timeout=60,
        env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"},
    )  # fmt: skip
    seen = io.StringIO()
    child.logfile_read = seen  # all the terminal showed
    child.expect("Token: ")
    child.sendline("s3cret-typed")
    child.expect("Size: ")
    child.sendline("twelve")
    child.expect("Size: ")  # not a number: asked again
    child.sendline("12")
    child.expect(pexpect.EOF)
    child.close()
    output = seen.getvalue()
    assert child.exitstatus == 0, output
    assert "size 12" in output and "twelve" in output  # a plain answer is echoed as typed
    assert "s3cret-typed" not in output  # a secret is neither echoed nor shown
    assert "s3cret-typed" not in transcript.read_text()
