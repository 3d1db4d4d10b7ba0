"""Hostile text from every outside source never reaches the terminal raw: a real run on a pty.

Key names and values from a real redis-server, a --var value, a step name from the procedure file and
an operator's note each carry every C0/C1 control, terminal escape sequences and every bidi control.
What the terminal receives holds none of them (only our own colours); the transcript keeps the exact
data.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from engine.transcript.verify import verify_transcript
from tests.hostile_text import BIDI, C0, DEL_AND_C1, INVISIBLE, SEQUENCES, hostile_strings, raw_controls
from tests.integration.cli_support import REPO, events, of_type, runbook

pexpect = pytest.importorskip("pexpect")

ALL = hostile_strings()[-1]  # every control and sequence in one string
ARGV_ALL = hostile_strings(argv_safe=True)[-1]
GROUPS = ["c0 " + "".join(C0[1:]), "c1 " + "".join(DEL_AND_C1), "bidi " + "".join(BIDI), "inv " + "".join(INVISIBLE)]

PROCEDURE = """\
id: test/hostile-display
title: Show what the server holds
section: test
description: every outside string on the terminal
requires: [redis]
params:
  why:
    type: string
    description: free text shown in the gate
steps:
  - id: list
    name: {name}
    keyspace:
      list:
        match: "hostile:*"
        checks: [type]
    register: found
    show: >-
      {{% for t, rows in found.tenants.items() %}}{{% for r in rows %}}{{{{ r.key }}}} {{% endfor %}}{{% endfor %}}
  - id: value
    name: Read the hostile value
    redis: {{command: [GET, "hostile:value"]}}
    show: "{{{{ result }}}}"
  - id: delete
    name: Delete the hostile keys
    keyspace:
      delete_matching:
        match: "hostile:*"
        max_keys: 1000
    confirm: "Delete them? {{{{ why }}}}"
"""


@pytest.fixture
def hostile_server(redis_server):
    server = redis_server()
    client = server.client()
    for index, text in enumerate(hostile_strings()):
        client.set(f"hostile:{index}:{text}", "x")
    client.set("hostile:value", ALL)
    return server


def test_hostile_server_data_params_and_file_text_reach_the_terminal_escaped(hostile_server, tmp_path):
    procedure = tmp_path / "hostile.yaml"
    procedure.write_text(PROCEDURE.format(name=json.dumps("List " + "\x1b[5m\u202e\x9b6n" + " keys")))
    transcript = tmp_path / "t.jsonl"
    keys_before = hostile_server.client().dbsize()
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "engine.cli",
            "run",
            str(procedure),
            "--redis",
            f"redis://127.0.0.1:{hostile_server.port}/0",
            "--var",
            f"why={ARGV_ALL}",
            "--transcript",
            str(transcript),
        ],
        cwd=str(REPO),
        encoding="utf-8",
        codec_errors="surrogateescape",  # an undecodable byte on the terminal would show as a surrogate
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"},
    )
    seen = io.StringIO()
    child.logfile_read = seen  # everything the terminal received, from the first byte
    child.expect("Type the target name")  # the gate panel is on screen; the run waits for the answer
    child.sendline("no")
    child.expect(pexpect.EOF)
    child.close()
    output = seen.getvalue()
    assert child.exitstatus == 3, output
    assert raw_controls(output, pty=True) == []
    assert "\\x1b[5m" in output and "\\u202e" in output and "\\x9b6n" in output  # shown, visibly
    assert "\\x1b]0;pwned\\x07" in output  # the OSC sequence, from the value, the keys and the param
    assert hostile_server.client().dbsize() == keys_before  # declined: nothing changed
    # the transcript keeps the exact data
    evts = events(transcript)
    requested = of_type(evts, "approval.requested")[0]
    assert ARGV_ALL in requested["confirm"]
    assert any(e.get("result") == ALL for e in of_type(evts, "step.finished"))  # the value, byte for byte
    assert verify_transcript(transcript).ok


@pytest.mark.parametrize("text", [*SEQUENCES, ARGV_ALL])
def test_a_hostile_param_error_is_escaped(text, tmp_path):
    result = runbook(
        "run", "redis/wm-clear", "--redis", "redis://127.0.0.1:1/0", "--var", f"tenant={text}",
        "--transcripts-dir", str(tmp_path),
    )  # fmt: skip
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    assert raw_controls(result.output) == []


def test_hostile_notes_reach_the_terminal_escaped_in_every_format(tmp_path):
    for text in [*GROUPS, ARGV_ALL]:  # each group of controls in one note, then all of them
        noted = runbook("note", text, "--incident", "INC-9", "--operator", text, "--transcripts-dir", str(tmp_path))
        assert noted.code == 0, noted.output
        assert raw_controls(noted.output) == []
    for args in (
        ["timeline"],
        ["timeline", "--format", "html"],
        ["timeline", "--format", "json"],
        ["postmortem"],
    ):
        result = runbook(*args, "--incident", "INC-9", "--transcripts-dir", str(tmp_path))
        assert result.code == 0, result.output
        assert raw_controls(result.output) == [], args


def test_closed_terminal_output_is_not_needed_for_the_error(tmp_path):
    """An error printed to a closed stderr is dropped quietly: the exit code still says it."""
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "redis/nope", "--redis", "redis://127.0.0.1:1/0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=str(REPO),
        timeout=60,
    )
    assert proc.returncode == 2


@pytest.fixture
def noted(tmp_path):
    result = runbook(
        "note", "<svg onload=alert(1)> [c](javascript:alert(1))", "--incident", "INC-9",
        "--operator", "<img src=x onerror=alert(1)>", "--transcripts-dir", str(tmp_path),
    )  # fmt: skip
    assert result.code == 0, result.output
    return tmp_path


def test_output_named_html_gets_html(noted):
    page = noted / "out" / "t.html"
    result = runbook("timeline", "--incident", "INC-9", "--transcripts-dir", str(noted), "-o", str(page))
    assert result.code == 0, result.output
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" not in text and "&lt;svg onload=alert(1)&gt;" in text


@pytest.mark.parametrize(
    "args",
    [
        ["timeline", "--format", "markdown", "-o", "x.html"],
        ["timeline", "--format", "html", "-o", "x.md"],
        ["timeline", "--format", "json", "-o", "x.htm"],
        ["postmortem", "-o", "x.html"],
        ["postmortem", "-o", "x.json"],
    ],
)
def test_output_name_and_format_that_disagree_are_refused(noted, args):
    *head, flag, name = args
    target = noted / name
    result = runbook(*head, flag, str(target), "--incident", "INC-9", "--transcripts-dir", str(noted))
    assert result.code == 2, result.output
    assert "Traceback" not in result.output and "--output" in result.stderr
    assert not target.exists()


def test_an_unknown_extension_takes_the_format_given(noted):
    target = noted / "timeline.txt"
    result = runbook(
        "timeline", "--format", "html", "-o", str(target), "--incident", "INC-9", "--transcripts-dir", str(noted)
    )
    assert result.code == 0, result.output
    assert target.read_text().startswith("<!DOCTYPE html>")
