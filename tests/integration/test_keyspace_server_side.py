"""The server-side (Lua) keyspace path gives exactly what the client-side pipelined path gives."""

from __future__ import annotations

import re
import threading
import time

import pytest
import redis

from engine.adapters.redis import RedisAdapter
from engine.errors import MutationRefused
from engine.keyspace import operations, server_side
from engine.keyspace.pages import scan_pages
from engine.sandbox import seed_bulk, seed_somabrain
from engine.targets import RedisEndpoint
from tests.integration.cli_support import events, of_type, runbook


class _Quiet:
    def advance(self, n: int) -> None:
        pass


@pytest.fixture
def seeded(redis_server):
    server = redis_server()
    client = server.client()
    seed_somabrain(client)
    seed_bulk(client, 6000, tenants=25)
    return server


def adapter_for(server, *, allow_mutation=False, username=None, password=None):
    endpoint = RedisEndpoint(host="127.0.0.1", port=server.port, username=username, password=password)
    return RedisAdapter(endpoint, allow_mutation=allow_mutation)


def _without_seconds(report):
    """TTLs of the biggest keys tick down between the two runs; everything else must be identical."""
    for rows in report["biggest"].values():
        for row in rows:
            row.pop("ttl", None)
    return report


def test_audit_and_memory_report_equal_the_pipelined_path(seeded):
    adapter = adapter_for(seeded)  # mutation off: the server-side path is read-only by construction
    assert server_side.available(adapter)
    quiet = _Quiet()
    fast = server_side.audit_ttl(adapter, "*", sample=15, progress=quiet, start=100)
    plain = operations.audit_ttl(adapter, scan_pages(adapter, "*"), sample=15, progress=quiet)
    assert {k: fast[k] for k in ("scanned", "without_ttl", "by_tenant")} == {
        k: plain[k] for k in ("scanned", "without_ttl", "by_tenant")
    }
    client = seeded.client()
    truth = [k for k in client.scan_iter(count=1000) if client.ttl(k) == -1]
    assert fast["without_ttl"] == len(truth)
    assert len(fast["sample"]) == 15 and set(fast["sample"]) <= set(truth)
    fast_mem = server_side.memory_report(adapter, "tenant:*", top=5, progress=quiet, start=100)
    plain_mem = operations.memory_report(adapter, scan_pages(adapter, "tenant:*"), top=5, progress=quiet)
    assert _without_seconds(fast_mem) == _without_seconds(plain_mem)
    adapter.close()


def test_keys_that_expire_or_vanish_during_the_scan(seeded):
    client = seeded.client()
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            client.set(f"tenant:churn:cache:{i}", "x", px=1 + i % 40)
            client.delete(f"tenant:churn:cache:{i - 25}")
            i += 1

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        adapter = adapter_for(seeded)
        fast = server_side.audit_ttl(adapter, "*", sample=5, progress=_Quiet(), start=100)
        report = server_side.memory_report(adapter, "*", top=3, progress=_Quiet(), start=100)
    finally:
        stop.set()
        thread.join()
    time.sleep(0.06)  # every churn key has expired now
    stable = [k for k in client.scan_iter(count=1000) if not k.startswith("tenant:churn:")]
    without = sum(1 for k in stable if client.ttl(k) == -1)
    # churned keys all carry a TTL, so they never count as "without TTL", and nothing crashed on vanished keys
    assert fast["without_ttl"] == without
    assert "churn" not in fast["by_tenant"]
    assert report["scanned"] >= len(stable)
    adapter.close()


