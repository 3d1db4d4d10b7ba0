"""Fleets and resume on real redis-server processes and the real CLI: fan-out, rollouts, continue.

Every condition a test waits on is held by the test: a step waits on a key the test sets, or the run
sits at an approval prompt (a pty) until the test acts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.transcript.verify import verify_transcript
from tests.integration.cli_support import REPO, events, of_type, runbook

HEADER = "title: T\nsection: test\ndescription: test procedure\nrequires: [redis]\n"
CHECK = """\
id: test/check
steps:
  - id: mode
    name: Read the marker
    redis: {command: [GET, mode]}
    register: mode
    expect:
      - that: "mode == 'good'"
        message: "mode is {{ mode }}"
"""
ROLL = """\
id: test/roll
steps:
  - id: mark
    name: Set the marker
    redis: {command: [SET, rolled, "1"]}
    confirm: Set it?
  - id: check
    name: Check the health key
    redis: {command: [GET, health]}
    register: health
    expect:
      - that: "health == 'ok'"
        message: "health is {{ health }}"
"""
HOLD = REPO / "bench" / "procedures" / "hold.yaml"
WIPE = """\
id: test/wipe
steps:
  - id: size
    name: Read a value
    redis: {command: [GET, before]}
    register: before
  - id: fresh
    name: Read a precondition
    redis: {command: [GET, state]}
    register: state
    precondition: true
  - id: wipe
    name: Delete the cache keys
    redis: {command: [DEL, cache:a, cache:b]}
    confirm: Delete them?
  - id: after
    name: Set a marker
    redis: {command: [SET, done, "{{ before }}-{{ state }}"]}
    confirm: Mark it?
