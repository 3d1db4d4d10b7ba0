"""Rehearsals that can fail: each guard is shown failing on the broken input it exists for.

- fault first: a scenario whose incident is not there is `invalid`, and a fault that injects nothing is an error;
- the dry-run leaves the world as it was: a step that writes under a `read` label is caught in the dry-run;
- every change is gated: a step that writes without an approval in the real run is caught;
- time_limit interrupts a procedure that polls forever; the CLI exits 1 on an undeclared prediction difference,
  2 on an unknown procedure or an empty --scenarios directory, and rehearses files and --procedures dirs.

The broken step is a test-only kind, `poke`, registered here: declared read, it SETs a key with its own
redis-py connection, the one thing no shipped kind can do (they only reach Redis through the adapter).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.rehearsal import scenario as scenarios
from engine.rehearsal.rehearse import rehearse
from tests.integration.cli_support import events, of_type, runbook

POKE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["key"],
    "properties": {"key": {"type": "string"}, "live_only": {"type": "boolean"}},
}


def _plan_poke(body: dict[str, Any], ctx: Any) -> Any:
    from engine.spec.model import Effect
    from engine.steps import Action

    endpoint = ctx.connections.target.redis

    def execute() -> str:
        if body.get("live_only") and ctx.dry_run:
            return "not in a dry-run"
        with redis.Redis(host=endpoint.host, port=endpoint.port, password=endpoint.password) as client:
            client.set(body["key"], "poked")
        return "poked"

    return Action(effect=Effect.READ, where="redis", command=f"(test) SET {body['key']} poked", execute=execute)


@pytest.fixture
def poke_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register `poke` for this test, and validate procedures against a schema that knows it."""
    from engine import steps
    from engine.spec import schema

    steps.kinds()
    monkeypatch.setitem(
        steps._REGISTRY,
        "poke",
        steps.StepKind(name="poke", schema=POKE_SCHEMA, plan=_plan_poke, description="test only"),
    )
    original = schema.load_schema
    monkeypatch.setattr(
        schema,
        "load_schema",
        lambda name: schema.build_procedure_schema() if name == "procedure.schema.json" else original(name),
    )


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


POKE_PROCEDURE = """\
id: test/poke
title: Clear a tenant's working memory, and poke a key
section: tests
description: A test procedure.
requires: [redis]
params:
  tenant: {type: string, required: true, pattern: '^[a-z]+$'}
steps:
  - id: delete
    name: Delete the working memory
    redis:
      command: [UNLINK, "tenant:{{ tenant }}:wm:active"]
    confirm: Delete it?
  - id: poke
    name: Look at something (it writes)
    poke: %s
"""

POKE_SCENARIO = """\
procedure: test/poke
scenarios:
  - name: clear
    description: The working memory is cleared; the poke is the defect under test.
    world: {ssh: false, http: false}
    params: {tenant: acme}
    success:
      - that: not exists("tenant:acme:wm:active")
        message: the working memory is gone
"""


def rehearse_poke(tmp_path: Path, poke: str) -> Any:
    procedures = tmp_path / "procedures"
    write(procedures, "test/poke.yaml", POKE_PROCEDURE % poke)
    (loaded,) = scenarios.load_file(write(procedures, "test/scenarios/poke.yaml", POKE_SCENARIO))
    return rehearse(
        loaded,
        transcripts_dir=tmp_path / "t",
        procedure_ref=str(procedures / "test" / "poke.yaml"),
        extra_procedures=(procedures,),
    )


# -- the dry-run and the gate ---------------------------------------------------------------------------------
def test_a_dry_run_that_changes_a_key_fails_the_rehearsal(tmp_path, poke_kind):
    result = rehearse_poke(tmp_path, '{key: "poked:by-a-read-step"}')
    assert result.error is None, result.error
    assert result.resolved is True  # the incident itself is fixed...
    assert result.passed is False  # ...but the dry-run wrote
    assert result.dry_run_changes == ["key poked:by-a-read-step appeared"]
    assert "the dry-run changed the world: key poked:by-a-read-step appeared" in result.failed_checks
    # and in the real run the same step wrote without asking
    assert len(result.ungated_changes) == 1
    assert result.ungated_changes[0].startswith("step poke (read) changed the world without an approval")


def test_a_change_made_without_an_approval_fails_the_rehearsal(tmp_path, poke_kind):
    result = rehearse_poke(tmp_path, '{key: "poked:live", live_only: true}')
    assert result.error is None, result.error
    assert result.dry_run_changes == []  # the dry-run was clean: only the gate check can see it
    assert result.resolved is True and result.passed is False
    (violation,) = result.ungated_changes
    assert violation.startswith("step poke (read) changed the world without an approval")
    assert "the dataset changed" in violation
    real = events(Path(result.transcript))
    assert [e["step"]["id"] for e in of_type(real, "approval.given")] == ["delete"]  # approved: the delete alone


