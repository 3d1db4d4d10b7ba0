"""The OOM incident of issue 14 from real runs, and the post-mortem draft that the evidence writes.

A sandbox redis-server (maxmemory 2mb, noeviction) is filled until it refuses writes by tenant `acme`'s
keys, none of which expire. Two operators work the incident: notes for impact-start, detected,
acknowledged, declared (SEV2 in its text), then health-check and troubleshoot-memory (alice),
emergency-oom as a dry-run and then for real (bob), then mitigated and resolved. The draft must carry
the measured figures with their source lines, the TTL finding with the tenant as a cause, the declared
"temporary until persisted" follow-up as an action item (and not the symptoms), the severity, the
target with its environment; the key-events timeline has one row per run plus the events that matter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from engine.sandbox.redis_server import RedisServer
from tests.conftest import require_binary
from tests.integration.cli_support import CliResult, runbook

INCIDENT = "INC-OOM-14"
ACME_WITHOUT_TTL_MIN = 500


def fill_until_oom(server: RedisServer) -> int:
    """acme's keys without a TTL (and a few of beta's, with one) until Redis refuses a write; how many acme keys."""
    client = server.client()
    for i in range(20):
        client.set(f"tenant:beta:cache:{i}", "y" * 100, ex=3600)
    written = 0
    for start in range(0, 200_000, 200):
        pipe = client.pipeline(transaction=False)
        for i in range(start, start + 200):
            pipe.set(f"tenant:acme:wm:{i}", "x" * 200)
        replies = pipe.execute(raise_on_error=False)
        refused = [r for r in replies if isinstance(r, redis.exceptions.OutOfMemoryError)]
        written += len(replies) - len(refused)
        if refused:
            return written
    raise AssertionError("maxmemory never refused a write")


class Incident:
    def __init__(self, root: Path, server: RedisServer):
        self.root = root
        self.server = server
        self.transcripts = root / "transcripts"
        self.inventory = root / "inventory.yaml"
        self.inventory.write_text(
            f"environments:\n  production:\n    targets:\n      cache:\n        redis:\n          url: {server.url}\n",
            encoding="utf-8",
        )
        self.runs: list[CliResult] = []

    def note(self, text: str, who: str, *extra: str) -> None:
        result = runbook(
            "note", text, "--incident", INCIDENT, "--operator", who, "--transcripts-dir", str(self.transcripts), *extra
        )
        assert result.code == 0, result.output

    def run(self, procedure: str, who: str, *extra: str) -> CliResult:
        result = runbook(
            "run", procedure, "--inventory", str(self.inventory), "--target", "production/cache",
            "--incident", INCIDENT, "--operator", who, "--transcripts-dir", str(self.transcripts), *extra,
        )  # fmt: skip
        self.runs.append(result)
        return result

    def cli(self, *args: str) -> CliResult:
        result = runbook(*args, "--incident", INCIDENT, "--transcripts-dir", str(self.transcripts))
        assert result.code == 0, result.output
        return result


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Incident]:
    require_binary("redis-server")
    server = RedisServer.start(config={"maxmemory": "2mb", "maxmemory-policy": "noeviction"})
    try:
        acme = fill_until_oom(server)
        assert acme >= ACME_WITHOUT_TTL_MIN
        inc = Incident(tmp_path_factory.mktemp("incident"), server)
        base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=12)  # absolute times: exact gaps

        def at(minutes: int) -> str:
            return (base + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

        inc.note("writes to the cache start failing (from the app's error graph)", "alice", "--milestone",
                 "impact-start", "--at", at(0))  # fmt: skip
        inc.note("Alert RedisMemoryHigh fired", "pagerduty", "--milestone", "detected", "--at", at(3))
        inc.note("alice is on it", "alice", "--milestone", "acknowledged", "--at", at(4))
        inc.note("Declared SEV2: writes refused on production/cache", "alice", "--milestone", "declared", "--at", at(5))
        assert inc.run("redis/health-check", "alice").code == 1  # memory above 90%: a finding
        assert inc.run("redis/troubleshoot-memory", "alice").code == 1
        dry = inc.run("redis/emergency-oom", "bob", "--dry-run", "--var", "maxmemory=64mb")
        assert dry.code in (0, 1), dry.output
        real = inc.run("redis/emergency-oom", "bob", "--yes", "--var", "maxmemory=64mb")
        assert real.code == 0, real.output
        inc.note("writes accepted again", "bob", "--milestone", "mitigated")
        inc.note("memory at 3% of the raised limit; closing", "bob", "--milestone", "resolved")
        yield inc
    finally:
        server.stop()


def section(text: str, title: str) -> str:
    """The body of `## title` up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, f"no section {title!r}"
    return match[1]