def test_scripts_refused_falls_back_to_the_pipelined_path(seeded, tmp_path):
    admin = seeded.client()
    admin.execute_command("ACL", "SETUSER", "noscript", "on", ">noscript-pw", "~*", "&*", "+@all", "-@scripting")
    adapter = adapter_for(seeded, username="noscript", password="noscript-pw")
    assert not server_side.available(adapter)
    adapter.close()
    result = runbook(
        "run",
        "redis/audit-ttl",
        "--redis",
        f"redis://noscript@127.0.0.1:{seeded.port}/0",
        "--transcripts-dir",
        str(tmp_path),
        "--json",
        env={"REDISCLI_AUTH": "noscript-pw"},
    )
    assert result.code == 0, result.output
    audit = next(s for s in result.json()["steps"] if s["result"] and "without_ttl" in s["result"])
    truth = sum(1 for k in admin.scan_iter(count=1000) if admin.ttl(k) == -1)
    assert audit["result"]["without_ttl"] == truth
    outputs = [e["output"] for e in of_type(events(result.json()["transcript"]), "step.output")]
    assert any("client-side" in o and "scripts refused" in o for o in outputs)


def test_server_side_path_runs_in_a_dry_run_and_says_so(seeded, tmp_path):
    result = runbook(
        "run",
        "redis/memory-report",
        "--redis",
        f"redis://127.0.0.1:{seeded.port}/0",
        "--dry-run",
        "--transcripts-dir",
        str(tmp_path),
        "--json",
    )
    assert result.code == 0, result.output
    outputs = [e["output"] for e in of_type(events(result.json()["transcript"]), "step.output")]
    assert any("server-side" in o for o in outputs)


def test_eval_ro_cannot_write_even_if_a_script_tried(seeded):
    """The server itself refuses writes inside EVAL_RO; and plain EVAL never leaves a rehearsal."""
    adapter = adapter_for(seeded, allow_mutation=True)
    with pytest.raises(Exception) as info:
        adapter.call(["EVAL_RO", "return redis.call('SET', 'x', '1')", "0"])
    assert "write" in str(info.value).lower()
    adapter.close()
    guarded = adapter_for(seeded)
    with pytest.raises(MutationRefused):
        guarded.call(["EVAL", "return redis.call('SET', 'x', '1')", "0"])
    guarded.close()
    assert seeded.client().get("x") is None
    with pytest.raises(redis.ResponseError):
        seeded.client().execute_command("EVAL_RO", "return redis.call('DEL', 'tenant:acme:wm:active')", "0")


def test_pacer_accounts_for_every_script_call_and_keeps_batches_in_bounds(seeded):
    """What the step's summary reports (calls, batch sizes, server time) is what really reached Redis."""
    admin = seeded.client()
    adapter = adapter_for(seeded)
    before = int(admin.info("commandstats").get("cmdstat_eval_ro", {}).get("calls", 0))
    pacer = server_side.Pacer(floor=100, ceiling=400)
    result = server_side.audit_ttl(adapter, "*", sample=5, progress=_Quiet(), start=100, pacer=pacer)
    calls = int(admin.info("commandstats")["cmdstat_eval_ro"]["calls"]) - before
    adapter.close()
    assert result["scanned"] == admin.dbsize()
    assert pacer.calls == calls > 1
    assert 100 <= pacer.smallest <= pacer.largest <= 400
    assert pacer.total_s > 0 and pacer.longest_s <= pacer.total_s  # measured by the scripts with TIME
    assert f"{calls} calls of {pacer.smallest}-{pacer.largest} keys" in pacer.summary()


def test_the_step_says_which_path_it_took_why_and_what_its_batches_did(seeded, tmp_path):
    result = runbook(
        "run",
        "redis/audit-ttl",
        "--redis",
        f"redis://127.0.0.1:{seeded.port}/0",
        "--transcripts-dir",
        str(tmp_path),
        "--json",
    )
    assert result.code == 0, result.output
    outputs = [e["output"] for e in of_type(events(result.json()["transcript"]), "step.output")]
    method = next(o for o in outputs if "method:" in o)
    assert "server-side (scripts allowed)" in method
    assert re.search(r"\d+ calls of \d+-\d+ keys, server time [\d.]+s, longest call [\d.]+ ms", method), method
    assert "budget 1.5 ms per call" in method and "at most 50% of the time" in method
