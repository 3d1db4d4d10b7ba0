"""What procedure authors hit (issue 13): param-driven waits, verifies+until in a dry-run, outcomes, series,
blocks, on a real Redis through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cli_support import events, of_type, runbook, transcript_path

HEADER = "title: T\nsection: test\ndescription: test procedure\nrequires: [redis]\n"


@pytest.fixture
def server(redis_server):
    return redis_server()


def write(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"id: test/{name}\n{HEADER}{body}")
    return path


def run(server, tmp_path, *args):
    return runbook(
        "run",
        *args,
        "--redis",
        f"redis://127.0.0.1:{server.port}/0",
        "--procedures",
        str(tmp_path),
        "--transcripts-dir",
        str(tmp_path / "t"),
        "--json",
        env={"RUNBOOK_CHECK_RESULTS": "1"},  # every result is checked against its kind's declared shape
    )


PARAM_WAIT = """\
params:
  attempts: {type: integer, default: 3}
  interval: {type: string, default: 10ms}
  pause: {type: string, default: 1ms}
steps:
  - id: settle
    name: Let it settle
    wait: "{{ pause }}"
  - id: poll
    name: Poll a key that never comes
    redis: {command: [EXISTS, never]}
    retry: {until: "result == 1", attempts: "{{ attempts }}", interval: "{{ interval }}", timeout: "{{ '1h' }}"}
"""


def test_retry_and_wait_take_params(server, tmp_path):
    write(tmp_path, "wait", PARAM_WAIT)
    result = run(server, tmp_path, "test/wait", "--var", "attempts=4")
    assert result.code == 1, result.output  # the until never held: a finding, not a crash
    poll = next(s for s in result.json()["steps"] if s["id"] == "poll")
    assert "after 4 attempts" in poll["message"]
    settle = next(s for s in result.json()["steps"] if s["id"] == "settle")
    assert settle["outcome"] == "ok" and settle["result"] == {"waited_s": 0.001}
    until = [d for d in of_type(events(transcript_path(result)), "decision") if d["kind"] == "until"]
    assert len(until) == 4


@pytest.mark.parametrize(
    ("var", "field"),
    [("interval=soon", "retry.interval"), ("pause=later", "wait"), ("attempts=0", "retry.attempts")],
)
def test_a_param_that_is_not_a_duration_or_count_is_exit_2_at_the_step(server, tmp_path, var, field):
    write(
        tmp_path, "wait", PARAM_WAIT.replace("{type: integer, default: 3}", "{type: integer, default: 3, minimum: 0}")
    )
    result = run(server, tmp_path, "test/wait", "--var", var)
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    error = result.json()["error"]
    assert "wait.yaml" in error and ("not a duration" in error or "not a count" in error)
    if field != "wait":
        assert field in error


def test_validate_names_a_literal_that_is_not_a_duration(tmp_path):
    path = write(
        tmp_path,
        "bad",
        "steps:\n  - id: w\n    name: Wait\n    wait: soon\n"
        "  - id: p\n    name: Poll\n    redis: {info: server}\n    retry: {interval: often}\n",
    )
    result = runbook("validate", str(path))
    assert result.code == 2
    assert (
        "bad.yaml:9:5: steps[0].wait" in result.output
        and "steps[0].wait" in result.output
        and "'soon'" in result.output
    )
    assert "steps[1].retry.interval" in result.output and "'often'" in result.output


def test_dry_run_of_verifies_with_until_returns_at_once(server, tmp_path):
    write(
        tmp_path,
        "verify",
        """\
steps:
  - id: change
    name: Lower the threshold
    redis: {command: [CONFIG, SET, slowlog-log-slower-than, "5"]}
    confirm: Lower it?
  - id: check
    name: Wait for the change to show
    verifies: change
    redis: {config_get: slowlog-log-slower-than}
    retry: {until: "result['slowlog-log-slower-than'] == '5'", attempts: 100000, interval: 1s, timeout: 1h}
    expect:
      - that: "result['slowlog-log-slower-than'] == '5'"
        message: not applied
