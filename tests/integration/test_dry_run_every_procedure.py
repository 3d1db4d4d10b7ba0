"""A dry-run of every shipped procedure against a healthy world exits 0.

A healthy world is the rehearsal's: a real redis-server (password-protected, seeded with the SomaBrain-like
keyspace), its host over a real sshd with a service script, and the health endpoint, behind one inventory
target. Nothing is wrong in it, so a dry-run that exits non-zero is a procedure that fails on its own
predictions (a check of a file the dry-run did not write, a show line that breaks on a predicted result).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.rehearsal.world import World, WorldSpec
from engine.sandbox import seed_somabrain
from engine.spec.loader import Catalog
from tests.conftest import require_binary
from tests.integration.cli_support import events, of_type, runbook

SHIPPED = sorted(Catalog().entries())

# Params a procedure requires, or needs to be given to do its job on the healthy world; every other param
# keeps its default. `{...}` names a file the fixture makes.
SAMPLE_VARS: dict[str, dict[str, str]] = {
    "redis/backup-tenant": {"tenant": "acme"},
    "redis/backup-verify": {"path": "{rdb}"},
    "redis/config-set": {"parameter": "maxmemory-policy", "value": "allkeys-lru"},
    "redis/restore-rdb": {"backup": "{rdb}"},
    # the export's keys exist on the live server (it was taken from it): without replace=true the
    # procedure refuses to overwrite them, by design
    "redis/restore-tenant": {"input": "{export}", "tenant": "acme", "replace": "true"},
    "redis/verify-checklist": {"backup_dir": "{backups}"},
    "redis/wm-clear": {"tenant": "acme"},
    "redis/wm-extend": {"tenant": "acme"},
    "redis/wm-inspect": {"tenant": "acme"},
}

# A procedure whose dry-run may exit non-zero on a healthy world, with the reason. None today: a
# procedure meant to find a fault reports a healthy world as healthy.
EXPECTED_EXIT: dict[str, tuple[int, str]] = {
    "redis/cluster-health": (1, "the healthy world is one standalone server, not a Cluster: said as a finding"),
    "redis/failover": (1, "a planned failover needs Sentinel or a Cluster: refused on a standalone server"),
    "redis/rolling-restart": (1, "a rolling restart needs a primary with replicas: refused on a standalone server"),
}


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    for binary in ("redis-server", "sshd", "ssh-keygen"):
        require_binary(binary)
    # healthy: no command is slow (a busy test machine is not a slow Redis: troubleshoot-performance
    # would rightly report a 20 ms SAVE of the set-up as a finding)
    w = World.start(WorldSpec(password=True, config={"slowlog-log-slower-than": "10000000"}))
    try:
        with w.client() as client:
            seed_somabrain(client)
            client.save()
        assert w.redis is not None
        rdb = w.backups / "nightly.rdb"
        shutil.copyfile(w.redis.directory / "dump.rdb", rdb)
        exports = w.directory / "exports"
        exports.mkdir()
        made = runbook(
            "run",
            "redis/backup-tenant",
            *("--inventory", str(w.inventory_path), "--target", "sandbox/rehearsal"),
            *("--var", "tenant=acme", "--var", f"output={exports}"),
            *("--transcripts-dir", str(w.directory / "setup")),
        )
        assert made.code == 0, made.output
        (export,) = exports.iterdir()
        yield {"world": w, "files": {"rdb": str(rdb), "export": str(export), "backups": str(w.backups)}}
    finally:
        w.stop()


def sample_vars(procedure: str, files: dict[str, str]) -> dict[str, str]:
    return {name: value.format(**files) for name, value in SAMPLE_VARS.get(procedure, {}).items()}


def test_every_shipped_procedure_is_covered() -> None:
    assert len(SHIPPED) >= 30
    assert set(SAMPLE_VARS) <= set(SHIPPED) and set(EXPECTED_EXIT) <= set(SHIPPED)


@pytest.mark.parametrize("procedure", SHIPPED)
def test_dry_run_of_a_healthy_world_exits_0(world: dict[str, Any], procedure: str, tmp_path: Path) -> None:
    w: World = world["world"]
    argv = ["run", procedure, "--inventory", str(w.inventory_path), "--target", "sandbox/rehearsal", "--dry-run"]
    for name, value in sample_vars(procedure, world["files"]).items():
        argv += ["--var", f"{name}={value}"]
    transcripts = tmp_path / "transcripts"
    result = runbook(*argv, "--transcripts-dir", str(transcripts), "--json", cwd=tmp_path, timeout=180)
    expected, why = EXPECTED_EXIT.get(procedure, (0, ""))
    assert result.code == expected, f"{why}\n{result.stderr[-4000:]}"
    (path,) = transcripts.rglob("*.jsonl")
    finished = of_type(events(path), "step.finished")
    assert finished, "no step ran"
    # a step's `show` line renders on what the dry-run registered (predictions included)
    broken = [(e["step"]["id"], e["summary"]) for e in finished if str(e.get("summary", "")).startswith("(show:")]
    assert broken == []
    # no change left the dry-run; no expectation failed on a prediction
    assert not [e for e in finished if e.get("changes")]
    failing = [e["step"]["id"] for e in finished if e["outcome"] in ("failed", "error", "refused")]
    assert failing == ([] if expected == 0 else failing[:1])  # an expected refusal is one step's, the first


CHECKS_A_PREDICTION = """\
id: test/checks-a-prediction
title: T
section: test
description: A dump's check that does not say `verifies`, as backup-full's did not.
requires: [redis]
steps:
  - id: download
    name: Stream the RDB
    rdb: {download: {output_dir: "{{ params.out }}"}}
    confirm: Stream a full RDB?
    register: dump
  - id: check
    name: Check the dump
    rdb: {verify: {path: "{{ dump.path }}"}}
    register: check
    expect:
      - that: check.ok
        message: "not a valid RDB: {{ check.problems | join('; ') }}"
params:
  out: {type: string, default: "."}
"""


def test_a_check_of_a_predicted_result_is_predicted_without_verifies(redis_server, tmp_path: Path) -> None:
    """The class behind backup-full: a step that works on a register the dry-run only predicted."""
    server = redis_server()
    (tmp_path / "procs").mkdir()
    (tmp_path / "procs" / "checks.yaml").write_text(CHECKS_A_PREDICTION, encoding="utf-8")
    common = ["--redis", server.url, "--procedures", str(tmp_path / "procs"), "--var", f"out={tmp_path / 'out'}"]
    transcripts = ["--transcripts-dir", str(tmp_path / "t"), "--json"]
    dry = runbook("run", "test/checks-a-prediction", *common, "--dry-run", *transcripts)
    assert dry.code == 0, dry.output
    check = next(s for s in dry.json()["steps"] if s["id"] == "check")
    assert check["expectations"][0]["held"] is None and "predicted" in check["expectations"][0]["reason"]
    real = runbook("run", "test/checks-a-prediction", *common, "--yes", *transcripts)
    assert real.code == 0, real.output  # for real, the check is checked
    check = next(s for s in real.json()["steps"] if s["id"] == "check")
    assert check["expectations"][0]["held"] is True
