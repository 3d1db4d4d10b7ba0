"""Keyspace-wide procedures end to end against real redis-server processes, figures checked against the truth.

The truth is computed here with a plain redis client (TYPE, TTL, MEMORY USAGE of every key), never
taken from the code under test. Keys that expire or are deleted during a scan come from a background
writer (`Flicker`) that keeps creating keys with PX 1-50 ms and deleting some of them.
"""

from __future__ import annotations

import math
import os
import random
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from engine.adapters.redis import RedisAdapter
from engine.errors import MutationRefused
from engine.keyspace import operations
from engine.keyspace.aggregate import NO_TENANT, tenant_of
from engine.keyspace.pages import expire_page, scan_pages
from engine.sandbox.seed import seed_bulk, seed_somabrain
from engine.targets import redis_from_url
from engine.transcript.verify import verify_transcript
from tests.integration.cli_support import REPO, events, of_type, runbook, transcript_path

FLICKER_PREFIX = "tenant:flicker:tmp:"
FLICKER_KEYS = 100


# -- helpers ---------------------------------------------------------------------------------------
@pytest.fixture
def seeded(redis_server):
    """SomaBrain-like keyspace (3 named tenants, leaks, a big hash) plus 3000 bulk keys over tenants t0..t3."""
    server = redis_server()
    client = server.client()
    seed_somabrain(client)
    seed_bulk(client, 3000, 4)
    return server


def url(server) -> str:
    return f"redis://127.0.0.1:{server.port}/0"


def run(server, procedure: str, tmp_path: Path, *args: str, timeout: float = 60):
    return runbook(
        "run", procedure, "--redis", url(server), "--transcripts-dir", str(tmp_path / "tr"), *args, timeout=timeout
    )


def step(result, step_id: str) -> dict[str, Any]:
    return next(s for s in result.json()["steps"] if s["id"] == step_id)


def finished(result, step_id: str) -> dict[str, Any]:
    return next(e for e in of_type(events(transcript_path(result)), "step.finished") if e["step"]["id"] == step_id)