"""


def _procs(tmp_path: Path) -> Path:
    directory = tmp_path / "procs"
    directory.mkdir(exist_ok=True)
    for text in (CHECK, ROLL, WIPE):
        name = text.split("\n", 1)[0].split("/")[1]
        (directory / f"{name}.yaml").write_text(text.replace("\n", "\n" + HEADER, 1))
    shutil.copyfile(HOLD, directory / "hold.yaml")  # bench/hold, which bench/fleet_cases.py rolls out too
    return directory


def _inventory(tmp_path: Path, servers: list, tags: dict[int, list[str]] | None = None) -> Path:
    lines = ["environments:", "  production:", "    targets:"]
    for i, server in enumerate(servers):
        lines.append(f"      r{i}:")
        lines.append(f"        redis: {{url: 'redis://127.0.0.1:{server.port}/0'}}")
        if tags and i in tags:
            lines.append(f"        tags: {json.dumps(tags[i])}")
    lines += ["  staging:", "    targets:", "      other:", "        redis: {url: 'redis://127.0.0.1:1/0'}"]
    path = tmp_path / "inventory.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def fleet(redis_server):
    return [redis_server() for _ in range(5)]


def _base(tmp_path: Path, inventory: Path, procedure: str) -> list[str]:
    return [
        "run",
        procedure,
        "--inventory",
        str(inventory),
        "--procedures",
        str(_procs(tmp_path)),
        "--transcripts-dir",
        str(tmp_path / "t"),
    ]


def _verified(path: str | Path) -> None:
    report = verify_transcript(Path(path))
    assert report.ok, report.render()


def test_read_only_fan_out_summarises_every_target_and_exits_with_the_worst(tmp_path, fleet):
    for i, server in enumerate(fleet):
        server.client().set("mode", "bad" if i == 3 else "good")
    inventory = _inventory(tmp_path, fleet)
    result = runbook(*_base(tmp_path, inventory, "test/check"), "--target", "production/*", "--json")
    assert result.code == 1, result.output
    data = result.json()
    assert data["plan"]["mode"] == "parallel"
    by_target = {t["target"]: t for t in data["targets"]}
    assert sorted(by_target) == [f"production/r{i}" for i in range(5)]
    assert by_target["production/r3"]["exit_code"] == 1
    assert by_target["production/r3"]["failed_expectations"] == ["mode is bad"]
    assert all(by_target[f"production/r{i}"]["exit_code"] == 0 for i in (0, 1, 2, 4))
    parent = events(data["transcript"])
    assert parent[0]["fleet"]["mode"] == "parallel"
    children = of_type(parent, "fleet.child.finished")
    assert len(children) == 5
    _verified(data["transcript"])
    for child in children:
        _verified(child["transcript"])
        assert events(child["transcript"])[0]["parent_run"] == data["run_id"]
    # the human table names the failing expectation
    table = runbook(*_base(tmp_path, inventory, "test/check"), "--target", "production/*")
    assert table.code == 1
    assert "production/r3" in table.stdout and "mode is bad" in table.stdout


def test_limit_and_exclude_by_name_and_tag(tmp_path, fleet):
    for server in fleet:
        server.client().set("mode", "good")
    inventory = _inventory(tmp_path, fleet, tags={0: ["canary"], 1: ["canary"], 2: ["eu"]})
    base = _base(tmp_path, inventory, "test/check")
    result = runbook(*base, "--target", "production/*", "--limit", "canary", "--json")
    assert result.code == 0, result.output
    assert [t["target"] for t in result.json()["targets"]] == ["production/r0", "production/r1"]
    result = runbook(*base, "--target", "r2", "--target", "r4", "--target", "r0", "--exclude", "tag:canary", "--json")
    assert [t["target"] for t in result.json()["targets"]] == ["production/r2", "production/r4"]
    # an unreachable target is its own row, and the worst exit code (4) is the fleet's
    down = runbook(*base, "--target", "r0", "--target", "staging/other", "--json")
    assert down.code == 4, down.output
    assert {t["target"]: t["exit_code"] for t in down.json()["targets"]} == {"production/r0": 0, "staging/other": 4}
    missing = runbook(*base, "--target", "nowhere/*")
    assert missing.code == 2 and "matches no target" in missing.stderr


def test_rolling_change_halts_past_max_failures(tmp_path, fleet):
    for i, server in enumerate(fleet):
        server.client().set("health", "bad" if i in (1, 2) else "ok")
    inventory = _inventory(tmp_path, fleet)
    base = _base(tmp_path, inventory, "test/roll")
    result = runbook(*base, "--target", "production/*", "--yes", "--batch", "1", "--max-failures", "1", "--json")
    assert result.code == 1, result.output
    data = result.json()
    assert data["plan"]["mode"] == "rolling"
    outcomes = {t["target"]: t["outcome"] for t in data["targets"]}
    assert outcomes == {
        "production/r0": "ok",
        "production/r1": "failed",
        "production/r2": "failed",
        "production/r3": "not_run",
        "production/r4": "not_run",
    }
    assert [s.client().get("rolled") for s in fleet] == ["1", "1", "1", None, None]
    parent = events(data["transcript"])
    assert of_type(parent, "fleet.halted")[0]["failures"] == 2
    _verified(data["transcript"])

    # batches of 2 with no tolerance: the first batch's failure stops the rest
    for server in fleet:
        server.client().delete("rolled")
    result = runbook(*base, "--target", "production/*", "--yes", "--batch", "2", "--json")
    outcomes = {t["target"]: t["outcome"] for t in result.json()["targets"]}
    assert outcomes["production/r0"] == "ok" and outcomes["production/r1"] == "failed"
    assert outcomes["production/r2"] == outcomes["production/r3"] == outcomes["production/r4"] == "not_run"
    assert [s.client().get("rolled") for s in fleet] == ["1", "1", None, None, None]


def _complete_events(path: Path) -> list[dict]:
    """The lines a running writer has finished (the last one may be half-written)."""
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def _wait_for(predicate, proc):
    """Poll until the test's condition shows (the run is held by the test, never by a timer)."""
    import time

    while not predicate():
        assert proc.poll() is None, "the run ended before reaching the point the test holds it at"
        time.sleep(0.05)


def test_ctrl_c_during_a_rollout_then_continue_reruns_nothing_done(tmp_path, fleet):
    inventory = _inventory(tmp_path, fleet)
    for server in fleet[:2]:
        server.client().set("go", "1")  # the first two targets go straight through
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("REDISCLI_AUTH", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli",
            *_base(tmp_path, inventory, "bench/hold"),
            "--target",
            "production/*",
            "--yes",
            "--json",
            "--incident",
            "INC-9",
        ],
        cwd=str(REPO),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        # target 3 is held in its wait step (its transcript says so): its first change is done, its second not
        def waiting() -> bool:
            found = list((tmp_path / "t").rglob("*.production.r2.jsonl"))
            return bool(found) and any(
                e["type"] == "step.started" and e["step"]["id"] == "wait" for e in _complete_events(found[0])
            )

        _wait_for(waiting, proc)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group, as on a terminal
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    data = json.loads(out.strip().splitlines()[-1])
    assert data["outcome"] == "interrupted"
    assert [s.client().get("first") for s in fleet] == ["1", "1", "1", None, None]
    assert [s.client().get("second") for s in fleet] == ["1", "1", None, None, None]

    for server in fleet:
        server.client().set("go", "1")
    resumed = runbook(
        "continue",
        data["run_id"],
        "--transcripts-dir",
        str(tmp_path / "t"),
        "--yes",
        "--json",
        "--procedures",
        str(_procs(tmp_path)),
    )
    assert resumed.code == 0, resumed.output
    again = resumed.json()
    # nothing done was done twice: every counter is exactly 1
    assert [s.client().get("first") for s in fleet] == ["1"] * 5
    assert [s.client().get("second") for s in fleet] == ["1"] * 5
    targets = {t["target"]: t for t in again["targets"]}
    assert targets["production/r0"].get("reused_from") and targets["production/r1"].get("reused_from")
    parent = events(again["transcript"])
    assert parent[0]["resumes"] == data["run_id"]
    _verified(again["transcript"])
    continued = events(targets["production/r2"]["transcript"])
    assert continued[0]["resumes"]
    assert [e["step"]["id"] for e in of_type(continued, "step.resumed")] == ["first"]
    for entry in again["targets"]:
        _verified(entry["transcript"])
    # the timeline shows the rollout: the parent and its children
    timeline = runbook("timeline", again["transcript"], "--transcripts-dir", str(tmp_path / "t"))
    assert timeline.code == 0, timeline.output
    assert "production/r4" in timeline.stdout and "Rollout planned" in timeline.stdout
    postmortem = runbook("postmortem", "--incident", "INC-9", "--transcripts-dir", str(tmp_path / "t"))
    assert postmortem.code == 0, postmortem.output
    assert "production/r4" in postmortem.stdout