REF = r"`[A-Za-z0-9._-]+#\d+`"


def test_the_draft_is_written_from_the_evidence(incident: Incident) -> None:
    out = incident.root / "postmortem.md"
    incident.cli("postmortem", "-o", str(out))
    pm = out.read_text(encoding="utf-8")

    assert re.search(r"\| Severity \| SEV2 \(`notes-INC-OOM-14#\d+`\) \|", pm)

    impact = section(pm, "Impact")
    figure = r"\*\*writes refused \(errorstat\\_OOM\)\*\*: first ([\d,]+) commands since the server started"
    refused = re.search(rf"{figure} .*?{REF}", impact)
    assert refused and int(refused[1].replace(",", "")) >= 1, impact
    assert re.search(rf"\*\*memory used\*\*: first [\d.,]+ % of maxmemory .*{REF}", impact), impact
    assert re.search(r"\*\*keys stored\*\*: first [\d,]+ keys", impact)
    assert "runbook:oom-probe" not in impact  # the tool's own probe key is not data lost
    assert "Checks failing from" in impact and "to passing again at" in impact  # first failing to last passing
    for measured in ("Time to detect: 3m 00s", "Time to acknowledge: 1m 00s", "Time to mitigate:", "Time to resolve:"):
        assert measured in impact, impact

    causes = section(pm, "Contributing causes")
    ttl = re.search(r"keys never expire \(possible memory leak\), tenant acme (\d+)", causes)
    assert ttl and int(ttl[1]) >= ACME_WITHOUT_TTL_MIN, causes
    assert "Evidence:" in causes and "have no TTL; by tenant: acme" in causes
    assert "Memory usage is" not in causes  # a symptom of the impact, not a cause

    actions = section(pm, "Action items")
    assert "temporary until persisted with CONFIG REWRITE" in actions  # maxmemory and the policy
    assert actions.count("temporary until persisted") == 2
    assert "| mitigate |" in actions and "| prevent |" in actions and "| detect |" in actions
    assert "tenant acme" in actions
    assert "Memory usage is" not in actions and "above 90%" not in actions  # not the symptoms
    assert actions.count("Alert when Redis memory passes") == 1  # declared by three runs, listed once

    assert "production/cache (redis://" in section(pm, "Summary")
    todo = pm.count("TODO (author)")
    assert 5 <= todo <= 12, todo


def test_key_events_are_one_row_per_run_plus_what_matters(incident: Incident) -> None:
    data = json.loads(incident.cli("timeline", "--format", "json").stdout)
    keys = data["key_events"]
    runs = [r for r in keys if r["type"] == "run"]
    assert len(runs) == len(incident.runs) == 4
    assert len({r["run_id"] for r in runs}) == 4  # one row per run
    notes = [r for r in keys if r["type"] == "note"]
    approvals = [r for r in keys if r["status"] in ("approved", "refused")]
    changes = [r for r in keys if r["changes"] and not r["predicted"] and r["type"] != "run"]
    found = {f["ref"] for f in data["facts"]["findings"]}
    findings = [r for r in keys if r["source"] in found and r["type"] != "run"]
    assert any("keys never expire" in r["result"] and "tenant acme" in r["result"] for r in findings)
    assert len(notes) == 6 and len(approvals) >= 2 and len(changes) >= 2
    assert len(keys) <= len(runs) + len(notes) + len(approvals) + len(changes) + len(findings)
    assert not [r for r in keys if r["status"] == "skipped" or r["type"] in ("run.started", "run.ended")]
    dry = [r for r in runs if r["dry_run"]]
    assert len(dry) == 1 and not [r for r in keys if r["run_id"] == dry[0]["run_id"] and r["type"] != "run"]
    assert any("config maxmemory" in c for c in dry[0]["changes"]) and dry[0]["predicted"]
    assert all(r["where"].startswith("production/cache (redis://") for r in runs)
    assert len(keys) < len(data["rows"]) / 2
    full = incident.cli("timeline", "--detail", "full").stdout
    key = incident.cli("timeline").stdout
    assert "skipped: when" in full and "skipped: when" not in key and "6 skipped" in key  # folded into the run


