"""The server-side (Lua) keyspace path gives exactly what the client-side pipelined path gives."""

from __future__ import annotations

import dataclasses
import re
import threading
import time

import pytest
import redis

from engine.adapters import redis as redis_adapter
from engine.adapters.redis import RedisAdapter
from engine.errors import MutationRefused
from engine.keyspace import operations, pacing, server_side
from engine.keyspace.pages import scan_pages
from engine.sandbox import seed_bulk, seed_somabrain
from engine.steps import keyspace_step
from engine.targets import RedisEndpoint
from tests.integration.cli_support import assert_path_follows_what_was_seen, events, of_type, runbook


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


@pytest.mark.parametrize(
    ("rules", "path"),
    [
        (["+@read", "+info"], "client-side (scripts refused by the server)"),  # no PING, no scripts
        (["+@read", "+info", "+@scripting"], "client-side (scripts refused by the server)"),  # scripts, no TIME
        (["+@all", "-ping"], "server-side (scripts allowed; same host, round trip"),  # timed on DBSIZE
    ],
)
def test_a_user_refused_ping_or_the_scripts_commands_still_gets_the_audit(seeded, rules, path):
    """The ACL of a read-only operator account: what the path choice and the scripts need beyond reading
    keys (PING to time the round trip, TIME inside every script) may be refused; the audit still runs."""
    admin = seeded.client()
    admin.execute_command("ACL", "SETUSER", "reader", "on", ">reader-pw", "~*", *rules)
    truth = sum(1 for k in admin.scan_iter(count=1000) if admin.ttl(k) == -1)
    # a real run (no COMMAND for this user: a rehearsal's guard could not tell EVAL_RO is read-only)
    adapter = adapter_for(seeded, allow_mutation=True, username="reader", password="reader-pw").connect()
    try:
        reading = keyspace_step._Reading(adapter, lambda: scan_pages(adapter, "*"), lambda fn, *_: fn(_Quiet()), "")
        action = keyspace_step._plan_analysis("audit_ttl", {"match": "*", "sample": 2}, lambda: reading, "", "")
        result = action.execute()
        assert result["without_ttl"] == truth and result["scanned"] == admin.dbsize()
        assert action.output is not None and (action.output(result) or "").startswith(f"method: {path}")
    finally:
        adapter.close()


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

    def scripts() -> int:  # the first call sends the script's body, the others its SHA1
        stats = admin.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("eval_ro", "evalsha_ro"))

    before = scripts()
    pacer = server_side.Pacer(floor=100, ceiling=400)
    result = server_side.audit_ttl(adapter, "*", sample=5, progress=_Quiet(), start=100, pacer=pacer)
    calls = scripts() - before
    assert int(admin.info("commandstats")["cmdstat_evalsha_ro"]["calls"]) >= calls - 1
    adapter.close()
    assert result["scanned"] == admin.dbsize()
    assert pacer.calls == calls > 1
    # never more keys than the ceiling; fewer than the floor when a script's own clock stopped it early
    assert 1 <= pacer.smallest <= pacer.largest <= 400
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
    assert "server-side (scripts allowed; same host, round trip" in method, method
    assert "other clients ran" in method and "paced to what the server is doing" in method
    assert re.search(r"\d+ calls of \d+-\d+ keys, server time [\d.]+s, longest call [\d.]+ ms", method), method
    assert "ms per call while other clients were active" in method and "at most 50% of the time" in method


def test_a_script_stops_by_its_own_clock_whatever_it_was_asked_for(seeded):
    """The bound on a call's length is structural: told to ask SCAN for far more keys than its budget
    allows, a script stops once TIME shows the budget spent, after a few sub-steps, and says how far it got;
    the next call goes on from its cursor, so the figures stay whole."""
    adapter = adapter_for(seeded)
    keys = seeded.client().dbsize()
    assert keys > 6000
    # ask for every key at once, in sub-steps of 10, with 50 us of server time: far less than a pass needs
    args = ["0", "0", "*", str(keys * 10), "10", "50", "1", "5"]
    (cursor, asked, returned, *_), scanned, *_ = adapter.call(["EVAL_RO", server_side.AUDIT_TTL, *args])
    assert str(cursor) != "0"  # it stopped before the end of the keyspace
    assert 10 <= int(asked) < keys  # by its clock, not by the count it was given
    assert int(asked) % 10 == 0 and int(returned) >= int(scanned) > 0
    total, cursor = 0, "0"
    while True:  # the same calls to the end: every key once, whatever each call's length
        args = ["0", cursor, "*", str(keys * 10), "50", "200", "1", "5"]
        (cursor, *_), scanned, *_ = adapter.call(["EVAL_RO", server_side.AUDIT_TTL, *args])
        total, cursor = total + int(scanned), str(cursor)
        if cursor == "0":
            break
    adapter.close()
    assert total == keys


