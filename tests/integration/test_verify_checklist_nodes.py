"""redis/verify-checklist on a replicated deployment: a row per node for the Redis reads, one verdict over
all of them, the probe written and removed on the primary only; end to end on real redis-server and sshd."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from engine.sandbox.sshd import install_redis_service, inventory_for, write_inventory
from tests.integration.cli_support import CliResult, runbook


@pytest.fixture
def replicated(replicated_deployment):
    return replicated_deployment(replicas=2, sentinels=0)


@pytest.fixture
def checklist(replicated, sshd_host, health_endpoint, tmp_path: Path):
    """Runs verify-checklist against the primary (its host over SSH, a fresh verified backup)."""
    host = sshd_host()
    service = install_redis_service(host, replicated.primary)
    data = inventory_for(replicated.primary, host, service, http_base_url=health_endpoint().base_url)
    data["environments"]["sandbox"]["targets"]["sandbox"]["redis"]["timeout"] = "1s"  # a stopped node: 1 s
    inventory = write_inventory(tmp_path / "inventory.yaml", data)
    with replicated.primary.client() as client:
        client.save()
    backups = tmp_path / "backups"
    backups.mkdir()
    shutil.copyfile(service.rdb_path, backups / "redis-dump-20261126.rdb")
    # The replicas' initial sync logged "Diskless rdb transfer ... replicas still up" at warning level:
    # routine, so the log item must pass with it in the window.
    assert "Diskless rdb transfer" in Path(service.log_file).read_text()

    def run(*args: str) -> CliResult:
        return runbook(
            "run", "redis/verify-checklist", "--inventory", str(inventory), "--target", "sandbox",
            "--var", f"backup_dir={backups}", "--transcripts-dir", str(tmp_path / "transcripts"), "--json", *args,
            timeout=180,
        )  # fmt: skip

    return run


def _steps(result: CliResult) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in result.json()["steps"]}


def _address(server) -> str:
    return f"{server.host}:{server.port}"


def _probe_keys(servers) -> dict[str, list[str]]:
    out = {}
    for server in servers:
        with server.client() as client:
            out[_address(server)] = list(client.scan_iter("tenant:_runbook_probe:*", count=1000))
    return out


def test_every_node_has_a_row_and_the_checklist_passes(replicated, checklist):
    result = checklist("--yes")

    assert result.code == 0, result.output
    steps = _steps(result)
    rows = steps["memory"]["result"]
    assert sorted(r["node"] for r in rows) == sorted(_address(s) for s in replicated.servers)
    assert {r["node"]: r["role"] for r in rows}[_address(replicated.primary)] == "primary"
    assert [r["role"] for r in rows].count("replica") == 2
    assert all(r["outcome"] == "ok" for r in rows)
    assert set(steps["summary"]["result"].values()) == {"pass"}
    assert steps["wm-read"]["result"]["written_by"] == result.json()["run_id"]
    for replica in replicated.replicas:
        assert f"{_address(replica)} replica: used " in result.output
    assert _probe_keys(replicated.servers) == {_address(s): [] for s in replicated.servers}


def test_one_replica_above_its_memory_threshold_fails_the_verdict_and_is_named(replicated, checklist):
    high, fine = replicated.replicas
    with high.client() as client:  # held for the run: a replica does not evict, it just reports the usage
        client.config_set("maxmemory", "512kb")  # an idle redis-server alone uses about 1 MB
    try:
        result = checklist("--yes")
    finally:
        with high.client() as client:
            client.config_set("maxmemory", "0")

    assert result.code == 1, result.output
    steps = _steps(result)
    assert steps["summary"]["result"]["memory_normal"] == "fail"
    assert {k: v for k, v in steps["summary"]["result"].items() if k != "memory_normal"} == {
        "service_running": "pass",
        "somabrain_connects": "pass",
        "working_memory": "pass",
        "no_error_logs": "pass",
        "backup_valid": "pass",
    }
    assert f"[ ] Memory usage is normal - FAILED; {_address(high)} (replica)" in result.output
    assert f"{_address(fine)} (replica)" not in result.output
    assert f"Memory is above 90% of maxmemory on {_address(high)} (replica): see" in result.output


def test_a_replica_that_does_not_answer_fails_the_verdict_and_is_named(replicated, checklist):
    stopped = replicated.replicas[1]
    os.kill(stopped.pid, signal.SIGSTOP)  # held until the run is over
    try:
        result = checklist("--yes")
    finally:
        os.kill(stopped.pid, signal.SIGCONT)

    assert result.code == 1, result.output
    steps = _steps(result)
    rows = {r["node"]: r for r in steps["memory"]["result"]}
    assert rows[_address(stopped)]["outcome"] == "error"
    assert [rows[_address(s)]["outcome"] for s in (replicated.primary, replicated.replicas[0])] == ["ok", "ok"]
    items = steps["summary"]["result"]
    assert items["service_running"] == "fail" and items["memory_normal"] == "pass"
    assert items["working_memory"] == "pass"  # the probe is on the primary, which answers
    assert f"[ ] Redis service is running - FAILED; {_address(stopped)} (replica)" in result.output
    assert f"{_address(stopped)} (replica) did not answer" in result.output


def test_dry_run_on_the_replicated_deployment_changes_nothing(replicated, checklist):
    before = {}
    for server in replicated.servers:
        with server.client() as client:
            before[_address(server)] = (client.dbsize(), client.info("replication")["role"])

    result = checklist("--dry-run")

    assert result.code == 0, result.output
    steps = _steps(result)
    assert len(steps["memory"]["result"]) == 3
    changing = [s for s in result.json()["steps"] if s["effect"] in ("write", "destructive")]
    assert {s["id"] for s in changing} == {"wm-write", "wm-ttl", "wm-delete"}
    assert all(s["outcome"] == "predicted" for s in changing)
    assert steps["summary"]["result"]["working_memory"] == "not checked (dry-run)"
    after = {}
    for server in replicated.servers:
        with server.client() as client:
            after[_address(server)] = (client.dbsize(), client.info("replication")["role"])
    assert after == before