def test_the_same_change_declared_and_approved_passes(tmp_path, poke_kind):
    procedure = POKE_PROCEDURE.replace("    poke: %s\n", "    effect: write\n    confirm: Poke it?\n    poke: %s\n")
    procedures = tmp_path / "procedures"
    write(procedures, "test/poke.yaml", procedure % '{key: "poked:gated"}')
    (loaded,) = scenarios.load_file(write(procedures, "test/scenarios/poke.yaml", POKE_SCENARIO))
    result = rehearse(
        loaded,
        transcripts_dir=tmp_path / "t",
        procedure_ref=str(procedures / "test" / "poke.yaml"),
        extra_procedures=(procedures,),
    )
    assert result.error is None and result.dry_run_changes == [] and result.ungated_changes == []
    assert result.passed is True, result.failed_checks


# -- fault first ---------------------------------------------------------------------------------------------
NO_INCIDENT = """\
procedure: redis/wm-clear
scenarios:
  - name: nothing-to-clear
    description: The fault is missing; acme's working memory does not exist... for another tenant name.
    world: {ssh: false, http: false}
    params: {tenant: acme}
    success:
      - that: not exists("tenant:nobody:wm:active")
        message: nobody's working memory is gone
      - that: count("tenant:*") > 0
        message: the other tenants are still there
  - name: healthy-server
    description: emergency-oom on a server that is not out of memory (the fill was forgotten).
    world: {ssh: false, http: false, config: {maxmemory: 64mb, maxmemory-policy: noeviction}}
    params: {tenant: acme}
    incident:
      - that: not can_write()
        message: writes are refused (OOM)
    success:
      - that: can_write()
        message: writes succeed
      - that: config("maxmemory-policy") == "allkeys-lru"
        message: allkeys-lru
  - name: deletes-nothing
    description: A fault that injects nothing is an error of the scenario, not a rehearsal.
    world: {ssh: false, http: false}
    fault:
      - delete: "tenant:nobody:*"
    params: {tenant: acme}
    success:
      - that: not exists("tenant:acme:wm:active")
        message: acme's working memory is gone
"""


def test_a_scenario_whose_incident_is_not_there_is_invalid_and_the_procedure_never_runs(tmp_path):
    path = write(tmp_path, "s/redis/scenarios/wm-clear.yaml", NO_INCIDENT)
    by_name = {s.name: s for s in scenarios.load_file(path)}

    nothing = rehearse(by_name["nothing-to-clear"], transcripts_dir=tmp_path / "t")
    assert nothing.passed is False and nothing.resolved is False and nothing.verdict == "invalid"
    assert nothing.invalid == [
        "every success check already holds before the procedure runs: nobody's working memory is gone; "
        "the other tenants are still there"
    ]
    assert nothing.transcript is None and nothing.dry_run_transcript is None  # nothing ran

    healthy = rehearse(by_name["healthy-server"], transcripts_dir=tmp_path / "t")
    assert healthy.verdict == "invalid" and healthy.passed is False
    assert healthy.invalid == ["incident check does not hold: writes are refused (OOM)"]

    empty = rehearse(by_name["deletes-nothing"], transcripts_dir=tmp_path / "t")
    assert empty.passed is False and empty.verdict == "error"
    assert "delete: no key matches 'tenant:nobody:*'; nothing was deleted" in empty.error


def test_the_cli_reports_an_invalid_rehearsal_and_exits_1(tmp_path):
    write(tmp_path, "s/redis/scenarios/wm-clear.yaml", NO_INCIDENT.split("  - name: healthy-server")[0])
    result = runbook(
        "rehearse", "--all", "--scenarios", str(tmp_path / "s"), "--transcripts-dir", str(tmp_path / "t"), cwd=tmp_path
    )
    assert result.code == 1, result.output
    assert "invalid" in result.stdout.splitlines()[2]
    assert "invalid: the incident is not there: every success check already holds" in result.stdout
    assert "0/1 passed" in result.stdout


# -- time limit, exit codes, where procedures come from --------------------------------------------------------
FOREVER = """\
id: test/poll-forever
title: Wait for something that never happens
section: tests
description: A test procedure.
requires: [redis]
steps:
  - id: poll
    name: Poll until Redis reports a key that nobody writes
    redis:
      command: [EXISTS, "never:written"]
    register: found
    retry: {until: "found == 1", attempts: 100000, interval: 1s, timeout: 100000s}
"""