def test_a_scripts_last_sub_step_is_cut_to_what_its_budget_has_left(seeded):
    """A call that stopped a whole sub-step short of its budget wasted up to a sub-step's worth of the call:
    on a slower machine 1M keys took 1,562 round trips where 1,500 was the target. The last sub-step
    is cut to what the rest of the budget holds at the call's cost per key so far (10 keys at least), so
    the keys a call asked for are not a whole number of sub-steps in most calls; the figures stay whole."""
    adapter = adapter_for(seeded)
    keys = seeded.client().dbsize()
    asked_per_call: list[int] = []
    while len(asked_per_call) < 40:  # 300 us a call in 30-key sub-steps, whole passes until dozens of calls
        total, cursor = 0, "0"
        while True:
            args = ["0", cursor, "*", str(keys), "30", "300", "0", "5"]
            (cursor, asked, *_), scanned, *_ = adapter.call(["EVAL_RO", server_side.AUDIT_TTL, *args])
            total, cursor = total + int(scanned), str(cursor)
            if cursor == "0":  # (the last call of a pass ends where the keyspace does)
                break
            asked_per_call.append(int(asked))
        assert total == keys
    adapter.close()
    cut = [n for n in asked_per_call if n % 30]
    # a call is left whole only when its budget ran out within 10 keys of a sub-step's end, or a stall took it
    assert len(cut) >= len(asked_per_call) // 5, asked_per_call  # (about two in three here when quiet)
    assert all(n >= 30 for n in asked_per_call)  # the first sub-step is always whole


class _Load:
    """A production client the test holds: GET after GET on its own connection until released (`every_s`
    apart: a paced one leaves the machine's cores idle, where a loop takes one)."""

    def __init__(self, server, every_s: float = 0.0) -> None:  # type: ignore[no-untyped-def]
        self.client = server.client()
        self.every_s = every_s
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.client.get("tenant:load:cache:0")
            self.sent += 1

    def __enter__(self) -> _Load:
        self.thread.start()
        while self.sent < 10:  # it is running before the scan starts
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_the_scripts_keep_their_calls_short_while_another_client_is_active_with_the_same_results(seeded):
    adapter = adapter_for(seeded)
    quiet_pacer = server_side.Pacer()
    idle = server_side.audit_ttl(adapter, "*", sample=5, progress=_Quiet(), start=100, pacer=quiet_pacer)
    busy_pacer = server_side.Pacer()
    with _Load(seeded) as load:
        began = time.perf_counter()
        busy = server_side.audit_ttl(adapter, "*", sample=5, progress=_Quiet(), start=100, pacer=busy_pacer)
        elapsed = time.perf_counter() - began
        assert not load.stop.is_set()  # the load ran for the whole scan: the test ends it only now
    plain = operations.audit_ttl(adapter, scan_pages(adapter, "*"), sample=5, progress=_Quiet())
    adapter.close()
    figures = ("scanned", "without_ttl", "by_tenant")
    assert {k: idle[k] for k in figures} == {k: busy[k] for k in figures} == {k: plain[k] for k in figures}
    quiet, loaded = quiet_pacer.state, busy_pacer.state
    assert quiet is not None and loaded is not None
    assert quiet.busy_calls == 0 and quiet.top_budget_s == server_side.IDLE_BUDGET_S  # grew to the idle budget
    assert loaded.busy_calls == loaded.calls  # every call saw the other client
    assert loaded.budget_s <= loaded.policy.busy_budget_s < quiet.top_budget_s  # shorter calls beside a client
    # beside the other client our calls held the server at most half of the time: by pauses, or by the part of
    # each round trip the server did not spend on our call (on the same host that part is often enough alone);
    # pauses owed are slept once they add up to a millisecond, so one may be left at the end
    assert loaded.total_s <= loaded.policy.duty * elapsed + server_side.MIN_SLEEP_S and quiet_pacer.paused_s == 0
    # (the batch sizes that follow from these budgets are the controller's, unit-tested in test_keyspace_pacing:
    # here, on a small keyspace, both scans take a handful of calls, the quiet one growing from its first)
    assert "while other clients were active" in busy_pacer.summary()


