"""`--yes` approves one execution of one rendered command, not a loop: the caps on repeated changes.

A goto loop under `--yes` used to write until the 10,000-step cap. Now the 4th visit of one changing step,
or the 51st approved change of a run, is not covered by `--yes`: refused (exit 3) without a terminal,
asked again with one. Counted on a real redis-server.
"""

from __future__ import annotations

import os
import sys

import pytest

from engine.run.runner import MAX_CHANGE_VISITS, MAX_CHANGES_BY_FLAG
from tests.integration.cli_support import REPO, events, of_type, runbook

HEADER = "title: T\nsection: test\ndescription: test procedure\nrequires: [redis]\n"
COUNTER = "runbook:test:loop"

GOTO_LOOP = f"""\
steps:
  - id: incr
    name: Count one more
    redis: {{command: [INCR, "{COUNTER}"]}}
    confirm: Add one to the counter?
  - id: check
    name: Never satisfied
    redis: {{command: [GET, "{COUNTER}"]}}
    register: n
    expect:
      - that: n | int < 0
        message: not done yet
    on_failure: {{goto: incr}}
"""

# Every item is one gated change of one visit: only the per-run cap can stop it.
MANY_CHANGES = f"""\
steps:
  - id: incr
    name: Count one more per item
    foreach: range(80) | list
    redis: {{command: [INCR, "{COUNTER}"]}}
    confirm: Add one to the counter?
"""


def write(directory, name, body):
    path = directory / f"{name}.yaml"
    path.write_text(f"id: test/{name}\n{HEADER}{body}")
    return path


def argv(server, tmp_path, name):
    return [
        "run",
        f"test/{name}",
        "--redis",
        f"redis://127.0.0.1:{server.port}/0",
        "--procedures",
        str(tmp_path),
        "--transcripts-dir",
        str(tmp_path / "t"),
    ]


def transcript(tmp_path):
    (path,) = (tmp_path / "t").rglob("*.jsonl")
    return events(path)


def test_a_goto_loop_under_yes_stops_at_the_visit_cap(redis_server, tmp_path):
    server = redis_server()
    write(tmp_path, "loop", GOTO_LOOP)
    result = runbook(*argv(server, tmp_path, "loop"), "--yes", "--json")
    assert result.code == 3, result.output[-2000:]
    assert server.client().get(COUNTER) == str(MAX_CHANGE_VISITS) == "3"  # 3 writes reached Redis, not 5,000
    assert "for the 4th time in this run (a goto loop?)" in result.output
    assert "--yes covers at most 3 visits of one changing step" in result.output
    evts = transcript(tmp_path)
    assert [e["method"] for e in of_type(evts, "approval.given")] == ["flag"] * 3
    (refused,) = of_type(evts, "approval.refused")
    assert refused["step"]["id"] == "incr" and "no terminal to ask on" in refused["reason"]
    requested = of_type(evts, "approval.requested")
    assert [bool(e.get("repeat")) for e in requested] == [False, False, False, True]
    assert evts[-1]["type"] == "run.ended" and evts[-1]["outcome"] == "refused"


def test_a_run_under_yes_stops_at_the_change_cap(redis_server, tmp_path):
    server = redis_server()
    write(tmp_path, "many", MANY_CHANGES)
    result = runbook(*argv(server, tmp_path, "many"), "--yes")
    assert result.code == 3, result.output[-2000:]
    assert server.client().get(COUNTER) == str(MAX_CHANGES_BY_FLAG) == "50"
    assert "--yes covers at most 50 in one run" in result.output


def test_past_the_cap_the_operator_is_asked_again_on_a_terminal(redis_server, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    server = redis_server()
    write(tmp_path, "loop", GOTO_LOOP)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "engine.cli", *argv(server, tmp_path, "loop"), "--yes", "--operator", "carol"],
        cwd=str(REPO),
        encoding="utf-8",
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"},
    )
    child.expect(r"Proceed\? \[y/N\]")  # the 4th visit: --yes no longer answers
    panel = child.before
    assert server.client().get(COUNTER) == "3"
    child.sendline("y")
    child.expect(r"Proceed\? \[y/N\]")  # and every one after it is asked too
    assert server.client().get(COUNTER) == "4"
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3, panel + child.before
    assert "again  : step 'incr' is about to change something for the 4th time" in panel
    assert server.client().get(COUNTER) == "4"
    methods = [e["method"] for e in of_type(transcript(tmp_path), "approval.given")]
    assert methods == ["flag", "flag", "flag", "yes"]