""",
    )
    result = run(server, tmp_path, "test/verify", "--dry-run")  # would poll for an hour (the CLI helper gives 60 s)
    assert result.code == 0, result.output
    check = next(s for s in result.json()["steps"] if s["id"] == "check")
    assert check["outcome"] == "ok" and "not polled" in check["message"]
    assert check["expectations"][0]["held"] is None
    until = [d for d in of_type(events(transcript_path(result)), "decision") if d["kind"] == "until"]
    assert [d["value"] for d in until] == ["not polled"]


def test_outcome_driven_branch(server, tmp_path):
    write(
        tmp_path,
        "branch",
        """\
steps:
  - id: broken
    name: A command Redis rejects
    redis: {command: [HGET, onlyonearg]}
    register: reply
    on_failure: continue
  - id: on-error
    name: Runs because the step before errored
    when: "steps.broken.outcome == 'error'"
    compute:
      saw: "steps.broken.error"
      reply_is_none: "reply is none"
      took: "steps.broken.duration_ms >= 0"
  - id: on-ok
    name: Skipped because it did not succeed
    when: "steps.broken.outcome == 'ok'"
    redis: {command: [PING]}
  - id: timed
    name: Sees its own duration
    redis: {command: [PING]}
    expect:
      - that: "steps.timed.duration_ms >= 0 and steps.timed.outcome == 'ok'"
        message: no duration
""",
    )
    result = run(server, tmp_path, "test/branch")
    assert result.code == 0, result.output
    steps = {s["id"]: s for s in result.json()["steps"]}
    assert steps["on-error"]["outcome"] == "ok"
    assert "wrong number of arguments" in steps["on-error"]["result"]["saw"]
    assert steps["on-error"]["result"]["reply_is_none"] is True and steps["on-error"]["result"]["took"] is True
    assert steps["on-ok"]["outcome"] == "skipped"
    assert steps["timed"]["expectations"][0]["held"] is True


def test_a_sustained_condition_over_a_sampled_series(server, tmp_path):
    server.client().set("level", "7")
    write(
        tmp_path,
        "sustained",
        """\
params:
  samples: {type: integer, default: 5}
steps:
  - id: watch
    name: Sample the level
    redis: {command: [GET, level]}
    sample: {every: 10ms, count: "{{ samples }}"}
    register: level
    expect:
      - that: "level.count == samples and all(level, 'value | int > 5')"
        message: not above 5 at every sample
      - that: "held_for(level, 'value | int > 5') >= 0.04 and last(level) == '7' and max(level) == 7"
        message: not held
  - id: after
    name: The series is a value like any other
    compute: {n: "level.readings | length", interrupted: "level.interrupted"}
""",
    )
    result = run(server, tmp_path, "test/sustained")
    assert result.code == 0, result.output
    steps = {s["id"]: s for s in result.json()["steps"]}
    assert [e["held"] for e in steps["watch"]["expectations"]] == [True, True]
    assert steps["after"]["result"] == {"n": 5, "interrupted": False}
    series = steps["watch"]["result"]
    assert [s["value"] for s in series["samples"]] == ["7"] * 5
    assert [s["t"] for s in series["samples"]] == sorted(s["t"] for s in series["samples"])


def test_sample_rejects_a_change(tmp_path):
    path = write(
        tmp_path,
        "bad",
        "steps:\n  - id: w\n    name: Write every second\n    redis: {command: [SET, k, v]}\n"
        "    confirm: set?\n    sample: {every: 1s, count: 3}\n",
    )
    result = runbook("validate", str(path))
    assert result.code == 2 and "steps[0].sample" in result.output and "cannot be sampled" in result.output


def test_ctrl_c_ends_sampling_and_keeps_the_series(server, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.integration.cli_support import REPO

    write(
        tmp_path,
        "long",
        """\
steps:
  - id: watch
    name: Sample for an hour
    redis: {command: [ECHO, sampling]}
    sample: {every: 50ms, for: 1h}
    register: series
  - id: after
    name: The run goes on with what was collected
    compute: {n: "series.count", interrupted: "series.interrupted"}
