"""`finally:` steps and `restore:` on a real Redis: cleanup runs however the steps end (issue 13, gap 1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.cli_support import REPO, events, of_type, runbook

HEADER = "title: T\nsection: test\ndescription: test procedure\nrequires: [redis]\n"

LIFT_AND_OBSERVE = """\
steps:
  - id: lift
    name: Turn the latency monitor on for the observation
    redis: {command: [CONFIG, SET, latency-monitor-threshold, "100"]}
    confirm: Turn the latency monitor on?
  - id: observe
    name: Observe until the test releases the run
    redis: {command: [EXISTS, released]}
    retry: {until: "result == 1", attempts: 1000000, interval: 20ms, timeout: 1h}
finally:
  - id: put-back
    name: Put the threshold back
    restore: lift
  - id: look
    name: Read the config after the cleanup
    redis: {config_get: latency-monitor-threshold}
"""


@pytest.fixture
def server(redis_server):
    return redis_server()


def write(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"id: test/{name}\n{HEADER}{body}")
    return path


def args(server, tmp_path: Path, procedure: str, transcript: Path, *extra: str) -> list[str]:
    return [
        "run",
        procedure,
        "--redis",
        f"redis://127.0.0.1:{server.port}/0",
        "--procedures",
        str(tmp_path),
        "--transcript",
        str(transcript),
        *extra,
    ]


def threshold(server) -> str:
    return server.client().config_get("latency-monitor-threshold")["latency-monitor-threshold"]


def wait_for_event(path: Path, predicate, proc: subprocess.Popen, limit: float = 60.0) -> None:
    """Wait for a transcript line the run writes and then holds (it polls a key only the test would set)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if path.exists() and any(predicate(e) for e in events(path)):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the run never reached the observation window")


def assert_cleaned_up(evts: list[dict], ending: str) -> None:
    assert [d["value"] for d in of_type(evts, "decision") if d["kind"] == "finally"] == [ending]
    put_back = next(e for e in of_type(evts, "step.finished") if e["step"]["id"] == "put-back")
    assert put_back["outcome"] == "ok" and put_back["cleanup"] is True
    assert put_back["changes"] == [
        {"kind": "config", "name": "latency-monitor-threshold", "before": "100", "after": "0"}
    ]
    given = next(e for e in of_type(evts, "approval.given") if e["step"]["id"] == "put-back")
    assert given["method"] == "pre-approved" and given["pre_approved_by"]["step"] == "lift"
    assert of_type(evts, "run.ended")[0]["outcome"] in ("interrupted", "usage", "failed", "error")