FOREVER_SCENARIO = """\
procedure: test/poll-forever
scenarios:
  - name: never
    description: The procedure waits for ever; time_limit interrupts it.
    world: {ssh: false, http: false}
    time_limit: 10s  # counted from the world's start: room for a slow one, then the poll runs into it
    fault:
      - delete: "tenant:acme:*"
    success:
      - that: count("tenant:acme:*") > 0
        message: acme's keys are back
"""


def test_time_limit_interrupts_a_procedure_that_polls_forever_and_exits_1(tmp_path):
    procedure = write(tmp_path, "p/test/poll-forever.yaml", FOREVER)
    write(tmp_path, "p/test/scenarios/poll-forever.yaml", FOREVER_SCENARIO)
    result = runbook("rehearse", str(procedure), "--json", "--transcripts-dir", str(tmp_path / "t"), cwd=tmp_path)
    assert result.code == 1, result.output
    (report,) = json.loads(result.stdout)
    assert report["timed_out"] is True and report["verdict"] == "timed out" and report["passed"] is False
    assert report["failed_checks"] == ["timed out: interrupted at the time limit of 10s while the procedure ran"]
    # the run that was interrupted says so in its own transcript, properly ended
    (dry,) = [p for p in (tmp_path / "t").rglob("*.dry-run.jsonl")]
    (ended,) = of_type(events(dry), "run.ended")
    assert ended["outcome"] == "interrupted"


def test_an_undeclared_prediction_difference_exits_1(tmp_path):
    # the shipped scenario declares probe-delete's difference; without the declaration the run must fail
    source = (Path(__file__).parents[2] / "procedures/redis/scenarios/emergency-oom.yaml").read_text()
    stripped = source.split("    expected_differences:")[0] + "    world:" + source.split("    world:", 1)[1]
    write(tmp_path, "s/redis/scenarios/emergency-oom.yaml", stripped)
    result = runbook(
        "rehearse",
        "redis/emergency-oom",
        "--scenario",
        "writes-refused-noeviction",
        "--scenarios",
        str(tmp_path / "s"),
        "--transcripts-dir",
        str(tmp_path / "t"),
        cwd=tmp_path,
    )
    assert result.code == 1, result.output
    assert "DIFFERS" in result.stdout
    assert "step probe-delete: predicted 0 keys deleted, actual 1 key deleted" in result.stdout


def test_an_unknown_procedure_is_exit_2_before_any_world_is_built(tmp_path):
    result = runbook("rehearse", "redis/no-such-procedure", cwd=tmp_path)
    assert result.code == 2 and "no procedure 'redis/no-such-procedure'" in result.stderr
    write(
        tmp_path,
        "s/redis/scenarios/x.yaml",
        """\
        procedure: redis/no-such-procedure
        scenarios:
          - name: x
            description: A scenario for a procedure that does not exist.
            success: [{that: "ping()", message: up}]
        """,
    )
    result = runbook("rehearse", "--all", "--scenarios", str(tmp_path / "s"), "--transcripts-dir", "t", cwd=tmp_path)
    assert result.code == 2
    assert "scenario x: no procedure 'redis/no-such-procedure'" in result.stderr
    assert not (tmp_path / "t").exists()  # no rehearsal started, so no transcript directory


def test_scenarios_dir_without_a_scenario_is_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runbook("rehearse", "--all", "--scenarios", str(tmp_path / "empty"), cwd=tmp_path)
    assert result.code == 2
    assert "no scenario file" in result.stderr and "0/0" not in result.output


def test_procedures_dir_and_a_path_are_rehearsed(tmp_path):
    shipped = Path(__file__).parents[2] / "procedures/redis"
    copy = (shipped / "wm-clear.yaml").read_text().replace("id: redis/wm-clear", "id: drafts/wm-clear")
    write(tmp_path, "drafts/wm-clear.yaml", copy)
    scenario = (shipped / "scenarios/wm-clear.yaml").read_text().replace("redis/wm-clear", "drafts/wm-clear")
    write(tmp_path, "drafts/scenarios/wm-clear.yaml", scenario)
    by_id = runbook(
        "rehearse", "drafts/wm-clear", "--procedures", str(tmp_path / "drafts"), "--transcripts-dir", "t", cwd=tmp_path
    )
    assert by_id.code == 0, by_id.output
    assert "drafts/wm-clear" in by_id.stdout and "2/2 passed" in by_id.stdout
    by_path = runbook("rehearse", str(tmp_path / "drafts/wm-clear.yaml"), "--transcripts-dir", "t", cwd=tmp_path)
    assert by_path.code == 0, by_path.output
    assert "2/2 passed (1 of them not resolved, as their scenario expects)" in by_path.stdout