""",
    )
    transcript = tmp_path / "run.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            "test/long",
            "--redis",
            f"redis://127.0.0.1:{server.port}/0",
            "--procedures",
            str(tmp_path),
            "--transcript",
            str(transcript),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    client = server.client()
    try:
        deadline = time.monotonic() + 60
        while int(client.info("commandstats").get("cmdstat_echo", {}).get("calls", 0)) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    steps = {s["id"]: s for s in __import__("json").loads(stdout.strip().splitlines()[-1])["steps"]}
    assert steps["watch"]["outcome"] == "ok"
    # three ECHOs reached the server before the signal; the third may have been in flight when it came (an
    # interrupted sample is not kept), but the two before it were answered and kept
    assert steps["after"]["result"]["interrupted"] is True and steps["after"]["result"]["n"] >= 2


def test_a_block_looped_with_foreach(server, tmp_path):
    client = server.client()
    for tenant in ("a", "b", "c"):
        client.set(f"tenant:{tenant}:size", tenant * 3)
    write(
        tmp_path,
        "blocks",
        """\
steps:
  - id: per-tenant
    name: Measure and mark each tenant
    foreach: "['a', 'b', 'c']"
    when: "item != 'c'"
    register: per_tenant
    block:
      - id: size
        name: Length of the tenant's value
        redis: {command: [STRLEN, "tenant:{{ item }}:size"]}
        register: size
      - id: mark
        name: Mark the tenant as measured
        redis: {command: [SET, "tenant:{{ item }}:measured", "{{ size }}"]}
        confirm: Mark it?
        register: marked
  - id: guarded
    name: A block whose first step fails, continued
    on_failure: continue
    block:
      - id: boom
        name: Rejected by Redis
        redis: {command: [HGET, onlyonearg]}
      - id: never
        name: Not reached
        redis: {command: [SET, never, "1"]}
        confirm: set?
  - id: report
    name: Branch on the block's outcome
    when: "steps.guarded.outcome == 'error'"
    compute:
      sizes: "per_tenant[:2] | map(attribute='size') | list"
      skipped: "per_tenant[2] is none"
""",
    )
    result = run(server, tmp_path, "test/blocks", "--yes")
    assert result.code == 0, result.output
    assert client.get("tenant:a:measured") == "3" and client.get("tenant:b:measured") == "3"
    assert client.get("tenant:c:measured") is None and client.get("never") is None
    steps = result.json()["steps"]
    report = next(s for s in steps if s["id"] == "report")
    assert report["result"] == {"sizes": [3, 3], "skipped": True}
    assert [s["id"] for s in steps if s["id"] in ("size", "mark")] == ["size", "mark", "size", "mark"]
    guarded = next(s for s in steps if s["id"] == "guarded")
    assert guarded["outcome"] == "error" and "wrong number of arguments" in guarded["message"]


def test_a_block_retried_until_its_result_holds(server, tmp_path):
    write(
        tmp_path,
        "retryblock",
        """\
steps:
  - id: twice
    name: Bump and read, until the count reaches 3
    retry: {until: "result.n | int >= 3", attempts: 5, interval: 1ms}
    register: bumped
    block:
      - id: bump
        name: Bump
        redis: {command: [INCR, counter]}
        confirm: Bump?
      - id: read
        name: Read
        redis: {command: [GET, counter]}
        register: n
""",
    )
    result = run(server, tmp_path, "test/retryblock", "--yes")
    assert result.code == 0, result.output
    assert server.client().get("counter") == "3"
    twice = next(s for s in result.json()["steps"] if s["id"] == "twice")
    assert twice["result"] == {"n": "3"}


def test_latency_sampled(server, tmp_path):
    write(
        tmp_path,
        "latency",
        """\
params:
  pings: {type: integer, default: 20}
steps:
  - id: rtt
    name: PING round trips
    latency: {count: "{{ pings }}", every: 1ms}
    register: rtt
    expect:
      - that: "rtt.pings == pings and rtt.min_ms <= rtt.p50_ms <= rtt.p99_ms <= rtt.max_ms"
        message: inconsistent figures
      - that: "steps.rtt.duration_ms >= rtt.avg_ms * rtt.pings"
        message: the step's own duration covers its pings
  - id: history
    name: Latency history, two windows
    latency: {count: 3, every: 0}
    sample: {every: 1ms, count: 2}
    register: history
    expect:
      - that: "history.count == 2 and max(history, 'value.max_ms') >= min(history, 'value.min_ms')"
        message: no history