def assert_verifies(path: Path) -> None:
    """The new fields (pre-approved, the finally decision, cleanup) are in the transcript schema."""
    verified = runbook("transcript", "verify", str(path))
    assert verified.code == 0, verified.output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_observation_window_leaves_the_config_as_it_was(server, tmp_path, signum):
    write(tmp_path, "observe", LIFT_AND_OBSERVE)
    transcript = tmp_path / "run.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RUNBOOK_CHECK_RESULTS": "1"}
    env.pop("REDISCLI_AUTH", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *args(server, tmp_path, "test/observe", transcript, "--yes")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        wait_for_event(
            transcript, lambda e: e["type"] == "step.started" and e.get("step", {}).get("id") == "observe", proc
        )
        assert threshold(server) == "100"  # the change is live while the run observes
        proc.send_signal(signum)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum
    assert threshold(server) == "0"
    evts = events(transcript)
    assert_cleaned_up(evts, "interrupted")
    assert of_type(evts, "run.ended")[0]["outcome"] == "interrupted"
    look = next(e for e in of_type(evts, "step.finished") if e["step"]["id"] == "look")
    assert look["result"] == {"latency-monitor-threshold": "0"}  # later cleanup steps still ran
    assert_verifies(transcript)


def test_a_template_error_after_the_change_leaves_the_config_as_it_was(server, tmp_path):
    body = LIFT_AND_OBSERVE.replace(
        'redis: {command: [EXISTS, released]}\n    retry: {until: "result == 1", attempts: 1000000, '
        "interval: 20ms, timeout: 1h}",
        'redis: {command: [GET, "{{ params.no_such_field }}"]}',
    )
    write(tmp_path, "broken", body)
    transcript = tmp_path / "run.jsonl"
    result = runbook(*args(server, tmp_path, "test/broken", transcript, "--yes"))
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    assert threshold(server) == "0"
    evts = events(transcript)
    assert_cleaned_up(evts, "aborted")
    assert_verifies(transcript)


def test_dry_run_predicts_the_cleanup(server, tmp_path):
    write(tmp_path, "dry", LIFT_AND_OBSERVE.replace("result == 1", "true"))
    transcript = tmp_path / "run.jsonl"
    result = runbook(*args(server, tmp_path, "test/dry", transcript, "--dry-run"))
    assert result.code == 0, result.output
    evts = events(transcript)
    put_back = next(e for e in of_type(evts, "step.finished") if e["step"]["id"] == "put-back")
    assert put_back["outcome"] == "predicted"
    assert put_back["predicted_changes"] == [
        {"kind": "config", "name": "latency-monitor-threshold", "before": "0", "after": "0"}
    ]
    assert threshold(server) == "0"


def test_a_refused_change_has_nothing_to_restore_and_other_cleanup_still_runs(server, tmp_path):
    write(tmp_path, "refused", LIFT_AND_OBSERVE)
    transcript = tmp_path / "run.jsonl"
    result = runbook(*args(server, tmp_path, "test/refused", transcript))  # no terminal, no --yes
    assert result.code == 3, result.output
    evts = events(transcript)
    assert [d["value"] for d in of_type(evts, "decision") if d["kind"] == "finally"] == ["refused"]
    skipped = of_type(evts, "step.skipped")
    assert [s["step"]["id"] for s in skipped] == ["put-back"] and "changed nothing" in skipped[0]["reason"]
    assert next(e for e in of_type(evts, "step.finished") if e["step"]["id"] == "look")["outcome"] == "ok"
    assert threshold(server) == "0"


def test_finally_of_a_called_procedure_runs_before_the_callers(server, tmp_path):
    write(tmp_path, "inner", LIFT_AND_OBSERVE.replace("result == 1", "true"))
    write(
        tmp_path,
        "outer",
        """\
steps:
  - id: call-inner
    name: Run the inner procedure
    call: {procedure: test/inner}
  - id: fail
    name: Fails on purpose
    redis: {command: [EXISTS, missing]}
    expect:
      - that: result == 1
        message: missing key
finally:
  - id: outer-cleanup
    name: The caller's cleanup
    redis: {config_get: latency-monitor-threshold}
""",
    )
    transcript = tmp_path / "run.jsonl"
    result = runbook(*args(server, tmp_path, "test/outer", transcript, "--yes"))
    assert result.code == 1, result.output
    evts = events(transcript)
    finished = [e["step"]["id"] for e in of_type(evts, "step.finished")]
    assert finished.index("put-back") < finished.index("fail") < finished.index("outer-cleanup")
    assert [d["value"] for d in of_type(evts, "decision") if d["kind"] == "finally"] == ["ok", "failed"]
    assert threshold(server) == "0"


def test_a_signal_during_the_cleanup_waits_for_it(server, tmp_path):
    body = (
        LIFT_AND_OBSERVE
        + """\
  - id: hold
    name: A cleanup step the test holds until it releases it
    redis: {command: [EXISTS, cleanup-released]}
    retry: {until: "result == 1", attempts: 1000000, interval: 20ms, timeout: 1h}
"""
    )
    write(tmp_path, "held", body)
    transcript = tmp_path / "run.jsonl"
    stderr_path = tmp_path / "stderr.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RUNBOOK_CHECK_RESULTS": "1"}
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", *args(server, tmp_path, "test/held", transcript, "--yes")],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        started = lambda step_id: lambda e: e["type"] == "step.started" and e.get("step", {}).get("id") == step_id  # noqa: E731
        wait_for_event(transcript, started("observe"), proc)
        proc.send_signal(signal.SIGINT)
        wait_for_event(transcript, started("hold"), proc)
        proc.send_signal(signal.SIGTERM)  # during the cleanup: held back, the cleanup goes on
        deadline = time.monotonic() + 60
        while "interrupt again to abandon the cleanup" not in stderr_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, stderr_path.read_text()
            time.sleep(0.02)
        server.client().set("cleanup-released", "1")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130  # the first signal ends the run; the held one changed nothing
    evts = events(transcript)
    hold = next(e for e in of_type(evts, "step.finished") if e["step"]["id"] == "hold")
    assert hold["outcome"] == "ok"
    assert threshold(server) == "0"