def test_mutate_a_procedure_file_kills_each_planted_bug_and_says_how(tmp_path):
    shipped = Path(__file__).parents[2] / "procedures/redis"
    copy = (shipped / "wm-clear.yaml").read_text().replace("id: redis/wm-clear", "id: drafts/wm-clear")
    write(tmp_path, "drafts/wm-clear.yaml", copy)
    scenario = (shipped / "scenarios/wm-clear.yaml").read_text().replace("redis/wm-clear", "drafts/wm-clear")
    write(tmp_path, "drafts/scenarios/wm-clear.yaml", scenario)
    result = runbook(
        "rehearse", "--mutate", str(tmp_path / "drafts/wm-clear.yaml"), "--json", "--transcripts-dir", "t", cwd=tmp_path
    )
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    reasons = {m["mutant"]: m["reason"] for m in report["mutants"]}
    assert {m["status"] for m in report["mutants"]} == {"killed"} and report["score"] == 100.0
    assert reasons["effect-to-read:delete"].startswith("rejected by validate:")
    assert "declared 'read' but this redis step is destructive" in reasons["effect-to-read:delete"]
    # a dropped verification is caught by the sabotaged run, held to the original's verification steps
    assert reasons["drop-step:verify"] == (
        "clear-one-tenant: a fix that does not take: NOT noticed: delete did not take, "
        "and no verification step failed (exit 0)"
    )
    # a weakened guard is caught by the failure scenario: the typo'd tenant no longer gives its finding
    assert reasons["weaken-expect:inspect[0]"].startswith("tenant-name-typo: ")


def test_sigterm_stops_the_whole_rehearse_command_with_exit_130(tmp_path):
    import subprocess
    import sys

    from tests.integration.cli_support import REPO

    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "rehearse", "--all", "--transcripts-dir", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # held until the first rehearsal has started
    assert first.startswith("rehearsing ")
    proc.terminate()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "rehearse interrupted" in err
    assert out == ""  # no table: the command stopped there, it did not go on to the end


def _servers_under(root) -> set[int]:
    """The processes working in, or started with a file from, `root` (the worlds' redis-server and sshd)."""
    import os
    from pathlib import Path

    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(root)) or str(root) in cmdline:
            found.add(int(entry.name))
    return found


TWO_FOREVER = """\
procedure: test/poll-forever
scenarios:
  - name: never-a
    description: The procedure waits for ever, holding its world until the test stops the command.
    world: {ssh: false, http: false}
    time_limit: 600s
    fault:
      - delete: "tenant:acme:*"
    success:
      - that: count("tenant:acme:*") > 0
        message: acme's keys are back
  - name: never-b
    description: The same, in a second world of its own.
    world: {ssh: false, http: false}
    time_limit: 600s
    fault:
      - delete: "tenant:acme:*"
    success:
      - that: count("tenant:acme:*") > 0
        message: acme's keys are back
"""


def test_sigterm_with_jobs_stops_every_worker_and_tears_its_world_down(tmp_path):
    """With --jobs, SIGTERM reaches the command; each worker stops its rehearsal and no server outlives it.

    Both rehearsals poll for ever, so both worlds are up, held by the test, when it sends the signal."""
    import os
    import subprocess
    import sys
    import time

    from tests.integration.cli_support import REPO

    procedure = write(tmp_path, "p/test/poll-forever.yaml", FOREVER)
    write(tmp_path, "p/test/scenarios/poll-forever.yaml", TWO_FOREVER)
    worlds = tmp_path / "worlds"  # every world's directory is made here (TMPDIR): its servers are found by it
    worlds.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "rehearse",
            str(procedure),
            "--jobs",
            "2",
            "--transcripts-dir",
            str(tmp_path / "t"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(worlds)},
    )
    try:
        deadline = time.monotonic() + 120  # a safety net: the workers start their worlds at once
        while len(_servers_under(worlds)) < 2:  # one redis-server per world: both are up
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the two worlds never both started"
            time.sleep(0.05)
        proc.terminate()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "rehearse interrupted" in err and "Traceback" not in err
    assert out == ""
    assert not _servers_under(worlds), "a world's server outlived the command"


def test_the_runs_go_on_in_the_worlds_local_dir_not_the_callers_directory(tmp_path):
    # backup-tenant's default output is ".": the export lands in world.local_dir (the scenario checks it there),
    # and the directory rehearse was started from, with a relative --transcripts-dir, keeps only the transcripts
    result = runbook(
        "rehearse", "redis/backup-tenant", "--scenario", "export-tenant-before-cleanup", "--json",
        "--transcripts-dir", "t", cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert report["passed"] is True, report
    assert Path(report["transcript"]).is_absolute() and Path(report["transcript"]).is_relative_to(tmp_path / "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]
    assert list(tmp_path.rglob("*.keys.jsonl")) == []