def _spawn(args: list[str]):
    pexpect = pytest.importorskip("pexpect")
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    env["PYTHONPATH"] = str(REPO)
    return pexpect.spawn(
        sys.executable, ["-m", "engine.cli", *args], cwd=str(REPO), env=env, encoding="utf-8", timeout=60
    )


def test_kill_9_at_a_destructive_step_then_continue_shows_its_live_state(tmp_path, redis_server):
    server = redis_server()
    client = server.client()
    client.mset({"before": "v1", "state": "s1", "cache:a": "1", "cache:b": "2"})
    url = f"redis://127.0.0.1:{server.port}/0"
    procs = _procs(tmp_path)
    tdir = tmp_path / "t"
    args = ["run", "test/wipe", "--redis", url, "--procedures", str(procs), "--transcripts-dir", str(tdir)]
    child = _spawn(args)
    child.expect("Type the target name")
    os.kill(child.pid, signal.SIGKILL)  # the runbook process dies with the change in doubt
    child.expect(pytest.importorskip("pexpect").EOF)
    child.close()
    (transcript,) = list(tdir.rglob("*.jsonl"))
    run_id = events(transcript)[0]["run_id"]
    client.delete("cache:a")  # someone deals with part of it by hand meanwhile
    client.mset({"before": "v2", "state": "s2"})

    resumed = _spawn(["continue", run_id, "--transcripts-dir", str(tdir), "--procedures", str(procs)])
    resumed.expect("IN DOUBT")
    resumed.expect("cache:a: does not exist")  # what is there now, measured again
    resumed.expect("Type the target name")
    resumed.sendline(f"127.0.0.1:{server.port}")
    resumed.expect(r"Proceed\? \[y/N\]")  # the next change, asked as usual
    resumed.sendline("y")
    resumed.expect("outcome: ok")
    resumed.expect(pytest.importorskip("pexpect").EOF)
    resumed.close()
    assert resumed.exitstatus == 0
    assert client.exists("cache:b") == 0
    # `before` came back from the transcript (not re-read); the precondition `state` was read again
    assert client.get("done") == "v1-s2"
    new = [p for p in tdir.rglob("*.jsonl") if p != transcript and "leases" not in p.parts]
    (new_path,) = new
    evts = events(new_path)
    assert evts[0]["resumes"] == run_id
    assert [e["step"]["id"] for e in of_type(evts, "step.resumed")] == ["size"]
    (asked,) = [e for e in of_type(evts, "approval.requested") if e["step"]["id"] == "wipe"]
    assert asked["in_doubt"]["run"] == run_id
    # the killed run's lease (still live) is taken over by its continuation, and only by it
    (stolen,) = of_type(evts, "lease.stolen")
    assert stolen["previous"]["run_id"] == run_id and run_id in stolen["reason"]
    _verified(new_path)