def test_html_page_renders_in_chromium(incident: Incident) -> None:
    page = incident.root / "timeline.html"
    incident.cli("timeline", "-o", str(page))
    html = page.read_text(encoding="utf-8")
    assert html.count("<details class='steps'>") == 4  # each run expands to its steps
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no chromium to render the page")
    shot = incident.root / "timeline.png"
    pdf = incident.root / "timeline.pdf"
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()], timeout=120,
                   capture_output=True, check=True)  # fmt: skip
    subprocess.run([*base, f"--print-to-pdf={pdf}", page.as_uri()], timeout=120, capture_output=True, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000
    keep = Path(os.environ.get("RUNBOOK_KEEP_SCREENSHOT", ""))
    if keep.name:
        shutil.copy(shot, keep)
        shutil.copy(pdf, keep.with_suffix(".pdf"))
        shutil.copy(page, keep.with_suffix(".html"))
        shutil.copytree(incident.transcripts, keep.parent / "transcripts", dirs_exist_ok=True)


def test_dry_run_shows_each_predicted_change_with_command_and_blast_radius(redis_server, tmp_path: Path) -> None:
    server = redis_server(config={"maxmemory": "2mb", "maxmemory-policy": "noeviction"})
    argv = ["run", "redis/emergency-oom", "--redis", server.url, "--dry-run", "--var", "maxmemory=64mb"]
    argv += ["--transcripts-dir", str(tmp_path / "t")]
    shown = runbook(*argv)
    assert shown.code == 0, shown.output
    out = shown.stdout
    assert f"dry-run: would run on {server.url}, not sent: CONFIG SET maxmemory 67108864" in out
    assert "blast radius (measured now):" in out and "CONFIG maxmemory: '2097152' -> '67108864'" in out
    assert "would change: config maxmemory: 2097152 -> 67108864" in out
    assert "would change: config maxmemory-policy: noeviction -> allkeys-lru" in out
    data = runbook(*argv, "--json").json()
    steps = {s["id"]: s for s in data["steps"]}
    raised = steps["raise-maxmemory"]
    assert raised["outcome"] == "predicted" and raised["command"] == "CONFIG SET maxmemory 67108864"
    assert raised["where"] == server.url
    assert raised["blast_radius"]["config"]["maxmemory"] == {"current": "2097152", "new": "67108864"}
    assert raised["predicted_changes"] == [
        {"kind": "config", "name": "maxmemory", "before": "2097152", "after": "67108864"}
    ]
    assert "command" not in steps["memory"]  # a read step that ran is reported as before
    assert server.client().config_get("maxmemory")["maxmemory"] == "2097152"  # nothing changed


def test_follow_ups_are_shown_to_the_operator_and_kept_in_json(redis_server, tmp_path: Path) -> None:
    server = redis_server(config={"maxmemory": "64mb", "maxmemory-policy": "noeviction"})
    client = server.client()
    for i in range(30):
        client.set(f"tenant:acme:wm:{i}", "x")
    argv = ["run", "redis/audit-ttl", "--redis", server.url, "--transcripts-dir", str(tmp_path / "t")]
    shown = runbook(*argv)
    assert shown.code == 0, shown.output
    assert "FOLLOW UP (PREVENT): Give the 30 keys that never expire a TTL" in shown.stdout
    assert "tenant acme 30" in shown.stdout
    data = runbook(*argv, "--json").json()
    audit = next(s for s in data["steps"] if s["id"] == "audit")
    assert audit["follow_up"][0]["kind"] == "prevent" and "tenant acme 30" in audit["follow_up"][0]["text"]


def test_note_severity_flag_sets_the_severity_and_bad_values_are_refused(tmp_path: Path) -> None:
    where = ["--incident", "INC-S", "--transcripts-dir", str(tmp_path)]
    for bad in ("SEV 2", "sev2;rm", "x" * 17, ""):
        refused = runbook("note", "declared", "--milestone", "declared", "--severity", bad, *where)
        assert refused.code == 2 and "--severity" in refused.stderr, (bad, refused.output)
        assert "Traceback" not in refused.output
    assert not (tmp_path / "incidents" / "INC-S" / "notes.jsonl").exists()  # nothing written
    assert runbook("note", "declared, severity to come", "--milestone", "declared", *where).code == 0
    assert runbook("note", "upgraded", "--severity", "SEV1", *where).code == 0
    facts = json.loads(runbook("timeline", "--format", "json", *where).stdout)["facts"]
    assert facts["severity"] == "SEV1"
    md = runbook("timeline", *where).stdout
    assert "| Severity | SEV1 |" in md and "| note (SEV1) |" in md
