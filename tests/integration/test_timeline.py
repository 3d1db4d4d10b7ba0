"""Timelines and post-mortems built from real runs against a real redis-server, through the real CLI.

One incident is built once for the module (it takes a few seconds): notes with milestones (recorded
later with --at), a dry-run, a refused run, an approved run, one with findings, one against a server
that is down, and a run of another incident that must stay out. Each test then renders it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.sandbox.redis_server import RedisServer, SandboxUnavailable, find_binary, free_port
from engine.sandbox.seed import seed_somabrain

INCIDENT = "INC-42"
KEY = "tenant:acme:wm:active"
CHROMIUM = "/usr/bin/chromium"


def cli(*args: str, cwd: Path | None = None, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDISCLI_AUTH", "RUNBOOK_TRANSCRIPTS")}
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,  # no terminal: the gate refuses unless --yes
        timeout=60,
    )


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Incident:
    dir: Path
    detected: datetime
    runs: dict[str, Path]
    """name -> transcript path: dry, refused, approved, findings, down, other."""

    def timeline(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli("timeline", "--incident", INCIDENT, "--transcripts-dir", str(self.dir), "--detail", "full", *args)


def _transcript(result: subprocess.CompletedProcess[str]) -> Path:
    paths = re.findall(r"^transcript: (.+)$", result.stdout, re.M)
    assert paths, result.stdout + result.stderr
    return Path(paths[-1])


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory):
    try:
        find_binary("redis-server")
    except SandboxUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    server = RedisServer.start()
    try:
        with server.client() as client:
            seed_somabrain(client)
        base = tmp_path_factory.mktemp("incident")
        directory = base / "transcripts"
        redis = f"redis://127.0.0.1:{server.port}/0"
        common = ("--transcripts-dir", str(directory), "--incident", INCIDENT)
        detected = (datetime.now(UTC) - timedelta(minutes=20)).replace(microsecond=0)

        def note(text: str, *extra: str) -> None:
            result = cli("note", text, "--transcripts-dir", str(directory), "--incident", INCIDENT, *extra)
            assert result.returncode == 0, result.stderr

        def run(expect: int, *args: str) -> Path:
            result = cli("run", "redis/wm-clear", "--redis", redis, *args, cwd=base)
            assert result.returncode == expect, result.stdout + result.stderr
            return base / _transcript(result)

        # recorded after the fact, in the wrong order on purpose: the timeline orders notes by --at
        declared = ("--milestone", "declared", "--operator", "bob", "--at", iso(detected + timedelta(minutes=5)))
        note("Incident declared, Bob is incident commander", *declared)
        note(
            "Alert: SomaBrain wm latency p99 > 2s",
            "--milestone",
            "detected",
            "--operator",
            "pagerduty",
            "--at",
            iso(detected),
        )
        runs = {
            "dry": run(0, *common, "--var", "tenant=acme", "--dry-run", "--operator", "alice"),
            "refused": run(3, *common, "--var", "tenant=acme", "--operator", "bob"),
            "approved": run(0, *common, "--var", "tenant=acme", "--yes", "--operator", "alice"),
            "findings": run(1, *common, "--var", "tenant=nobody", "--yes", "--operator", "alice"),
            "other": run(
                0, "--transcripts-dir", str(directory), "--incident", "INC-OTHER", "--var", "tenant=globex", "--yes"
            ),
        }
        down = f"redis://127.0.0.1:{free_port()}/0"
        result = cli("run", "redis/wm-clear", "--redis", down, *common, "--var", "tenant=acme", "--yes", cwd=base)
        assert result.returncode == 4, result.stdout + result.stderr
        runs["down"] = base / _transcript(result)
        note("Working memory cleared, latency back to normal", "--milestone", "mitigated", "--operator", "alice")
        note("Customers told in #status", "--operator", "bob")
        note("Resolved", "--milestone", "resolved", "--operator", "bob")
        with server.client() as client:
            assert client.exists(KEY) == 0  # the approved run really deleted it
        yield Incident(directory, detected, runs)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def as_json(incident: Incident) -> dict:
    result = incident.timeline("--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_json_orders_merges_and_derives(incident: Incident, as_json: dict) -> None:
    rows, events = as_json["rows"], as_json["events"]
    assert as_json["incident"] == INCIDENT and as_json["chain_broken"] is False and as_json["notices"] == []
    times = [r["time"] for r in rows]
    assert times == sorted(times)
    for run_id in {e["run_id"] for e in events}:  # within a run: seq order, gap-free
        seqs = [e["seq"] for e in events if e["run_id"] == run_id and not run_id.startswith("notes-")]
        assert seqs == sorted(seqs)
    assert all(e["derived"]["source"] == f"{e['run_id']}#{e['seq']}" for e in events)
    # the other incident stays out; every run of this one is in, once
    assert {r["procedure"] for r in as_json["facts"]["runs"]} == {"redis/wm-clear"}
    assert [r["outcome"] for r in as_json["facts"]["runs"]] == ["ok", "refused", "ok", "findings", "error"]
    assert [r["mode"] for r in as_json["facts"]["runs"]] == ["dry-run", "live", "live", "live", "live"]
    assert incident.runs["other"].stem not in json.dumps(as_json)
    facts = as_json["facts"]
    assert facts["first_signal"] == iso(incident.detected).replace("Z", ".000000Z")
    assert facts["first_signal_text"] == "Alert: SomaBrain wm latency p99 > 2s"
    assert facts["detection_gap_s"] == 300.0 and facts["detection_gap"] == "5m 00s"
    resolved = datetime.fromisoformat(facts["resolved"])
    assert facts["duration_s"] == pytest.approx((resolved - incident.detected).total_seconds())
    assert 20 * 60 <= facts["duration_s"] < 21 * 60
    assert set(facts["operators"]) >= {"alice", "bob", "pagerduty"}
    # T+ from the detected note: the detected row is T+00:00:00, declared T+00:05:00 (notes ordered by --at)
    milestones = [(r["milestone"], r["t_plus"]) for r in rows if r["milestone"]]
    assert milestones[:2] == [("detected", "T+00:00:00"), ("declared", "T+00:05:00")]
    assert [m for m, _ in milestones] == ["detected", "declared", "mitigated", "resolved"]
    approvals = [(a["by"], a["refused"], a["reason"]) for a in facts["approvals"]]
    assert approvals == [("bob", True, "no terminal and no --yes"), ("alice (--yes)", False, None)]
    changes = [(c["text"], c["predicted"], c["approved_by"]) for c in facts["changes"]]
    assert changes == [
        (f"keys removed: 1 ({KEY})", True, None),
        (f"keys removed: 1 ({KEY})", False, "alice (--yes)"),
    ]


def test_same_run_given_twice_is_kept_once(incident: Incident, as_json: dict) -> None:
    again = incident.timeline(str(incident.runs["approved"]), str(incident.runs["approved"]), "--format", "json")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert len(data["rows"]) == len(as_json["rows"]) and len(data["events"]) == len(as_json["events"])


def test_markdown_timeline(incident: Incident, as_json: dict) -> None:
    result = incident.timeline("--tz", "Asia/Tokyo")
    assert result.returncode == 0, result.stderr
    md = result.stdout
    assert md.startswith(f"# Timeline of incident {INCIDENT}\n")
    assert f"| Incident | {INCIDENT} |" in md
    assert "| Detection gap | 5m 00s (first signal to declared) |" in md
    assert "| Operators |" in md and "| Targets touched |" in md and "Procedures run (5, 4 live)" in md
    assert re.search(r"^## \d{4}-\d\d-\d\d \(\w+day\)$", md, re.M)
    assert "| UTC | Asia/Tokyo | T+ | Who | What | Where | Result | Source |" in md
    table = [line for line in md.splitlines() if re.match(r"^\| \d\d:\d\d:\d\d \|", line)]
    assert len(table) == len(as_json["rows"])
    assert "**DETECTED: Alert: SomaBrain wm latency p99 > 2s**" in md and "| T+00:00:00 | pagerduty |" in md
    assert "**RESOLVED: Resolved**" in md
    assert "Started redis/wm-clear as a DRY-RUN" in md
    assert f"would change: keys removed: 1 ({KEY})" in md
    assert f"**changed**: keys removed: 1 ({KEY})" in md
    assert "| alice (--yes) | Approved: Delete the tenant's active working memory" in md
    assert "✔ approved by --yes" in md
    assert "| bob | Refused: Delete the tenant's active working memory" in md
    assert "**⊘ REFUSED: no terminal and no --yes**" in md
    assert "**⚠ findings (exit 1)" in md and "**✗ error (exit 4)" in md
    assert "cannot connect" in md
    approved = incident.runs["approved"]
    rel = os.path.relpath(approved, Path.cwd())
    assert re.search(rf"\[`{approved.stem}#\d+`\]\({re.escape(rel)}#L\d+\)", md)  # rows link to their lines


def test_postmortem_draft(incident: Incident, tmp_path: Path) -> None:
    out = tmp_path / "pm" / "INC-42.md"
    result = cli("postmortem", "--incident", INCIDENT, "--transcripts-dir", str(incident.dir), "--output", str(out))
    assert result.returncode == 0, result.stderr
    pm = out.read_text()
    sections = ["Summary", "Impact", "Trigger", "Detection", "Resolution", "Contributing causes", "Action items"]
    positions = [pm.index(f"\n## {name}\n") for name in [*sections, "Lessons learned"]]
    assert positions == sorted(positions) and pm.index("## Timeline of incident INC-42") > positions[-1]
    assert pm.count("TODO (author)") >= 8
    assert "- Detection gap: 5m 00s (first signal to declared)" in pm
    assert "First recorded signal: Alert: SomaBrain wm latency p99 > 2s" in pm
    assert f"keys removed: 1 ({KEY}) on redis://127.0.0.1:" in pm and "approved by alice (--yes)" in pm
    assert "**refused**: no terminal and no --yes" in pm
    assert "Review the refused step: Delete the tenant's active working memory" in pm
    assert "Rehearsed in dry-runs (not applied)" in pm
    assert "- Procedures run: 5 (4 live, 1 dry-run)" in pm


def cut_mid_step(src: Path, dst: Path) -> None:
    """`src` as a crash leaves it: the delete was approved and sent, the engine died writing its step.finished."""
    lines = src.read_bytes().split(b"\n")[:-1]
    approved = next(i for i, line in enumerate(lines) if b'"approval.given"' in line)
    assert b'"step.finished"' in lines[approved + 1]
    dst.write_bytes(b"\n".join(lines[: approved + 1]) + b"\n" + lines[approved + 1][:40])


def tamper(src: Path, dst: Path) -> None:
    """`src` with one byte changed in a middle line: the blast radius now says 9 keys instead of 1."""
    lines = src.read_bytes().split(b"\n")[:-1]
    middle = next(i for i, line in enumerate(lines) if b'"key_count":1' in line)
    assert 0 < middle < len(lines) - 1
    lines[middle] = lines[middle].replace(b'"key_count":1', b'"key_count":9')
    dst.write_bytes(b"\n".join(lines) + b"\n")


def test_cut_off_and_tampered_transcripts_are_marked(incident: Incident, tmp_path: Path) -> None:
    cut, tampered = tmp_path / "cut.jsonl", tmp_path / "tampered.jsonl"
    cut_mid_step(incident.runs["approved"], cut)
    tamper(incident.runs["approved"], tampered)
    result = cli("timeline", str(cut))
    assert result.returncode == 0, result.stderr
    md = result.stdout
    assert "Hash chain broken" not in md
    assert "> **⚠ Cut off**:" in md and "no run.ended and a half-written last line" in md
    assert "| **⚠ started, never finished** |" in md and "may or may not have reached the target" in md
    assert "Transcript ends here without run.ended: the run was cut off" in md
    assert "| Approvals | 1 given, 0 refused |" in md and "| Changes made | 0 (and 0 predicted by dry-runs) |" in md
    assert md.rstrip().splitlines()[-1].count("CUT OFF") == 1  # the marker is the last row

    result = cli("timeline", str(tampered), "--format", "json")
    data = json.loads(result.stdout)
    assert data["chain_broken"] is True and data["notices"][0]["kind"] == "chain"
    assert [r for r in data["rows"] if r["flag"]], "the changed line's row is flagged"
    md = cli("timeline", str(tampered)).stdout
    first_block = md.split("| Fact |")[0]
    assert "**⚠ Hash chain broken**" in first_block and "was changed or removed" in first_block
    assert "⚠ integrity:" in md


def _chromium() -> str | None:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")


def _chromium_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]
    return subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=60)


def test_html_renders_in_headless_chromium(incident: Incident, tmp_path: Path) -> None:
    _chromium()
    # the incident as found after a crash and an edit: the approved run cut off, the refused one tampered with
    directory = tmp_path / "transcripts"
    shutil.copytree(incident.dir, directory)
    for name, damage in (("approved", cut_mid_step), ("refused", tamper)):
        copy = directory / incident.runs[name].relative_to(incident.dir)
        damage(incident.runs[name], copy)
    findings = directory / incident.runs["findings"].relative_to(incident.dir)
    args = ("timeline", "--incident", INCIDENT, "--transcripts-dir", str(directory), "--detail", "full", str(findings))
    data = json.loads(cli(*args, "--format", "json").stdout)
    page = tmp_path / "timeline.html"
    result = cli(*args, "--format", "html", "--output", str(page), "--tz", "Europe/Paris")
    assert result.returncode == 0, result.stderr
    assert "hash chain broken" in result.stderr and "was cut off" in result.stderr
    html = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "self-contained: no external assets"
    assert "<script" not in html

    dom = _chromium_run(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = re.findall(r'<tr id="row-\d+" class="row status-([a-z-]+)"', dom.stdout)
    assert rows == [r["status"] for r in data["rows"]]
    for status in ("milestone", "approved", "refused", "predicted", "failed", "warning", "cut-off"):
        assert status in rows, status
    assert "Hash chain broken" in dom.stdout.split("<table")[0]  # flagged above the facts
    assert dom.stdout.count("<details>") >= 1 and "<pre>" in dom.stdout  # outputs folded
    assert "Europe/Paris" in dom.stdout

    shot = tmp_path / "timeline.png"
    taken = _chromium_run(tmp_path, f"--screenshot={shot}", "--window-size=1400,2000", page.as_uri())
    assert taken.returncode == 0 and shot.stat().st_size > 20_000, taken.stderr[-2000:]
    if os.environ.get("RUNBOOK_TIMELINE_SCREENSHOT"):  # to look at it: RUNBOOK_TIMELINE_SCREENSHOT=/tmp/t.png
        shutil.copy(shot, os.environ["RUNBOOK_TIMELINE_SCREENSHOT"])
        shutil.copy(page, Path(os.environ["RUNBOOK_TIMELINE_SCREENSHOT"]).with_suffix(".html"))


def test_note_usage_errors_exit_2(tmp_path: Path) -> None:
    directory = str(tmp_path / "t")
    assert cli("note", "x", "--incident", "../etc", "--transcripts-dir", directory).returncode == 2
    assert cli("note", "x", "--incident", "INC-1", "--at", "someday", "--transcripts-dir", directory).returncode == 2
    future = iso(datetime.now(UTC) + timedelta(hours=2))
    assert cli("note", "x", "--incident", "INC-1", "--at", future, "--transcripts-dir", directory).returncode == 2
    assert cli("note", "x", "--transcripts-dir", directory).returncode == 2  # --incident is required
    missing = cli("timeline", "--incident", "INC-NONE", "--transcripts-dir", directory)
    assert missing.returncode == 2 and "no transcripts for incident INC-NONE" in missing.stderr
    assert cli("timeline", "--transcripts-dir", directory).returncode == 2
    assert not (tmp_path / "t").exists()  # nothing was written by a refused note


def test_notes_go_to_runbook_transcripts(tmp_path: Path) -> None:
    where = tmp_path / "elsewhere"
    result = cli(
        "note", "Alert fired", "--incident", "INC-9", "--milestone", "detected", RUNBOOK_TRANSCRIPTS=str(where)
    )
    assert result.returncode == 0, result.stderr
    assert "(detected)" in result.stdout and "notes-INC-9#0" in result.stdout
    assert (where / "incidents" / "INC-9" / "notes.jsonl").is_file()
    shown = cli("timeline", "--incident", "INC-9", RUNBOOK_TRANSCRIPTS=str(where))
    assert shown.returncode == 0 and "**DETECTED: Alert fired**" in shown.stdout
