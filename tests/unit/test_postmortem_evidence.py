"""The pure parts of issue 14: impact/follow_up in the procedure format, the evidence read from transcripts
(figures, findings, follow-ups, severity, milestones), the key-events view, the draft's sections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.errors import UsageError
from engine.spec.loader import check_file, load_procedure
from engine.spec.model import FollowUp, Impact
from engine.timeline import build_timeline, fmt
from engine.timeline.evidence import severity
from engine.timeline.incident import notes_path
from engine.timeline.notes import add_note
from engine.timeline.postmortem import render_postmortem
from engine.transcript import Redactor, TranscriptWriter, read_transcript

T0 = datetime(2026, 11, 26, 1, 40, tzinfo=UTC)
INC = "INC-9"
WHERE = "redis://10.0.0.1:6379/0"
RAISE = "CONFIG SET maxmemory 4gb"
TEMPORARY = "maxmemory raised from 16mb to 4gb: temporary until persisted with CONFIG REWRITE"


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def step(sid: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"id": sid, "name": name, "kind": "redis", "source": "p.yaml:3", "index": 0, **extra}


def run(directory: Path, run_id: str, start: datetime, events: list[tuple[str, dict[str, Any]]], **kw: Any) -> Path:
    clock = Clock(start)
    path = directory / f"{run_id}.jsonl"
    with TranscriptWriter.create(path, run_id, Redactor(), clock=clock) as writer:
        writer.emit(
            "run.started",
            procedure={"id": kw.get("procedure", "redis/emergency-oom"), "title": "OOM"},
            operator=kw.get("operator", "bob"),
            mode=kw.get("mode", "live"),
            incident=INC,
            target={"name": "cache", "environment": "production", "redis": WHERE},
        )
        for kind, fields in events:
            clock.now += timedelta(seconds=1)
            writer.emit(kind, **fields)
        clock.now += timedelta(seconds=1)
        writer.end(outcome=kw.get("outcome", "ok"), exit_code=kw.get("exit_code", 0), duration_ms=9000)
    return path


def oom_runs(directory: Path) -> list[Path]:
    mem = step("memory", "Check memory usage")
    audit = step("audit", "Count keys without a TTL", procedure="redis/audit-ttl", call_depth=1)
    raise_ = step("raise-maxmemory", "Increase the memory limit")
    skipped = step("flush", "Clear the cache")
    verify = step("verify", "Verify memory")
    failing = [{"that": "pct <= 90", "severity": "warning", "held": False, "message": "Memory usage is above 90%"}]
    health = run(
        directory,
        "run-health",
        T0 + timedelta(minutes=5),
        [
            ("step.started", {"step": mem, "effect": "read", "where": WHERE, "command": "INFO memory"}),
            (
                "step.finished",
                {
                    "step": mem,
                    "outcome": "ok",
                    "summary": "used 16.2M, 100.5% of maxmemory 16M",
                    "expectations": failing,
                    "impact": [{"name": "memory used", "value": 100.5, "unit": "% of maxmemory"}],
                    "follow_up": [{"kind": "detect", "text": "Alert at 90% of maxmemory"}],
                },
            ),
            (
                "step.finished",
                {
                    "step": audit,
                    "outcome": "ok",
                    "summary": "5684 of 5769 keys have no TTL; by tenant: acme 5680, beta 4",
                    "expectations": [
                        {
                            "that": "audit.without_ttl == 0",
                            "severity": "info",
                            "held": False,
                            "message": "5684 keys never expire (possible memory leak), tenant acme 5680, beta 4.",
                        }
                    ],
                    "follow_up": [{"kind": "prevent", "text": "Give acme's 5684 keys a TTL"}],
                },
            ),
        ],
        operator="alice",
        outcome="findings",
        exit_code=1,
        procedure="redis/health-check",
    )
    oom = run(
        directory,
        "run-oom",
        T0 + timedelta(minutes=8),
        [
            (
                "step.finished",
                {
                    "step": mem,
                    "outcome": "ok",
                    "impact": [
                        {"name": "memory used", "value": 101.7, "unit": "% of maxmemory"},
                        {"name": "writes refused (errorstat_OOM)", "value": 1234, "unit": "commands"},
                    ],
                    "expectations": failing,
                    "follow_up": [{"kind": "detect", "text": "Alert  at 90% of\nmaxmemory"}],  # same, spaced
                },
            ),
            ("step.started", {"step": raise_, "effect": "write", "where": WHERE, "command": RAISE}),
            ("approval.given", {"step": raise_, "by": "flag", "method": "flag", "command_sha256": "a" * 64}),
            (
                "step.finished",
                {
                    "step": raise_,
                    "outcome": "ok",
                    "changes": [{"kind": "config", "name": "maxmemory", "before": "16mb", "after": "4gb"}],
                    "follow_up": [{"kind": "mitigate", "text": TEMPORARY}],
                },
            ),
            ("step.skipped", {"step": skipped, "reason": "when need.flush_now is false"}),
            (
                "step.finished",
                {
                    "step": verify,
                    "outcome": "ok",
                    "impact": [{"name": "memory used", "value": 0.4, "unit": "% of maxmemory"}],
                    "expectations": [{"that": "ok", "severity": "critical", "held": True, "message": "m"}],
                },
            ),
        ],
    )
    dry = run(
        directory,
        "run-dry",
        T0 + timedelta(minutes=7),
        [
            ("step.started", {"step": raise_, "effect": "write", "where": WHERE, "command": RAISE}),
            (
                "step.finished",
                {
                    "step": raise_,
                    "outcome": "predicted",
                    "predicted_changes": [{"kind": "config", "name": "maxmemory", "before": "16mb", "after": "4gb"}],
                },
            ),
            ("step.skipped", {"step": skipped, "reason": "when need.flush_now is false"}),
        ],
        mode="dry-run",
    )
    return [health, oom, dry]


def notes(directory: Path, *, severity_flag: str | None = None) -> Path:
    for text, milestone, minutes, who in (
        ("errors start", "impact-start", 0, "alice"),
        ("alert fired", "detected", 3, "pagerduty"),
        ("on it", "acknowledged", 4, "alice"),
        ("Declared sev2: writes refused", "declared", 5, "alice"),
        ("writes accepted", "mitigated", 9, "bob"),
        ("closed", "resolved", 12, "bob"),
    ):
        add_note(
            directory,
            INC,
            text,
            operator=who,
            milestone=milestone,
            at=T0 + timedelta(minutes=minutes),
            severity=severity_flag if milestone == "declared" else None,
        )
    return notes_path(directory, INC)


def timeline(tmp_path: Path, **kw: Any):
    paths = [*oom_runs(tmp_path), notes(tmp_path, **kw)]
    return build_timeline([read_transcript(p) for p in paths], INC)


def test_milestones_measure_detect_acknowledge_mitigate_resolve(tmp_path: Path) -> None:
    f = timeline(tmp_path).facts
    assert f.start == f.impact_start == T0 and f.first_signal == T0 + timedelta(minutes=3)
    assert f.time_to_detect == timedelta(minutes=3)
    assert f.time_to_acknowledge == timedelta(minutes=1)
    assert f.time_to_mitigate == timedelta(minutes=9)
    assert f.time_to_resolve == timedelta(minutes=12)
    assert f.duration == timedelta(minutes=9)  # first signal to resolved, as before


def test_severity_from_the_flag_else_the_declared_text(tmp_path: Path) -> None:
    assert timeline(tmp_path / "a").facts.severity == "SEV2"  # "sev2" in the declared note's text
    assert timeline(tmp_path / "b", severity_flag="P1").facts.severity == "P1"  # the flag wins
    assert severity(()) == (None, None)
    with pytest.raises(UsageError, match="--severity"):
        add_note(tmp_path, INC, "x", operator="a", severity="SEV 2; rm -rf")


def test_evidence_figures_findings_and_deduplicated_follow_ups(tmp_path: Path) -> None:
    f = timeline(tmp_path).facts
    assert [(x.name, x.value, x.ref) for x in f.figures] == [
        ("memory used", 100.5, "run-health#2"),
        ("memory used", 101.7, "run-oom#1"),
        ("writes refused (errorstat_OOM)", 1234, "run-oom#1"),
        ("memory used", 0.4, "run-oom#6"),
    ]
    causes = [x for x in f.findings if not x.impact]
    assert len(causes) == 1 and "tenant acme 5680" in causes[0].message and "acme 5680" in str(causes[0].evidence)
    assert causes[0].procedure == "redis/audit-ttl"  # the called procedure, not the caller
    assert [x.ref for x in f.findings if x.impact] == ["run-health#2", "run-oom#1"]
    assert [(c.ref, c.held) for c in f.checks] == [("run-health#2", False), ("run-oom#1", False), ("run-oom#6", True)]
    kinds = {item.kind: item for item in f.follow_ups}
    assert set(kinds) == {"detect", "prevent", "mitigate"} and len(f.follow_ups) == 3
    assert kinds["detect"].refs == ("run-health#2", "run-oom#1")  # one item, both source lines
    assert f.target_names == ("production/cache",)


def test_draft_sections_filled_from_evidence(tmp_path: Path) -> None:
    pm = render_postmortem(timeline(tmp_path))
    impact = pm.split("## Impact")[1].split("\n## ")[0]
    assert "**memory used**: first 100.5 % of maxmemory" in impact and "peak 101.7" in impact and "last 0.4" in impact
    assert "**writes refused (errorstat\\_OOM)**: first 1,234 commands" in impact and "`run-oom#1`" in impact
    assert "Checks failing from 2026-11-26 01:45:02 UTC" in impact and "`run-oom#6`" in impact
    causes = pm.split("## Contributing causes")[1].split("\n## ")[0]
    assert "tenant acme 5680" in causes and "Evidence: 5684 of 5769 keys have no TTL" in causes
    assert "Memory usage is above 90%" not in causes
    actions = pm.split("## Action items")[1].split("\n## ")[0]
    assert TEMPORARY in actions and "| mitigate |" in actions and actions.count("Alert at 90% of maxmemory") == 1
    assert "Memory usage" not in actions
    assert "| Severity | SEV2 (`notes-INC-9#3`) |" in pm
    assert "production/cache (redis://10.0.0.1:6379/0)" in pm


def test_key_events_fold_runs_and_dry_runs(tmp_path: Path) -> None:
    t = timeline(tmp_path)
    keys = t.key_rows
    runs = [r for r in keys if r.type == "run"]
    assert [r.run_id for r in runs] == ["run-health", "run-dry", "run-oom"]  # in time order
    assert not [r for r in keys if r.status == "skipped" or r.type in ("run.started", "run.ended")]
    dry = next(r for r in runs if r.run_id == "run-dry")
    assert dry.predicted and dry.changes == ("config maxmemory: 16mb -> 4gb",) and dry.status == "predicted"
    assert [r for r in keys if r.run_id == "run-dry"] == [dry]  # a dry-run is one row
    assert "1 skipped" in (dry.detail or "") and len(dry.steps) == len([r for r in t.rows if r.run_id == "run-dry"])
    oom = [r.type for r in keys if r.run_id == "run-oom"]
    assert oom == ["run", "step.finished", "approval.given", "step.finished"]  # finding, approval, change
    assert "run-health#3" in {r.ref for r in keys}  # the info finding (keys without a TTL) is a key event
    assert len([r for r in keys if r.type == "note"]) == 6
    assert t.view("full") == t.rows and t.view("key") == keys


def test_html_key_view_expands_each_run_and_folds_long_results(tmp_path: Path) -> None:
    from engine.timeline.html import render_html

    page = render_html(timeline(tmp_path), detail="key")
    assert page.count("<details class='steps'>") == 3 and "rows of this run" in page
    long = "x " * 200
    from engine.timeline.html import _long

    folded = _long(long)
    assert "<details class='more'>" in folded and len(folded.split("<details")[0]) < 120


PROCEDURE = """\
id: test/declared
title: Declared
section: Test
description: impact and follow_up on a step
steps:
  - id: count
    name: Count keys
    redis:
      command: [DBSIZE]
    register: n
    impact:
      - name: keys stored
        value: n
        unit: keys
        when: n > 0
    follow_up:
      - kind: prevent
        text: "Give the {{ n }} keys a TTL"
"""


def test_impact_and_follow_up_load_and_are_validated(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(PROCEDURE, encoding="utf-8")
    proc = load_procedure(good)
    assert proc.steps[0].impact == (Impact("keys stored", "n", "keys", "n > 0"),)
    assert proc.steps[0].follow_up == (FollowUp("prevent", "Give the {{ n }} keys a TTL"),)
    for old, new, said in (
        ("kind: prevent", "kind: fix", "follow_up"),
        ("value: n", "value: nope", "undeclared name 'nope'"),
        ("        unit: keys\n", "", "unit"),
        ("{{ n }} keys", "{{ missing }} keys", "undeclared name 'missing'"),
    ):
        bad = tmp_path / "bad.yaml"
        bad.write_text(PROCEDURE.replace(old, new), encoding="utf-8")
        _, errors, _ = check_file(bad)
        assert errors and any(said in e.message or said in str(e) for e in errors), (old, errors)
        assert all(e.line for e in errors)  # file and line named


def test_fmt_is_shared() -> None:
    assert fmt.duration(timedelta(minutes=3)) == "3m 00s"