""",
    )
    result = run(server, tmp_path, "test/latency")
    assert result.code == 0, result.output
    rtt = next(s for s in result.json()["steps"] if s["id"] == "rtt")
    assert set(rtt["result"]) == {"pings", "min_ms", "avg_ms", "max_ms", "p50_ms", "p90_ms", "p99_ms", "stddev_ms"}
    assert all(e["held"] for e in rtt["expectations"])
    assert int(server.client().info("commandstats")["cmdstat_ping"]["calls"]) >= 26


@pytest.mark.parametrize(
    ("procedure", "variables"),
    [
        ("redis/health-check", []),
        ("redis/memory-report", []),
        (
            "redis/cache-stats",
            ["--var", "monitor=true", "--var", "monitor_seconds=200ms", "--var", "monitor_commands=50"],
        ),
        ("redis/config-show", []),
        ("redis/audit-ttl", []),
        ("redis/troubleshoot-performance", []),
        ("redis/tune-connections", []),
        ("redis/wm-list", []),
    ],
)
def test_shipped_procedures_register_results_of_their_declared_shapes(seeded_redis, tmp_path, procedure, variables):
    server, _ = seeded_redis
    result = runbook(
        "run",
        procedure,
        *variables,
        "--redis",
        f"redis://127.0.0.1:{server.port}/0",
        "--transcripts-dir",
        str(tmp_path / "t"),
        "--dry-run",
        "--json",
        env={"RUNBOOK_CHECK_RESULTS": "1"},
    )
    assert "declared shape" not in result.output, result.output
    assert result.code in (0, 1, 3), result.output


def test_validate_checks_literal_numbers_of_kinds_and_builtin_shadowing(tmp_path):
    path = write(
        tmp_path,
        "kinds",
        "steps:\n  - id: l\n    name: Latency\n    latency: {count: many, every: often}\n"
        "  - id: s\n    name: Steps\n    redis: {info: server}\n    register: steps\n",
    )
    result = runbook("validate", str(path))
    assert result.code == 2
    assert "steps[0].latency.count: expected integer, got string 'many'" in result.output
    assert "steps[0].latency.every: expected duration, got string 'often'" in result.output
    assert "register 'steps' shadows a built-in name" in result.output


def test_a_sample_that_never_ends_is_refused(server, tmp_path):
    bad = write(
        tmp_path,
        "zero",
        "steps:\n  - id: s\n    name: S\n    redis: {info: server}\n    sample: {every: 0, for: 5s}\n",
    )
    result = runbook("validate", str(bad))
    assert result.code == 2 and "steps[0].sample.every: sample: `every` must be more than 0" in result.output
    write(
        tmp_path,
        "huge",
        "params:\n  every: {type: string, default: 0s}\nsteps:\n  - id: s\n    name: S\n    redis: {info: server}\n"
        "    sample: {every: '{{ every }}', for: 1h}\n",
    )
    ran = run(server, tmp_path, "test/huge")
    assert ran.code == 2 and "sample less often" in ran.json()["error"], ran.output


def test_sampling_shows_progress_on_a_terminal(server, tmp_path):
    import os
    import sys

    from tests.integration.cli_support import REPO

    pexpect = pytest.importorskip("pexpect")
    write(
        tmp_path,
        "progress",
        "steps:\n  - id: watch\n    name: Watch\n    redis: {info: stats}\n    sample: {every: 1ms, count: 3}\n",
    )
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "engine.cli",
            "run",
            "test/progress",
            "--redis",
            server.url,
            "--procedures",
            str(tmp_path),
            "--transcripts-dir",
            str(tmp_path / "t"),
        ],
        cwd=str(REPO),
        encoding="utf-8",
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"},
    )
    child.expect(r"sampling watch: 1/3")  # the counter, on the terminal only
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
