"""redis/maxclients-emergency, redis/eviction-storm, redis/hot-keys: each rehearsed end to end on a real
redis-server (the fault injected, a dry-run, the real run, the success checks), plus the cleanup that
must always run."""

from __future__ import annotations

import json

import pytest

from tests.integration.cli_support import events, of_type, runbook


def transcript(tmp_path, path: str) -> list[dict]:
    return events(path if path.startswith("/") else tmp_path / path)


def rehearse(procedure: str, scenario: str, tmp_path) -> dict:
    """One scenario (a procedure may have several: eviction-storm and hot-keys have one at the defaults too)."""
    result = runbook(
        "rehearse",
        procedure,
        "--scenario",
        scenario,
        "--json",
        "--transcripts-dir",
        str(tmp_path),
        cwd=tmp_path,
        timeout=300,
        env={"RUNBOOK_CHECK_RESULTS": "1"},
    )
    assert result.code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert report["resolved"] and report["predictions_matched"], report
    return report


@pytest.mark.parametrize(
    ("procedure", "scenario", "change", "cleanup"),
    [
        ("redis/maxclients-emergency", "leaking-pool-at-maxclients", "raise", "put-back"),
        ("redis/hot-keys", "one-tenant-key-hammered", "switch-lfu", "put-back-policy"),
    ],
)
def test_the_temporary_change_is_put_back_pre_approved(tmp_path, procedure, scenario, change, cleanup):
    report = rehearse(procedure, scenario, tmp_path)
    evts = (
        events(tmp_path / report["transcript"])
        if not report["transcript"].startswith("/")
        else events(report["transcript"])
    )
    finished = {e["step"]["id"]: e for e in of_type(evts, "step.finished")}
    raised = finished[change]["changes"][0]
    restored = finished[cleanup]["changes"][0]
    assert finished[cleanup]["cleanup"] is True
    assert (restored["before"], restored["after"]) == (raised["after"], raised["before"])
    given = next(e for e in of_type(evts, "approval.given") if e["step"]["id"] == cleanup)
    assert given["method"] == "pre-approved" and given["pre_approved_by"]["step"] == change
    dry = (
        events(tmp_path / report["dry_run_transcript"])
        if not report["dry_run_transcript"].startswith("/")
        else events(report["dry_run_transcript"])
    )
    dry_cleanup = next(e for e in of_type(dry, "step.finished") if e["step"]["id"] == cleanup)
    assert dry_cleanup["outcome"] == "predicted"


def test_eviction_storm_is_found_and_stopped(tmp_path):
    report = rehearse("redis/eviction-storm", "tenant-writes-past-maxmemory", tmp_path)
    evts = transcript(tmp_path, report["transcript"])
    finished = {e["step"]["id"]: e for e in of_type(evts, "step.finished")}
    series = finished["rates"]["result"]
    assert series["count"] >= 2 and not series["interrupted"]
    assert finished["raise"]["changes"] == [
        {"kind": "config", "name": "maxmemory", "before": "4194304", "after": "67108864"}
    ]
    assert finished["rates-after"]["expectations"][0]["held"] is True