def test_a_changed_procedure_is_refused_unless_allowed(tmp_path, redis_server):
    server = redis_server()
    server.client().set("health", "bad")
    url = f"redis://127.0.0.1:{server.port}/0"
    procs = _procs(tmp_path)
    tdir = tmp_path / "t"
    args = ["run", "test/roll", "--redis", url, "--procedures", str(procs), "--transcripts-dir", str(tdir)]
    first = runbook(*args, "--yes")
    assert first.code == 1, first.output
    run_id = events(next(tdir.rglob("*.jsonl")))[0]["run_id"]
    server.client().set("health", "ok")  # fixed by hand
    path = procs / "roll.yaml"
    path.write_text(path.read_text() + "\n# edited\n")
    refused = runbook("continue", run_id, "--transcripts-dir", str(tdir), "--procedures", str(procs), "--yes")
    assert refused.code == 3, refused.output
    assert "procedure file" in refused.stderr and "changed" in refused.stderr
    accepted = runbook(
        "continue", run_id, "--transcripts-dir", str(tdir), "--procedures", str(procs), "--yes", "--allow-changed"
    )
    assert accepted.code == 0, accepted.output
    assert "changed since (--allow-changed): the procedure file" in accepted.stdout
    new = [p for p in tdir.rglob("*.jsonl") if events(p)[0].get("resumes") == run_id]
    (new_path,) = new
    evts = events(new_path)
    assert "procedure file" in evts[0]["resume_changes"][0]
    assert [e["step"]["id"] for e in of_type(evts, "step.resumed")] == ["mark"]
    _verified(new_path)


def test_all_remaining_covers_the_rest_of_a_rollout_and_is_recorded(tmp_path, fleet):
    servers = fleet[:3]
    for server in servers:
        server.client().set("health", "ok")
    inventory = _inventory(tmp_path, servers)
    child = _spawn([*_base(tmp_path, inventory, "test/roll"), "--target", "production/*", "--operator", "alice"])
    child.expect("all remaining")  # the first target asks, offering "all remaining"
    child.sendline("all remaining")
    child.expect("outcome: ok")
    child.expect(pytest.importorskip("pexpect").EOF)
    child.close()
    assert child.exitstatus == 0
    assert [s.client().get("rolled") for s in servers] == ["1", "1", "1"]
    (parent_path,) = [p for p in (tmp_path / "t").rglob("*.jsonl") if "fleet" in events(p)[0]]
    parent = events(parent_path)
    (approval,) = of_type(parent, "fleet.approval")
    assert approval["by"] == "alice" and approval["target"] == "production/r0"
    methods = []
    for finished in of_type(parent, "fleet.child.finished"):
        (given,) = of_type(events(finished["transcript"]), "approval.given")
        methods.append((given["method"], given["by"], bool(given.get("note"))))
        _verified(finished["transcript"])
    # answered once on the first target; the others were covered by it and say so
    assert methods == [
        ("all-remaining", "alice", False),
        ("all-remaining", "alice", True),
        ("all-remaining", "alice", True),
    ]
    _verified(parent_path)


def test_another_redis_process_is_refused_unless_allowed(tmp_path, redis_server):
    server = redis_server()
    server.client().set("health", "bad")
    url = f"redis://127.0.0.1:{server.port}/0"
    procs = _procs(tmp_path)
    tdir = tmp_path / "t"
    args = ["run", "test/roll", "--redis", url, "--procedures", str(procs), "--transcripts-dir", str(tdir)]
    assert runbook(*args, "--yes").code == 1
    first = next(tdir.rglob("*.jsonl"))
    (identified,) = of_type(events(first), "target.identified")
    recorded = identified["redis_run_id"]
    server.restart()  # a restart: another server process, another run_id
    server.client().set("health", "ok")
    cont = ["continue", str(first), "--transcripts-dir", str(tdir), "--procedures", str(procs), "--yes"]
    refused = runbook(*cont)
    assert refused.code == 3, refused.output
    assert f"run_id {recorded} then" in refused.stderr and "another server process" in refused.stderr
    accepted = runbook(*cont, "--allow-changed")
    assert accepted.code == 0, accepted.output
    assert "another server process" in accepted.stdout


def test_a_fleet_with_a_cluster_target_reads_every_node_of_it(fleet, tmp_path):
    """A fleet mixes deployments: four standalone servers and a 3-shard Cluster, one row per target."""
    from engine.sandbox.topologies import start_cluster

    cluster = start_cluster(primaries=3, replicas=1)
    try:
        inventory = _inventory(tmp_path, [*fleet[:4], cluster.nodes[0]])
        result = runbook(*_base(tmp_path, inventory, "redis/health-check"), "--target", "production/*", "--json")
        assert result.code in (0, 1), result.output  # the verdicts of health checks on tiny test servers
        report = json.loads(result.stdout)
        rows = {row["target"]: row for row in report["targets"]}
        assert set(rows) == {f"production/r{i}" for i in range(5)}
        cluster_run = rows["production/r4"]
        discovered = of_type(events(cluster_run["transcript"]), "topology.discovered")[0]["topology"]
        assert discovered["kind"] == "cluster" and len(discovered["nodes"]) == 6
        for row in rows.values():
            _verified(row["transcript"])
    finally:
        cluster.stop()