def _info_calls(server) -> int:  # type: ignore[no-untyped-def]
    return int(server.client().info("commandstats").get("cmdstat_info", {}).get("calls", 0))


class _NeverQuiet(server_side.Pacer):
    """A pacer that never counts the server idle again once it saw it busy: the quiet window is measured by
    the server's clock, which the test does not hold, and a slow machine would otherwise reach it mid-scan
    (then every call reads, as it should on an idle server)."""

    def policy(self) -> pacing.Policy:
        return dataclasses.replace(super().policy(), quiet_s=1e9)


@pytest.mark.parametrize("tick_s", [1e-6, 0.01, 0.03])
def test_beside_other_clients_a_call_reads_the_servers_command_count_only_every_read_every_s(seeded, tick_s):
    """INFO inside a script costs the server as much as a dozen keys' TTLs: while others are active, a call
    reads the command count only when `read_every_s` (25 ms) has passed since the last reading, by the
    scan's clock (here the test's, `tick_s` a reading of it). Between two readings our own commands, those of the
    calls that did not read included, are all taken off, so a server nobody else uses shows 0 commands
    from others; and the figures stay whole."""
    adapter = adapter_for(seeded).connect()  # connecting reads INFO too: counted from here
    keys = seeded.client().dbsize()
    ticks = iter(range(10**9))
    # a server seen busy on its own host before the scan: the shortest calls, so the scan makes many
    busy = pacing.Activity(rtt_s=0.0001, others=50, seconds=0.1, same_host=True)
    pacer = _NeverQuiet(probed=busy)
    observed: list[pacing.Observation] = []
    observe = pacer.observe
    pacer.observe = lambda seen: observed.append(seen) or observe(seen)  # type: ignore[method-assign]
    before = _info_calls(seeded)
    replies = server_side._batches(
        adapter, server_side.AUDIT_TTL, "*", ["5"], 100, pacer, clock=lambda: next(ticks) * tick_s, sleep=lambda s: None
    )
    scanned = sum(int(body[0]) for _, body in replies)
    info = _info_calls(seeded) - before - 1  # the first of the test's own two INFOs is counted in the second
    adapter.close()
    assert scanned == keys
    assert len(observed) == pacer.calls > 20  # 0.02 ms calls over 6,000 keys: enough for the rule to show
    reads = [seen for seen in observed if seen.read]
    assert info == len(reads) and observed[0].read
    # the scan reads the clock twice a call: 2 us, 20 ms or 60 ms a call; never 25 ms since the first reading,
    # every second call, every call
    every = {1e-6: None, 0.01: 2, 0.03: 1}[tick_s]
    assert len(reads) == (1 if every is None else -(-len(observed) // every))
    assert all(seen.others == 0 for seen in reads[1:])  # nobody else here: every command counted was ours
    assert pacer.state is not None and pacer.state.busy_calls == pacer.calls  # the probe's busy carried over


def test_on_the_servers_own_host_beside_other_clients_a_call_is_one_sub_step_of_ten_keys(seeded):
    """There a production request that arrives during one of our calls waits for the rest of it, so each
    call is as short as the engine can make it: the script is given 20 us of server time and SCAN
    sub-steps of 10 keys (the COUNT `redis-cli --scan` asks for), read here from what the server ran
    (SLOWLOG of every command, those inside the scripts included). The figures stay whole."""
    admin = seeded.client()
    keys = admin.dbsize()
    admin.config_set("slowlog-max-len", 1_000_000)
    admin.config_set("slowlog-log-slower-than", 0)
    admin.slowlog_reset()
    adapter = adapter_for(seeded).connect()
    pacer = _NeverQuiet(probed=pacing.Activity(rtt_s=0.0001, others=50, seconds=0.1, same_host=True))
    ticks = iter(range(10**9))
    replies = server_side._batches(
        adapter, server_side.AUDIT_TTL, "*", ["5"], 100, pacer, clock=lambda: next(ticks) * 1e-6, sleep=lambda s: None
    )
    scanned = sum(int(body[0]) for _, body in replies)
    adapter.close()
    admin.config_set("slowlog-log-slower-than", 10_000)
    # redis-py gives each command as its words joined by spaces: none of these have spaces in them
    ran = [entry["command"].decode().split(" ") for entry in reversed(admin.slowlog_get(1_000_000))]
    first = [c for c in ran if c[0] == "EVAL_RO"]  # the script's body, once: EVALSHA_RO from then on
    calls = [c for c in ran if c[0] == "EVALSHA_RO"]  # EVALSHA_RO sha 0 cursor match keys sub budget_us ...
    counts = [c[c.index("COUNT") + 1] for c in ran if c[0] == "SCAN"]
    assert scanned == keys
    assert len(first) == 1 and len(calls) + 1 == pacer.calls > keys // 100  # short calls: many of them
    assert {c[7] for c in calls} == {"20"}  # every call's budget of server time, in us
    # from the second call on (the first sizes its sub-steps before any cost per key is known: a quarter of
    # its 100 keys), every SCAN inside asks for 10 keys
    assert {c[6] for c in calls} == {"10"}
    assert set(counts[1:]) == {"10"} and counts[0] == "25" and len(counts) >= pacer.calls


def test_the_export_scan_grows_on_an_idle_server_and_stays_short_beside_another_client(redis_server):
    server = redis_server()
    admin = server.client()
    admin.execute_command("DEBUG", "POPULATE", 200_000, "other", 10)
    for i in range(50):
        admin.set(f"tenant:acme:wm:{i}", "v")

    def scans(load: bool) -> tuple[list[bytes], int, str]:
        adapter = adapter_for(server)
        before = int(admin.info("commandstats")["cmdstat_scan"]["calls"])
        if load:
            with _Load(server):
                keys = [k for batch in adapter.key_batches("tenant:acme:*", count=1000) for k in batch]
        else:
            keys = [k for batch in adapter.key_batches("tenant:acme:*", count=1000) for k in batch]
        calls = int(admin.info("commandstats")["cmdstat_scan"]["calls"]) - before
        notes = " ".join(adapter.scan_notes)
        adapter.close()
        return sorted(keys), calls, notes

    admin.scan(0, count=1)  # cmdstat_scan exists from here
    idle_keys, idle_scans, idle_note = scans(load=False)
    busy_keys, busy_scans, busy_note = scans(load=True)
    assert idle_keys == busy_keys == sorted(f"tenant:acme:wm:{i}".encode() for i in range(50))
    assert idle_scans < 20, idle_note  # COUNT grew towards 65536 while nobody else was there
    assert busy_scans > 2 * idle_scans, busy_note
    assert "0 calls, up to 0 commands/s" in idle_note and "while the server was idle" in idle_note
    assert "while the server was idle" not in busy_note


def test_beside_another_client_on_the_servers_own_host_the_export_reads_as_little_at_a_time_as_redis_cli(
    redis_server,
):
    """A SCAN of 1,000 keys held Redis about a millisecond, and so did a pipeline of a few hundred keys'
    TYPE+PTTL+DUMP: production's p99 rose from 1.3 to 4-7 ms during an export (docs/performance.md)."""
    server = redis_server()
    admin = server.client()
    admin.execute_command("DEBUG", "POPULATE", 20_000, "other", 10)
    wanted = sorted(f"tenant:acme:wm:{i}".encode() for i in range(600))
    for key in wanted:
        admin.set(key, "v")

    def export(load: bool) -> tuple[list[list[bytes]], list[int], str]:
        adapter = adapter_for(server)
        admin.config_set("slowlog-max-len", 1_000_000)
        admin.config_set("slowlog-log-slower-than", 0)
        admin.slowlog_reset()
        try:
            if load:
                with _Load(server) as running:
                    batches = list(adapter.key_batches("tenant:acme:*", count=1000))
                    assert not running.stop.is_set()  # the other client ran for the whole scan
            else:
                batches = list(adapter.key_batches("tenant:acme:*", count=1000))
        finally:
            admin.config_set("slowlog-log-slower-than", 10_000)
        ran = [e["command"].decode().split(" ") for e in reversed(admin.slowlog_get(1_000_000))]
        counts = [int(c[c.index("COUNT") + 1]) for c in ran if c[0] == "SCAN"]
        notes = " ".join(adapter.scan_notes)
        adapter.close()
        return batches, counts, notes

    busy, busy_counts, busy_note = export(load=True)
    idle, idle_counts, idle_note = export(load=False)
    assert sorted(k for b in busy for k in b) == sorted(k for b in idle for k in b) == wanted
    # beside the other client: after the first SCAN (COUNT 1000, before any cost is known), SCANs of the
    # shortest budget (0.02 ms: tens of keys here, up to a couple of hundred where a key costs 0.1 us), and
    # batches (the export's pipelines) of at most BUSY_BATCH_KEYS
    assert busy_counts[0] == 1000 and max(busy_counts[1:]) < 500, busy_note
    assert "the shortest, on the server's own host" in busy_note
    assert max(len(b) for b in busy) <= redis_adapter.BUSY_BATCH_KEYS < len(wanted)
    # alone on the server: COUNT never under the first and growing (a few SCANs for the whole keyspace), and
    # one batch holds every key found (up to a thousand)
    assert min(idle_counts) == 1000 < max(idle_counts) and 5 * len(idle_counts) < len(busy_counts), idle_note
    assert len(idle) == 1, idle_note


def test_every_path_gives_the_same_audit_and_says_which_it_took(seeded, tmp_path):
    procedures = tmp_path / "procs"
    procedures.mkdir()
    for mode in ("auto", "always", "never"):
        (procedures / f"audit-{mode}.yaml").write_text(
            f"id: t/audit-{mode}\ntitle: audit {mode}\nsection: test\ndescription: audit {mode}\n"
            f"requires: [redis]\nsteps:\n  - id: audit\n    name: audit\n    keyspace:\n"
            f"      audit_ttl: {{match: '*', sample: 3, server_side: {mode}}}\n"
        )
    results, methods = {}, {}
    with _Load(seeded):
        for mode in ("auto", "always", "never"):
            result = runbook(
                "run",
                f"t/audit-{mode}",
                "--procedures",
                str(procedures),
                "--redis",
                f"redis://127.0.0.1:{seeded.port}/0",
                "--transcripts-dir",
                str(tmp_path / mode),
                "--json",
            )
            assert result.code == 0, result.output
            step = result.json()["steps"][0]["result"]
            results[mode] = {k: step[k] for k in ("scanned", "without_ttl", "by_tenant")}
            outputs = [e["output"] for e in of_type(events(result.json()["transcript"]), "step.output")]
            methods[mode] = next(o for o in outputs if "method:" in o)
    assert results["auto"] == results["always"] == results["never"]
    # beside another client on the server's own host: small pages while a core is idle, else the scripts
    assert_path_follows_what_was_seen(methods["auto"])
    assert "other clients ran" in methods["auto"]
    assert methods["never"].startswith("method: client-side (server_side: never)")


def test_the_export_scan_works_for_a_user_refused_time(redis_server):
    server = redis_server()
    admin = server.client()
    for i in range(3000):
        admin.set(f"tenant:acme:wm:{i}" if i % 3 == 0 else f"other:{i}", "v")
    admin.execute_command(
        "ACL", "SETUSER", "reader", "on", ">reader-pw", "~*", "+@read", "+ping", "+info", "+command", "-time"
    )
    adapter = adapter_for(server, username="reader", password="reader-pw")
    keys = sorted(k for batch in adapter.key_batches("tenant:acme:*", count=1000) for k in batch)
    notes = " ".join(adapter.scan_notes)
    adapter.close()
    assert keys == sorted(f"tenant:acme:wm:{i}".encode() for i in range(0, 3000, 3))
    assert notes.startswith("SCAN: ") and "calls of" in notes  # paced on the round trip instead of TIME