def truth(client, match: str = "*") -> dict[str, dict[str, Any]]:
    """{key: {type, ttl, memory}} for every key matching `match`, read directly (flicker keys left out)."""
    keys = [k for k in client.scan_iter(match=match, count=1000) if not k.startswith(FLICKER_PREFIX)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
        pipe.ttl(key)
        pipe.memory_usage(key)
    replies = pipe.execute()
    return {
        key: {"type": replies[3 * i], "ttl": replies[3 * i + 1], "memory": replies[3 * i + 2]}
        for i, key in enumerate(keys)
    }


class Pttls(dict[str, int]):
    """PTTL by key, and when they were read (monotonic): a TTL can run down by at most the time between two."""

    def __init__(self, items: Any = (), taken: float | None = None):
        super().__init__(items)
        self.taken = time.monotonic() if taken is None else taken

    def without(self, keys: set[str]) -> Pttls:
        return Pttls({k: v for k, v in self.items() if k not in keys}, self.taken)


def snapshot(client) -> Pttls:
    """PTTL of every key (flicker keys left out): existence and TTL, to prove what a change did not touch."""
    keys = [k for k in client.scan_iter(count=1000) if not k.startswith(FLICKER_PREFIX)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key)
    taken = time.monotonic()  # before the PTTLs: they run down by at most the time since
    return Pttls(zip(keys, pipe.execute(), strict=True), taken)


def assert_unchanged(before: Pttls, after: Pttls) -> None:
    """Same keys; a key without TTL still has none; a TTL only ran down (no one set it again), and by no
    more than the time between the two snapshots (plus 1 s for PTTL's rounding and the snapshots' own time)."""
    assert set(after) == set(before), set(before) ^ set(after)
    ran_down_ms = (time.monotonic() - before.taken) * 1000 + 1000
    for key, old in before.items():
        new = after[key]
        if old == -1:
            assert new == -1, key
        else:
            assert 0 <= old - new < ran_down_ms, (key, old, new)


class Flicker:
    """A writer that keeps keys appearing and vanishing (PX 1-50 ms, some deleted) while a scan runs."""

    def __init__(self, server, prefix: str = FLICKER_PREFIX, keys: int = FLICKER_KEYS):
        self.client = server.client()
        self.prefix, self.keys = prefix, keys
        self.stop = threading.Event()
        self.rounds = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _round(self, rng: random.Random) -> None:
        pipe = self.client.pipeline(transaction=False)
        for i in range(self.keys):
            pipe.set(f"{self.prefix}{i}", "x" * rng.randint(1, 64), px=rng.randint(1, 50))
        pipe.delete(*(f"{self.prefix}{i}" for i in range(0, self.keys, 3)))
        pipe.execute()
        self.rounds += 1

    def _run(self) -> None:
        rng = random.Random(11)
        while not self.stop.is_set():
            self._round(rng)
            time.sleep(0.003)

    def __enter__(self) -> Flicker:
        self._round(random.Random(1))  # a few short-lived keys exist before the run starts
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        assert self.rounds > 1


def adapter_for(server, *, allow_mutation: bool = True) -> RedisAdapter:
    return RedisAdapter(redis_from_url(url(server)), allow_mutation=allow_mutation).connect()


# -- audit-ttl ---------------------------------------------------------------------------------------
def test_audit_ttl_figures_match_the_truth_while_keys_come_and_go(seeded, tmp_path):
    client = seeded.client()
    with Flicker(seeded):
        result = run(seeded, "redis/audit-ttl", tmp_path, "--json")
    assert result.code == 0, result.output
    audit = step(result, "audit")["result"]
    assert set(audit) == {"scanned", "without_ttl", "by_tenant", "sample"}

    keys = truth(client)
    bare = [k for k, v in keys.items() if v["ttl"] == -1]
    assert audit["without_ttl"] == len(bare) == 882 + 6  # seed_bulk's and seed_somabrain's leaks
    assert audit["by_tenant"] == dict(Counter(tenant_of(k) for k in bare))
    assert len(audit["sample"]) == 20 and set(audit["sample"]) <= set(bare)
    # flicker keys seen alive are counted as scanned, vanished ones are not: never fewer than the stable keys
    assert len(keys) <= audit["scanned"] <= len(keys) + FLICKER_KEYS
    assert "888 of" in step(result, "audit")["summary"]
    assert verify_transcript(transcript_path(result)).ok


def test_audit_ttl_pattern_outside_tenants_and_alert_threshold(seeded, tmp_path):
    client = seeded.client()
    client.set("session:1", "a")
    client.set("session:2", "b", ex=100)
    client.set("tenant:acme", "no namespace after the tenant field")
    result = run(seeded, "redis/audit-ttl", tmp_path, "--var", "pattern=tenant:t1:*", "--var", "sample=3", "--json")
    assert result.code == 0, result.output
    audit = step(result, "audit")["result"]
    t1 = truth(client, "tenant:t1:*")
    assert audit["scanned"] == len(t1) == 750
    assert audit["without_ttl"] == sum(v["ttl"] == -1 for v in t1.values())
    assert list(audit["by_tenant"]) == ["t1"] and len(audit["sample"]) == 3

    everything = run(seeded, "redis/audit-ttl", tmp_path, "--var", "alert_over=100", "--json")
    assert everything.code == 1, everything.output  # 890 without TTL > 100: a finding
    audit = step(everything, "audit")["result"]
    assert audit["by_tenant"][NO_TENANT] == 2  # session:1 and tenant:acme
    assert "more than 100" in everything.stderr


# -- memory-report -------------------------------------------------------------------------------------
def test_memory_report_matches_memory_usage_of_every_key(seeded, tmp_path):
    client = seeded.client()
    with Flicker(seeded):
        result = run(seeded, "redis/memory-report", tmp_path, "--var", "top=5", "--json")
    assert result.code == 0, result.output
    report = step(result, "report")["result"]
    keys = truth(client)

    by_type: dict[str, dict[str, int]] = defaultdict(lambda: {"keys": 0, "bytes": 0})
    by_tenant: dict[str, dict[str, int]] = defaultdict(lambda: {"keys": 0, "bytes": 0})
    for key, v in keys.items():
        for group in (by_type[v["type"]], by_tenant[tenant_of(key)]):
            group["keys"] += 1
            group["bytes"] += v["memory"]
    for kind in ("hash", "list", "set"):  # flicker keys are strings
        assert report["by_type"][kind] == by_type[kind], kind
    assert by_type["string"]["keys"] <= report["by_type"]["string"]["keys"] <= by_type["string"]["keys"] + 100
    for tenant, figures in by_tenant.items():
        assert report["by_tenant"][tenant] == figures, tenant
    assert set(report["by_tenant"]) - set(by_tenant) <= {"flicker"}
    stable_bytes = sum(v["memory"] for v in keys.values())
    assert stable_bytes <= report["total_bytes"] <= stable_bytes + FLICKER_KEYS * 200
    assert report["scanned"] == sum(v["keys"] for v in report["by_type"].values())

    for kind in ("hash", "list", "set"):
        expected = sorted((v["memory"] for v in keys.values() if v["type"] == kind), reverse=True)[:5]
        assert [row["bytes"] for row in report["biggest"][kind]] == expected, kind
    big = report["biggest"]["hash"][0]
    assert big["key"] == "tenant:acme:cache:big:0" and big["length"] == 5000 and big["tenant"] == "acme"
    assert 0 < big["ttl"] <= 86400
    history = next(r for r in report["biggest"]["list"] if r["key"].endswith(":wm:history"))
    assert history["length"] == client.llen(history["key"])


def test_memory_report_flags_big_keys_as_info(seeded, tmp_path):
    result = run(seeded, "redis/memory-report", tmp_path, "--var", "big_key_size=100kb")
    assert result.code == 0, result.output
    assert "INFO: Keys above 100.0KiB: tenant:acme:cache:big:0" in result.stdout
    assert "optimize data structures" in result.stdout


# -- wm-list / verify-wm ------------------------------------------------------------------------------
def test_wm_list_groups_every_working_memory_key_by_tenant(seeded, tmp_path):
    client = seeded.client()
    started = time.monotonic()
    with Flicker(seeded, prefix="tenant:flicker:wm:"):
        result = run(seeded, "redis/wm-list", tmp_path, "--json")
    assert result.code == 0, result.output
    listing = step(result, "list")["result"]
    keys = {k: v for k, v in truth(client, "tenant:*:wm:*").items() if not k.startswith("tenant:flicker:")}
    # a TTL the run read has run down since by at most the time from the run's start to the read above
    ran_down = math.ceil(time.monotonic() - started) + 1
    tenants = listing["tenants"]
    flicker_rows = tenants.pop("flicker", [])
    assert len(flicker_rows) <= 100
    assert listing["truncated"] is False and listing["count"] == len(keys) + len(flicker_rows)
    expected: dict[str, set[str]] = defaultdict(set)
    for key in keys:
        expected[tenant_of(key)].add(key)
    assert {t: {r["key"] for r in rows} for t, rows in tenants.items()} == expected
    for rows in tenants.values():
        for row in rows:
            real = keys[row["key"]]
            assert set(row) == {"key", "type", "ttl", "memory"}
            assert (row["type"], row["memory"]) == (real["type"], real["memory"])
            assert row["ttl"] == -1 if real["ttl"] == -1 else 0 <= row["ttl"] - real["ttl"] <= ran_down
    assert "acme: 7 keys" in step(result, "list")["summary"]

    few = run(seeded, "redis/wm-list", tmp_path, "--var", "limit=5", "--json")
    assert few.code == 0, few.output
    listing = step(few, "list")["result"]
    assert listing["count"] == 5 and listing["truncated"] is True
    assert sum(len(rows) for rows in listing["tenants"].values()) == 5


def test_verify_wm_alerts_on_active_memory_without_positive_ttl(seeded, tmp_path):
    client = seeded.client()
    ok = run(seeded, "redis/verify-wm", tmp_path, "--json")
    assert ok.code == 0, ok.output
    wm = step(ok, "wm")["result"]
    assert {t: len(rows) for t, rows in wm["tenants"].items()} == dict(
        Counter(tenant_of(k) for k in truth(client, "tenant:*:wm:*"))
    )
    active = step(ok, "active")["result"]
    assert sorted(active["tenants"]) == ["acme", "globex", "initech"]
    rows = [r for rs in active["tenants"].values() for r in rs]
    assert all(r["ttl"] > 0 and r["memory"] == client.memory_usage(r["key"]) for r in rows)

    client.persist("tenant:globex:wm:active")
    bad = run(seeded, "redis/verify-wm", tmp_path, "--json")
    assert bad.code == 1, bad.output
    held = {e["severity"]: e for e in step(bad, "active")["expectations"]}
    assert held["warning"]["held"] is False
    assert held["warning"]["message"].startswith(
        "Active working memory without a positive TTL: tenant:globex:wm:active."
    )
    assert "no TTL" in step(bad, "active")["summary"]


# -- troubleshoot-memory: reports ---------------------------------------------------------------------
def test_troubleshoot_memory_reports_and_offers_solutions_without_changing_anything(seeded, tmp_path):
    client = seeded.client()
    before = snapshot(client)
    result = run(seeded, "redis/troubleshoot-memory", tmp_path, "--json")
    assert result.code == 0, result.output
    data = result.json()
    by_id = {(s["procedure"], s["id"]): s for s in data["steps"]}
    assert by_id[("redis/memory-report", "report")]["result"]["scanned"] == len(before)
    assert by_id[("redis/audit-ttl", "audit")]["result"]["without_ttl"] == sum(v == -1 for v in before.values())
    assert by_id[("redis/troubleshoot-memory", "leaks")]["result"]["audit"]["without_ttl"] == 888
    skipped = {s["id"] for s in data["steps"] if s["outcome"] == "skipped"}
    assert skipped == {"ttl-scope", "set-ttl", "verify-ttl", "tenant-scope", "delete-tenant", "verify-tenant"}
    assert "Increase memory allocation if legitimate usage" in result.stderr
    assert_unchanged(before, snapshot(client))


def test_troubleshoot_memory_flags_memory_pressure(redis_server, tmp_path):
    server = redis_server(config={"maxmemory": "2mb", "maxmemory-policy": "noeviction"})
    client = server.client()
    for i in range(200):
        client.set(f"tenant:acme:cache:{i}", "x" * 2000)  # noeviction: fills up without losing keys
    result = run(server, "redis/troubleshoot-memory", tmp_path, "--var", "memory_alert_pct=50")
    assert result.code == 1, result.output
    assert "WARNING: Memory usage is" in result.stdout and "Increase memory allocation" in result.stdout


# -- troubleshoot-memory: TTL by pattern, three modes ---------------------------------------------------
TTL_PATTERN = "tenant:t1:*"


def test_set_ttl_by_pattern_refused_dry_run_approved(seeded, tmp_path):
    client = seeded.client()
    t1 = truth(client, TTL_PATTERN)
    targets = {k for k, v in t1.items() if v["ttl"] == -1}
    assert len(targets) > 100
    args = ("--var", f"ttl_pattern={TTL_PATTERN}", "--var", "ttl=2h")
    before = snapshot(client)

    refused = run(seeded, "redis/troubleshoot-memory", tmp_path, *args)
    assert refused.code == 3, refused.output
    assert_unchanged(before, snapshot(client))
    evts = events(transcript_path(refused))
    assert of_type(evts, "approval.refused")[0]["step"]["id"] == "set-ttl"

    dry = run(seeded, "redis/troubleshoot-memory", tmp_path, *args, "--dry-run", "--json")
    assert dry.code == 0, dry.output
    assert_unchanged(before, snapshot(client))
    predicted = finished(dry, "set-ttl")
    assert predicted["outcome"] == "predicted"
    assert predicted["result"] == {
        "matched": len(t1),
        "changed": len(targets),
        "skipped_had_ttl": len(t1) - len(targets),
        "capped": False,
    }
    assert predicted["blast_radius"]["count"] == len(targets) and set(predicted["blast_radius"]["sample"]) <= targets
    assert predicted["predicted_changes"][0]["kind"] == "ttl_set"
    assert [e["held"] for e in finished(dry, "verify-ttl")["expectations"]] == [None]

    approved = run(seeded, "redis/troubleshoot-memory", tmp_path, *args, "--yes", "--json")
    assert approved.code == 0, approved.output
    done = finished(approved, "set-ttl")
    assert done["result"] == predicted["result"]
    (change,) = done["changes"]
    assert change["kind"] == "ttl_set" and change["count"] == len(targets) and change["ttl_after"] == 7200
    assert set(change["keys"]) <= targets and len(change["keys"]) == 20
    after = snapshot(client)
    for key in targets:
        assert 7200 * 1000 - 60_000 < after[key] <= 7200 * 1000, key
    assert_unchanged(before.without(targets), after.without(targets))
    assert step(approved, "verify-ttl")["result"]["without_ttl"] == 0
    started = next(
        e for e in of_type(events(transcript_path(approved)), "step.started") if e["step"]["id"] == "set-ttl"
    )
    assert "EXPIRE key 7200 NX" in started["command"] and started["effect"] == "write"


# -- troubleshoot-memory: delete an old tenant, three modes ----------------------------------------------
def test_delete_old_tenant_refused_dry_run_approved(seeded, tmp_path):
    client = seeded.client()
    client.set("tenant:t2x:cache:1", "a neighbour whose name starts like the old tenant's")
    doomed = set(truth(client, "tenant:t2:*"))
    assert len(doomed) == 750
    before = snapshot(client)
    args = ("--var", "old_tenant=t2")

    refused = run(seeded, "redis/troubleshoot-memory", tmp_path, *args)
    assert refused.code == 3, refused.output
    assert_unchanged(before, snapshot(client))

    dry = run(seeded, "redis/troubleshoot-memory", tmp_path, *args, "--dry-run")
    assert dry.code == 0, dry.output
    assert_unchanged(before, snapshot(client))
    predicted = finished(dry, "delete-tenant")
    assert predicted["outcome"] == "predicted" and predicted["effect"] == "destructive"
    assert predicted["result"] == {"deleted": 750, "capped": False}
    blast = predicted["blast_radius"]
    assert blast["count"] == 750 and set(blast["sample"]) <= doomed
    assert blast["bytes"] == sum(client.memory_usage(k) for k in doomed)

    approved = run(seeded, "redis/troubleshoot-memory", tmp_path, *args, "--yes", "--json")
    assert approved.code == 0, approved.output
    done = finished(approved, "delete-tenant")
    assert done["result"] == predicted["result"] == {"deleted": 750, "capped": False}
    (change,) = done["changes"]
    assert change["kind"] == "keys_removed" and change["count"] == 750 and set(change["keys"]) <= doomed
    after = snapshot(client)
    assert not doomed & set(after)
    assert_unchanged(before.without(doomed), after)
    assert client.exists("tenant:t2x:cache:1") == 1
    assert step(approved, "verify-tenant")["result"]["count"] == 0
    evts = events(transcript_path(approved))
    assert [e["step"]["id"] for e in of_type(evts, "approval.given")] == ["delete-tenant"]


def test_max_keys_stops_both_actions_before_asking(seeded, tmp_path):
    client = seeded.client()
    before = snapshot(client)
    for args in (("--var", "old_tenant=t3"), ("--var", f"ttl_pattern={TTL_PATTERN}")):
        result = run(seeded, "redis/troubleshoot-memory", tmp_path, *args, "--var", "max_keys=100", "--yes")
        assert result.code == 1, result.output
        assert "more than max_keys=100" in result.output
        assert not of_type(events(transcript_path(result)), "approval.given")
    assert_unchanged(before, snapshot(client))


# -- the step kind's own guards (procedures written for the test) ----------------------------------------
def _procedure(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"id: test/{name}\ntitle: t\nsection: t\ndescription: t\nrequires: [redis]\nsteps:\n{body}", encoding="utf-8"
    )
    return str(path)


def test_kind_refuses_over_cap_even_without_a_procedure_check(seeded, tmp_path):
    client = seeded.client()
    before = snapshot(client)
    delete = _procedure(
        tmp_path,
        "delete-capped",
        "  - id: d\n    name: d\n    confirm: sure?\n    keyspace:\n"
        "      delete_matching: {match: 'tenant:t0:*', max_keys: 749}\n",
    )
    expire = _procedure(
        tmp_path,
        "expire-capped",
        "  - id: e\n    name: e\n    confirm: sure?\n    keyspace:\n"
        "      expire_matching: {match: 'tenant:t0:*', ttl: 60, max_keys: 10}\n",
    )
    for path, count in ((delete, 750), (expire, sum(v == -1 for k, v in before.items() if k.startswith("tenant:t0:")))):
        result = run(seeded, path, tmp_path, "--yes")
        assert result.code == 4, result.output
        assert f"{count} keys would" in result.output and "refused, nothing changed" in result.output
    assert_unchanged(before, snapshot(client))


def test_broad_delete_patterns_are_refused_before_anything_runs(seeded, tmp_path):
    client = seeded.client()
    dbsize = client.dbsize()
    for match in ("*", "tenant:*", "*:cache:*", "tenant:t*"):
        path = _procedure(
            tmp_path,
            "delete-broad",
            "  - id: d\n    name: d\n    confirm: sure?\n    keyspace:\n"
            f"      delete_matching: {{match: '{match}', max_keys: 100000}}\n",
        )
        result = run(seeded, path, tmp_path, "--yes")
        assert result.code == 2, (match, result.output)
        assert "delete_matching refused" in result.output and "allow_broad" in result.output
        assert not of_type(events(transcript_path(result)), "approval.given")
    assert client.dbsize() == dbsize


def test_allow_broad_lifts_the_pattern_rule_but_not_the_cap(seeded, tmp_path):
    client = seeded.client()
    dbsize = client.dbsize()
    path = _procedure(
        tmp_path,
        "delete-all",
        "  - id: d\n    name: d\n    confirm: sure?\n    keyspace:\n"
        "      delete_matching: {match: '*', max_keys: 10, allow_broad: true}\n",
    )
    result = run(seeded, path, tmp_path, "--yes")
    assert result.code == 4, result.output
    assert f"{dbsize} keys would be deleted, more than max_keys=10" in result.output
    assert client.dbsize() == dbsize


# -- operations in-process: vanishing keys, the cap during a change, the dry-run guard ---------------------
def _vanishing(adapter, client, match: str, gone: set[str]):
    """Real SCAN pages; after each page is read, part of it is deleted or expired before the checks run."""
    for page in scan_pages(adapter, match, 1000):
        victims = page[::9]
        half = len(victims) // 2
        if victims[:half]:
            client.delete(*victims[:half])
        for key in victims[half:]:
            client.pexpire(key, 1)
        time.sleep(0.005)
        gone.update(victims)
        yield page


def test_operations_skip_keys_that_vanish_between_scan_and_check(seeded):
    client = seeded.client()
    adapter = adapter_for(seeded)
    keys = truth(client)

    gone: set[str] = set()
    audit = operations.audit_ttl(adapter, _vanishing(adapter, client, "*", gone), sample=5)
    assert gone and audit["scanned"] == len(keys) - len(gone)
    alive = {k: v for k, v in keys.items() if k not in gone}
    assert audit["without_ttl"] == sum(v["ttl"] == -1 for v in alive.values())

    keys = truth(client)
    gone = set()
    report = operations.memory_report(adapter, _vanishing(adapter, client, "*", gone), top=3)
    alive = {k: v for k, v in keys.items() if k not in gone}
    assert report["scanned"] == len(alive) and report["total_bytes"] == sum(v["memory"] for v in alive.values())

    keys = truth(client, "tenant:*:wm:*")
    gone = set()
    listing = operations.list_keys(
        adapter, _vanishing(adapter, client, "tenant:*:wm:*", gone), checks=["type", "ttl", "memory"], limit=10**6
    )
    assert listing["count"] == len(set(keys) - gone)
    assert not {r["key"] for rows in listing["tenants"].values() for r in rows} & gone

    keys = truth(client, "tenant:t0:*")
    gone = set()
    measured = operations.measure_delete(adapter, _vanishing(adapter, client, "tenant:t0:*", gone))
    assert measured["count"] == len(set(keys) - gone)
    keys = truth(client, "tenant:t0:*")
    gone = set()
    applied = operations.delete_matching(adapter, _vanishing(adapter, client, "tenant:t0:*", gone), max_keys=10**6)
    assert gone and applied.result == {"deleted": len(set(keys) - gone), "capped": False}
    assert not list(client.scan_iter("tenant:t0:*", count=1000))

    keys = truth(client, "tenant:t1:*")
    gone = set()
    applied = operations.expire_matching(
        adapter, _vanishing(adapter, client, "tenant:t1:*", gone), ttl=100, max_keys=10**6
    )
    alive = {k: v for k, v in keys.items() if k not in gone}
    assert applied.result["changed"] == sum(v["ttl"] == -1 for v in alive.values())
    assert applied.result["skipped_had_ttl"] == sum(v["ttl"] != -1 for v in alive.values())
    assert applied.result["matched"] == len(alive)


def test_changes_stop_at_max_keys_when_more_keys_appeared(redis_server):
    server = redis_server()
    client = server.client()
    for i in range(2500):
        client.set(f"tenant:z:k{i}", "v")
    client.set("tenant:z:has-ttl", "v", ex=500)
    adapter = adapter_for(server)

    applied = operations.expire_matching(adapter, scan_pages(adapter, "tenant:z:*"), ttl=300, max_keys=1200)
    assert applied.result["changed"] == 1200 and applied.result["capped"] is True
    ttls = [client.ttl(k) for k in client.scan_iter("tenant:z:k*", count=1000)]
    assert sum(t > 0 for t in ttls) == 1200 and sum(t == -1 for t in ttls) == 1300

    applied = operations.delete_matching(adapter, scan_pages(adapter, "tenant:z:*"), max_keys=1001)
    assert applied.result == {"deleted": 1001, "capped": True}
    assert client.dbsize() == 2501 - 1001

    applied = operations.delete_matching(adapter, scan_pages(adapter, "tenant:z:*"), max_keys=1500)
    assert applied.result == {"deleted": 1500, "capped": False}  # exactly the keys left: not capped
    assert client.dbsize() == 0


def test_expire_without_nx_fallback_agrees_with_nx(redis_server):
    server = redis_server()
    client = server.client()
    for i in range(20):
        client.set(f"a{i}", "v", ex=1000 if i % 3 == 0 else None)
    adapter = adapter_for(server)
    keys = [f"a{i}" for i in range(20)] + ["missing"]
    changed, skipped = expire_page(adapter, keys, 50, only_without_ttl=True, nx=False)
    assert len(changed) == 13 and skipped == 7
    assert all(client.ttl(f"a{i}") > 900 for i in range(0, 20, 3))
    assert all(0 < client.ttl(k) <= 50 for k in changed)
    changed, skipped = expire_page(adapter, keys, 50, only_without_ttl=True, nx=True)
    assert changed == [] and skipped == 20


def test_measurement_reads_only_and_changes_are_refused_in_a_rehearsal(seeded):
    client = seeded.client()
    before = snapshot(client)
    adapter = adapter_for(seeded, allow_mutation=False)  # what a dry-run gets
    measured = operations.measure_delete(adapter, scan_pages(adapter, "tenant:t3:*"))
    assert measured["count"] == 750
    measured = operations.measure_expire(adapter, scan_pages(adapter, "tenant:t3:*"), only_without_ttl=True)
    assert measured["count"] == sum(v == -1 for k, v in before.items() if k.startswith("tenant:t3:"))
    with pytest.raises(MutationRefused):
        operations.delete_matching(adapter, scan_pages(adapter, "tenant:t3:*"), max_keys=10**6)
    with pytest.raises(MutationRefused):
        operations.expire_matching(adapter, scan_pages(adapter, "tenant:t3:*"), ttl=10, max_keys=10**6)
    assert_unchanged(before, snapshot(client))


# -- progress on a terminal ---------------------------------------------------------------------------
def test_progress_line_on_a_terminal(redis_server, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    server = redis_server()
    seed_bulk(server.client(), 20_000, 8)
    child = pexpect.spawn(
        sys.executable,
        ["-m", "engine.cli", "run", "redis/audit-ttl", "--redis", url(server), "--transcripts-dir", str(tmp_path)],
        cwd=str(REPO),
        encoding="utf-8",
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"},
    )
    child.expect(r"TTL audit \*: [\d,]+/20,000 \([\d,]+/s\)")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert re.search(r"of 20000 keys matching \* have no TTL", child.before)
