"""The timeline's pure core: merge, order, dedupe, rows, facts and the renderers, on transcripts written
by the real TranscriptWriter with a controlled clock (the integration tests use real runs)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from engine.errors import UsageError
from engine.timeline import build_timeline, fmt
from engine.timeline.changes import change_text, changes_text
from engine.timeline.html import render_html
from engine.timeline.incident import check_incident_id, incident_files, notes_path
from engine.timeline.json_out import to_json
from engine.timeline.markdown import render_markdown
from engine.timeline.notes import add_note, parse_at
from engine.timeline.postmortem import render_postmortem
from engine.transcript import Redactor, TranscriptWriter, read_transcript, verify_transcript

T0 = datetime(2026, 11, 26, 1, 40, tzinfo=UTC)
STEP = {"id": "raise", "name": "Raise maxmemory", "kind": "redis", "source": "p.yaml:9", "index": 1}
READ = {"id": "read", "name": "Read maxmemory", "kind": "redis", "source": "p.yaml:3", "index": 0}
CMD = "CONFIG SET maxmemory 4gb"


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, moment: datetime) -> Clock:
        self.now = moment
        return self


def write_run(
    directory: Path,
    run_id: str,
    start: datetime,
    events: list[tuple[str, dict[str, Any]]],
    *,
    end: dict[str, Any] | None = None,
    mode: str = "live",
    operator: str = "alice",
    incident: str | None = "INC-7",
    step_s: float = 1.0,
) -> Path:
    """A transcript with `events`, one every `step_s` seconds from `start` (negative: the clock jumps back)."""
    clock = Clock(start)
    path = directory / f"{run_id}.jsonl"
    with TranscriptWriter.create(path, run_id, Redactor(), clock=clock) as writer:
        writer.emit(
            "run.started",
            procedure={"id": "redis/raise-maxmemory", "title": "Raise maxmemory"},
            engine_version="0.1.0",
            operator=operator,
            host="ops-1",
            mode=mode,
            incident=incident,
            params={"new": "4gb"},
            target={"name": "cache-1", "environment": "prod", "redis": "redis://10.0.0.1:6379/0"},
        )
        for kind, fields in events:
            clock.now += timedelta(seconds=step_s)
            writer.emit(kind, **fields)
        if end is not None:
            clock.now += timedelta(seconds=step_s)
            writer.end(**end)
    return path


def approved_run(directory: Path, run_id: str, start: datetime, **kw: Any) -> Path:
    """Read, approval by --yes, the change: the order the runner writes them in."""
    where = "redis://10.0.0.1:6379/0"
    change = {"kind": "config", "name": "maxmemory", "before": "2147483648", "after": "4294967296"}
    return write_run(
        directory,
        run_id,
        start,
        [
            ("step.started", {"step": READ, "effect": "read", "where": where, "command": "CONFIG GET maxmemory"}),
            ("step.finished", {"step": READ, "outcome": "ok", "duration_ms": 3.5, "result": {"maxmemory": "2gb"}}),
            ("step.started", {"step": STEP, "effect": "write", "where": where, "command": CMD}),
            ("approval.requested", {"step": STEP, "effect": "write", "command": CMD, "command_sha256": "a" * 64}),
            ("approval.given", {"step": STEP, "by": "flag", "method": "flag", "command_sha256": "a" * 64}),
            ("step.finished", {"step": STEP, "outcome": "ok", "duration_ms": 0.7, "changes": [change]}),
        ],
        end={"outcome": "ok", "exit_code": 0, "duration_ms": 6806.5},
        **kw,
    )


def refused_run(directory: Path, run_id: str, start: datetime) -> Path:
    where = "redis://10.0.0.1:6379/0"
    return write_run(
        directory,
        run_id,
        start,
        [
            ("step.started", {"step": STEP, "effect": "write", "where": where, "command": CMD}),
            ("approval.requested", {"step": STEP, "effect": "write", "command": CMD, "command_sha256": "a" * 64}),
            ("approval.refused", {"step": STEP, "by": "bob", "reason": "declined", "command_sha256": "a" * 64}),
            ("step.finished", {"step": STEP, "outcome": "refused", "duration_ms": 1, "error": {"message": "no"}}),
        ],
        end={"outcome": "refused", "exit_code": 3, "duration_ms": 20},
        operator="bob",
    )


def load(*paths: Path, incident: str | None = None):
    return build_timeline([read_transcript(p) for p in paths], incident)


def note(directory: Path, text: str, *, at: datetime, written: datetime, **kw: Any) -> None:
    """A note written at `written` about something that happened `at`."""
    path = notes_path(directory, "INC-7")
    with TranscriptWriter.append_to(path, Redactor(), run_id="notes-INC-7", clock=Clock(written)) as writer:
        writer.emit("note", text=text, at=fmt.iso(at), **kw)


# -- formatting --------------------------------------------------------------------------------------


def test_offsets_and_durations_read_like_a_postmortem() -> None:
    assert fmt.offset(timedelta(minutes=5, seconds=3)) == "T+00:05:03"
    assert fmt.offset(timedelta(seconds=-90)) == "T-00:01:30"
    assert fmt.offset(timedelta(days=1, hours=2)) == "T+1d 02:00:00"
    assert fmt.duration(timedelta(hours=1, minutes=2, seconds=3)) == "1h 02m 03s"
    assert fmt.duration(timedelta(minutes=5)) == "5m 00s"
    assert fmt.duration(timedelta(milliseconds=350)) == "350 ms"
    assert fmt.millis(6806.5) == "7s" and fmt.millis(None) == ""
    assert fmt.local(T0, ZoneInfo("Asia/Tokyo")) == "10:40:00 JST"
    assert fmt.local(T0, ZoneInfo("America/New_York")) == "11-25 20:40:00 EST"  # the day before there


def test_every_change_kind_in_words_and_no_secret() -> None:
    assert change_text({"kind": "config", "name": "maxmemory", "before": "0", "after": "4294967296"}) == (
        "config maxmemory: 0 -> 4294967296"
    )
    assert change_text({"kind": "keys_removed", "count": 1, "keys": ["tenant:acme:wm:active"]}) == (
        "keys removed: 1 (tenant:acme:wm:active)"
    )
    many = {"kind": "keys_removed", "count": 40, "keys": [f"k{i}" for i in range(8)]}
    assert change_text(many) == "keys removed: 40 (k0, k1, k2, k3, k4, +35 more)"
    assert change_text({"kind": "keys_removed", "count": 91, "keys": [], "scope": "FLUSHDB"}) == (
        "keys removed: 91 (FLUSHDB)"
    )
    ttl = {"kind": "ttl_set", "count": 3, "keys": ["a", "b", "c"], "ttl_before": [-1, -1, -1], "ttl_after": 3600}
    assert change_text(ttl) == "TTL set on 3 keys (a, b, c) -> 3600s"
    assert change_text({"kind": "password_rotated", "name": "requirepass"}) == "password rotated (requirepass)"
    assert change_text({"kind": "service", "action": "restart", "host": "cache-1"}) == "service restart on cache-1"
    assert change_text({"kind": "file", "path": "/etc/redis.conf", "action": "replaced"}) == (
        "file replaced: /etc/redis.conf"
    )
    assert change_text({"kind": "command", "command": "FLUSHALL"}) == "ran FLUSHALL"
    assert change_text({"kind": "quota", "tenant": "acme"}) == "quota: tenant=acme"
    assert changes_text("not a list") == () and changes_text([{"kind": "command", "command": "X"}, 3]) == ("ran X",)


# -- merge, order, dedupe ----------------------------------------------------------------------------


def test_sources_merge_by_time_each_in_seq_order(tmp_path: Path) -> None:
    a = approved_run(tmp_path, "run-a", T0)
    b = refused_run(tmp_path, "run-b", T0 + timedelta(seconds=2.5))
    # a third run whose wall clock goes backwards: its own order (seq) must win
    notes = [("note", {"text": f"n{i}"}) for i in range(3)]
    end = {"outcome": "ok", "exit_code": 0, "duration_ms": 1}
    c = write_run(tmp_path, "run-c", T0 + timedelta(seconds=30), notes, end=end, step_s=-1)
    timeline = load(c, b, a)
    refs = [e.ref for e in timeline.entries]
    for run in ("run-a", "run-b", "run-c"):
        seqs = [int(r.split("#")[1]) for r in refs if r.startswith(run)]
        assert seqs == sorted(seqs) and seqs[0] == 0
    # interleaved by time: b starts at +2.5 s, between a's events at +2 s and +3 s
    assert refs.index("run-b#0") == refs.index("run-a#2") + 1
    assert [r.ref for r in timeline.rows if r.run_id == "run-c"] == [
        "run-c#0",
        "run-c#1",
        "run-c#2",
        "run-c#3",
        "run-c#4",
    ]


def test_the_same_run_given_twice_is_kept_once(tmp_path: Path) -> None:
    a = approved_run(tmp_path, "run-a", T0)
    copy = tmp_path / "copy" / "run-a.jsonl"
    copy.parent.mkdir()
    shutil.copy(a, copy)
    once = load(a)
    twice = load(a, a, copy)
    assert [r.ref for r in twice.rows] == [r.ref for r in once.rows]
    assert twice.notices == () and twice.sources[0].copies == (str(copy),)
    # a copy that differs is reported, and the intact one is used
    lines = copy.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"3.5", b"9.5")
    copy.write_bytes(b"\n".join(lines))
    differing = load(a, copy)
    assert [n.kind for n in differing.notices] == ["duplicate"] and "differs at seq 2" in differing.notices[0].text
    assert differing.sources[0].path == str(a)


# -- rows ----------------------------------------------------------------------------------------------


def test_rows_say_who_did_what_where_and_what_changed(tmp_path: Path) -> None:
    timeline = load(approved_run(tmp_path, "run-a", T0), refused_run(tmp_path, "run-b", T0 + timedelta(minutes=1)))
    by_type = {}
    for row in timeline.rows:
        by_type.setdefault(row.type, []).append(row)
    started = by_type["run.started"][0]
    assert started.what == "Started redis/raise-maxmemory: Raise maxmemory" and started.detail == "params: new=4gb"
    assert started.where == "prod/cache-1 (redis://10.0.0.1:6379/0)" and started.who == "alice"
    given = by_type["approval.given"][0]
    assert (given.who, given.result, given.command, given.status) == (
        "alice (--yes)",
        "approved by --yes",
        CMD,
        "approved",
    )
    refused = by_type["approval.refused"][0]
    assert (refused.who, refused.result, refused.status) == ("bob", "REFUSED: declined", "refused")
    # the refused step's own step.finished is folded into the refusal row
    assert [r.status for r in by_type["step.finished"]] == ["ok", "ok"]
    change = by_type["step.finished"][1]
    assert change.changes == ("config maxmemory: 2147483648 -> 4294967296",) and not change.predicted
    assert change.command == CMD and change.where == "redis://10.0.0.1:6379/0" and change.result == "ok (1 ms)"
    assert "step.started" not in by_type and "approval.requested" not in by_type  # noise left out
    ended = by_type["run.ended"]
    assert [(r.result, r.status) for r in ended] == [
        ("ok (exit 0) in 7s", "ok"),
        ("refused (exit 3) in 20 ms", "refused"),
    ]
    facts = timeline.facts
    assert [(c.text, c.approved_by) for c in facts.changes] == [
        ("config maxmemory: 2147483648 -> 4294967296", "alice (--yes)")
    ]
    assert [(a.by, a.refused) for a in facts.approvals] == [("alice (--yes)", False), ("bob", True)]
    assert facts.operators == ("alice", "bob") and facts.targets == ("prod/cache-1 (redis://10.0.0.1:6379/0)",)


def test_dry_run_changes_are_predicted_not_made(tmp_path: Path) -> None:
    change = {"kind": "keys_removed", "count": 2, "keys": ["a", "b"]}
    path = write_run(
        tmp_path,
        "dry",
        T0,
        [
            ("step.started", {"step": STEP, "effect": "destructive", "where": "w", "command": "UNLINK a b"}),
            ("step.finished", {"step": STEP, "outcome": "predicted", "duration_ms": 1, "predicted_changes": [change]}),
        ],
        end={"outcome": "ok", "exit_code": 0, "duration_ms": 5},
        mode="dry-run",
    )
    timeline = load(path)
    step = next(r for r in timeline.rows if r.type == "step.finished")
    assert step.predicted and step.status == "predicted" and step.changes == ("keys removed: 2 (a, b)",)
    assert timeline.rows[0].what.startswith("Started redis/raise-maxmemory as a DRY-RUN")
    assert timeline.facts.live_changes == () and len(timeline.facts.predicted_changes) == 1
    assert "would change: keys removed: 2 (a, b)" in render_markdown(timeline)


def test_failures_and_warnings_are_marked(tmp_path: Path) -> None:
    expectation = {"that": "x", "severity": "warning", "held": False, "message": "tenant does not exist"}
    path = write_run(
        tmp_path,
        "bad",
        T0,
        [
            ("step.finished", {"step": READ, "outcome": "ok", "duration_ms": 2, "expectations": [expectation]}),
            ("step.finished", {"step": STEP, "outcome": "error", "duration_ms": 2, "error": {"message": "refused"}}),
        ],
        end={"outcome": "error", "exit_code": 4, "duration_ms": 9, "error": "step 'raise' error"},
    )
    rows = load(path).rows
    assert [(r.status, r.result) for r in rows[1:]] == [
        ("warning", "ok, WARNING: tenant does not exist (2 ms)"),
        ("failed", "ERROR: refused (2 ms)"),
        ("failed", "error (exit 4) in 9 ms"),
    ]
    md = render_markdown(load(path))
    assert "**✗ ERROR: refused (2 ms)**" in md and "**Raise maxmemory**" in md


# -- notes and facts ---------------------------------------------------------------------------------


def test_notes_sit_where_they_happened_and_set_the_milestones(tmp_path: Path) -> None:
    run = approved_run(tmp_path, "run-a", T0 + timedelta(minutes=10))
    late = T0 + timedelta(minutes=30)
    note(tmp_path, "Declared SEV2", at=T0 + timedelta(minutes=5), written=late, milestone="declared", operator="bob")
    note(tmp_path, "Alert fired", at=T0, written=late, milestone="detected", operator="pagerduty")
    note(tmp_path, "Mitigated", at=T0 + timedelta(minutes=12), written=late, milestone="mitigated", operator="bob")
    note(tmp_path, "Resolved", at=T0 + timedelta(minutes=45), written=late, milestone="resolved", operator="bob")
    timeline = load(run, notes_path(tmp_path, "INC-7"), incident="INC-7")
    facts = timeline.facts
    assert facts.start == T0 and facts.first_signal_text == "Alert fired"
    assert facts.detection_gap == timedelta(minutes=5) and facts.duration == timedelta(minutes=45)
    assert facts.time_to_mitigate == timedelta(minutes=12)
    rows = timeline.rows
    assert [r.milestone for r in rows if r.milestone] == ["detected", "declared", "mitigated", "resolved"]
    assert rows[0].what == "Alert fired" and fmt.offset(rows[0].offset) == "T+00:00:00"
    assert rows[0].recorded == late and rows[0].who == "pagerduty"
    assert fmt.offset(rows[2].offset) == "T+00:10:00" and rows[2].type == "run.started"
    assert facts.operators == ("alice", "pagerduty", "bob")
    md = render_markdown(timeline)
    assert "| 01:40:00 | T+00:00:00 | pagerduty | **DETECTED: Alert fired**" in md
    assert "| Detection gap | 5m 00s (first signal to declared) |" in md
    assert "| Duration | 45m 00s (first signal to resolved) |" in md


def test_without_a_detected_note_the_first_event_starts_the_clock(tmp_path: Path) -> None:
    timeline = load(approved_run(tmp_path, "run-a", T0))
    assert timeline.facts.start == T0 and timeline.facts.declared is None and timeline.facts.duration is None
    md = render_markdown(timeline)
    assert "| Declared | not recorded (add it: runbook note ... --milestone declared --at TIME) |" in md
    pm = render_postmortem(timeline)
    assert "Duration: unknown (no resolved milestone)" in pm and "TODO (author)" in pm


# -- damage --------------------------------------------------------------------------------------------


def test_a_cut_off_run_is_rendered_and_marked_where_it_ends(tmp_path: Path) -> None:
    path = approved_run(tmp_path, "run-a", T0)
    lines = path.read_bytes().split(b"\n")[:-1]
    path.write_bytes(b"\n".join(lines[:4]) + b"\n" + lines[4][:30])  # died writing approval.requested
    timeline = load(path)
    assert [n.kind for n in timeline.notices] == ["cut-off"]
    assert "no run.ended and a half-written last line" in timeline.notices[0].text
    last, before = timeline.rows[-1], timeline.rows[-2]
    assert last.status == "cut-off" and last.what.startswith("Transcript ends here without run.ended")
    assert before.result == "started, never finished" and before.command == CMD
    assert "may or may not have reached the target" in (before.detail or "")
    assert timeline.facts.runs[0].outcome == "cut off"
    assert render_markdown(timeline).index("**⚠ Cut off**") < render_markdown(timeline).index("| Fact |")


def test_a_broken_chain_is_flagged_at_the_top_and_on_the_row(tmp_path: Path) -> None:
    path = approved_run(tmp_path, "run-a", T0)
    lines = path.read_bytes().split(b"\n")
    lines[6] = lines[6].replace(b"2147483648", b"1147483648")  # the change's "before", line 7
    path.write_bytes(b"\n".join(lines))
    timeline = load(path)
    assert timeline.chain_broken and timeline.notices[0].kind == "chain"
    flagged = [r for r in timeline.rows if r.flag]
    assert [r.ref for r in flagged] == ["run-a#6"] and "line 7 (step.finished)" in (flagged[0].flag or "")
    md = render_markdown(timeline)
    assert md.index("**⚠ Hash chain broken**") < md.index("| Fact |") and "⚠ integrity:" in md
    assert to_json(timeline)["chain_broken"] is True


# -- renderers -----------------------------------------------------------------------------------------


def test_markdown_has_a_section_per_day_links_and_local_times(tmp_path: Path) -> None:
    a = approved_run(tmp_path, "run-a", datetime(2026, 11, 26, 23, 59, 57, tzinfo=UTC))
    timeline = load(a)
    md = render_markdown(timeline, zone=ZoneInfo("Europe/Paris"), base=tmp_path)
    assert "## 2026-11-26 (Thursday)" in md and "## 2026-11-27 (Friday)" in md
    assert "| UTC | Europe/Paris | T+ | Who | What | Where | Result | Source |" in md
    assert "| 23:59:57 | 11-27 00:59:57 CET | T+00:00:00 |" in md
    assert "[`run-a#0`](run-a.jsonl#L1)" in md and "[`run-a#7`](run-a.jsonl#L8)" in md


def test_markdown_and_html_escape_what_operators_typed(tmp_path: Path) -> None:
    note(tmp_path, "a | b <script>alert(1)</script> *x*", at=T0, written=T0, operator="eve")
    timeline = load(notes_path(tmp_path, "INC-7"))
    md = render_markdown(timeline)
    assert "a \\| b &lt;script>alert(1)&lt;/script> \\*x\\*" in md
    page = render_html(timeline)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_html_is_one_self_contained_page(tmp_path: Path) -> None:
    timeline = load(approved_run(tmp_path, "run-a", T0), refused_run(tmp_path, "run-b", T0 + timedelta(minutes=1)))
    page = render_html(timeline, zone=ZoneInfo("Europe/Paris"))
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "@media print" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page
    assert page.count('class="row status-') == len(timeline.rows)
    assert 'class="row status-refused"' in page and 'class="row status-approved"' in page
    assert "<details><summary>output" in page  # the read step's result, folded
    assert 'id="src-run-a"' in page and 'href="#src-run-a"' in page


def test_json_carries_merged_events_with_derived_fields(tmp_path: Path) -> None:
    timeline = load(approved_run(tmp_path, "run-a", T0))
    data = json.loads(json.dumps(to_json(timeline, ZoneInfo("UTC"))))
    assert data["format"] == "runbook.timeline/1" and data["incident"] == "INC-7"
    assert len(data["events"]) == 8 and data["events"][0]["type"] == "run.started"
    assert data["events"][3]["derived"] == {
        "source": "run-a#3",
        "time": "2026-11-26T01:40:03.000000Z",
        "t_plus": "T+00:00:03",
        "offset_s": 3.0,
        "line": 4,
        "rows": [],
    }
    assert data["rows"][0]["source"] == "run-a#0" and data["facts"]["runs"][0]["duration"] == "7s"
    assert data["facts"]["changes"][0]["text"] == "config maxmemory: 2147483648 -> 4294967296"


def test_postmortem_fills_facts_and_prompts_for_the_rest(tmp_path: Path) -> None:
    run = approved_run(tmp_path, "run-a", T0 + timedelta(minutes=10))
    refused_run(tmp_path, "run-b", T0 + timedelta(minutes=11))
    note(tmp_path, "Alert fired", at=T0, written=T0, milestone="detected", operator="pd")
    timeline = load(run, tmp_path / "run-b.jsonl", notes_path(tmp_path, "INC-7"), incident="INC-7")
    pm = render_postmortem(timeline)
    for section in ("Summary", "Impact", "Trigger", "Detection", "Resolution", "Contributing causes", "Action items"):
        assert f"\n## {section}\n" in pm
    assert pm.startswith("# Post-mortem: INC-7\n") and "## Timeline of incident INC-7" in pm
    assert "config maxmemory: 2147483648 -> 4294967296 on redis://10.0.0.1:6379/0, approved by alice (--yes)" in pm
    assert "| bob | **refused**: declined |" in pm and "Review the refused step: Raise maxmemory (declined)" in pm
    assert "First recorded signal: Alert fired at 2026-11-26 01:40:00 UTC." in pm
    assert pm.count("TODO (author)") >= 8


# -- notes and incidents on disk -----------------------------------------------------------------------


def test_parse_at_forms() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert parse_at("2026-11-26T01:40:00Z", now) == datetime(2026, 11, 26, 1, 40, tzinfo=UTC)
    assert parse_at("2026-11-26 01:40", now) == datetime(2026, 11, 26, 1, 40, tzinfo=UTC)
    assert parse_at("2026-11-26T02:40:00+01:00", now) == datetime(2026, 11, 26, 1, 40, tzinfo=UTC)
    assert parse_at("01:40", now) == datetime(2026, 11, 26, 1, 40, tzinfo=UTC)
    assert parse_at("15m", now) == parse_at("-15m", now) == parse_at("15m ago", now) == now - timedelta(minutes=15)
    for bad in ("soon", "25:00", "2026-11-27T00:00:00Z", "13:00"):
        with pytest.raises(UsageError):
            parse_at(bad, now)


def test_incident_ids_are_safe_names() -> None:
    assert check_incident_id("INC-2041") == "INC-2041"
    for bad in ("", "../x", "a/b", "-x", "has space", ".hidden"):
        with pytest.raises(UsageError):
            check_incident_id(bad)


def test_incident_files_are_found_by_header_and_notes_chain(tmp_path: Path) -> None:
    (tmp_path / "2026-11-26").mkdir()
    mine = approved_run(tmp_path / "2026-11-26", "run-a", T0)
    approved_run(tmp_path / "2026-11-26", "run-other", T0, incident="INC-8")
    approved_run(tmp_path, "run-none", T0, incident=None)
    (tmp_path / "junk.jsonl").write_text("not json\n")
    assert incident_files(tmp_path, "INC-7") == [mine]
    path, first = add_note(tmp_path, "INC-7", "Alert fired", operator="pd", milestone="detected", at=T0)
    _, second = add_note(tmp_path, "INC-7", "Customers told", operator="bob")
    assert path == tmp_path / "incidents" / "INC-7" / "notes.jsonl"
    assert incident_files(tmp_path, "INC-7") == [mine, path]
    assert (first["seq"], second["seq"], first["run_id"]) == (0, 1, "notes-INC-7")
    assert first["at"] == "2026-11-26T01:40:00.000000Z" and "at" not in second
    assert verify_transcript(path).ok
    with pytest.raises(UsageError):
        add_note(tmp_path, "INC-7", "x", operator="bob", milestone="fixed")


def test_odd_values_in_a_damaged_file_never_stop_the_timeline(tmp_path: Path) -> None:
    odd = [
        {"seq": 0, "type": "run.started", "run_id": "r", "procedure": "x", "target": 3, "params": [], "mode": None},
        {"seq": 1, "type": "step.finished", "run_id": "r", "step": "s", "expectations": 2.5, "changes": {"a": 1}},
        {"seq": 2, "type": "approval.given", "run_id": "r", "time": "not a time", "by": None},
        {"seq": {"x": 1}, "type": "note", "run_id": "r", "at": 7, "milestone": "sideways"},
        {"type": "run.ended", "run_id": "r", "duration_ms": "long", "exit_code": "4"},
    ]
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in odd) + "\n{half")
    timeline = load(path, path)
    assert len(timeline.rows) >= len(odd) and timeline.notices
    for render in (render_markdown, render_html, render_postmortem):
        assert render(timeline)
    json.dumps(to_json(timeline))
