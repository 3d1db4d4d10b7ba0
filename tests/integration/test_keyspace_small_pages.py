"""The small-pages path: on the server's own host beside other clients, each SCAN asks for 10 keys, as
`redis-cli --scan`'s, and each round trip carries one page's checks and the next SCAN; its figures are the
other paths' figures. Every command is read back from the server's own SLOWLOG, every read of the socket
from its INFO stats."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from engine.keyspace import host_cpu, operations, pacing, server_side, small_pages
from engine.keyspace.pages import scan_pages
from engine.sandbox import seed_bulk, seed_somabrain
from engine.steps import keyspace_step
from tests.integration.cli_support import assert_path_follows_what_was_seen, events, of_type, runbook
from tests.integration.test_keyspace_server_side import _Load, _Quiet, _without_seconds, adapter_for


@pytest.fixture
def seeded(redis_server):
    server = redis_server()
    client = server.client()
    seed_somabrain(client)
    seed_bulk(client, 3000, tenants=20)
    return server


class _Logged:
    """Every command the server runs while the block is open, oldest first (SLOWLOG with no threshold)."""

    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        self.admin = server.client()
        self.commands: list[list[str]] = []

    def __enter__(self) -> _Logged:
        self.admin.config_set("slowlog-max-len", 1_000_000)
        self.admin.config_set("slowlog-log-slower-than", 0)
        self.admin.slowlog_reset()
        return self

    def __exit__(self, *exc: object) -> None:
        self.admin.config_set("slowlog-log-slower-than", 10_000)
        entries = self.admin.slowlog_get(1_000_000)
        self.admin.slowlog_reset()
        ours = [e["command"].decode("utf-8", "surrogateescape").split(" ") for e in reversed(entries)]
        self.commands = [c for c in ours if c[0].upper() not in ("CONFIG", "SLOWLOG", "INFO")]


def _pages(commands: list[list[str]], checks: int) -> list[tuple[str, int]]:
    """(SCAN's cursor, the number of keys checked after it) for every SCAN; anything else fails the test."""
    pages: list[tuple[str, int]] = []
    for command in commands:
        name = command[0].upper()
        if name == "SCAN":
            assert command[2:] == ["MATCH", "*", "COUNT", "10"], command
            pages.append((command[1], 0))
        else:
            assert pages, f"{command} before the first SCAN"
            cursor, seen = pages[-1]
            pages[-1] = (cursor, seen + 1)
    return [(cursor, seen // checks) for cursor, seen in pages]


def _page_sizes(server, cursors: list[str]) -> list[int]:  # type: ignore[no-untyped-def]
    """How many keys each of those SCANs returns (the keyspace has not changed since)."""
    with server.client() as client:
        return [len(client.scan(int(cursor), match="*", count=10)[1]) for cursor in cursors]


def _reads(log: _Logged) -> int:
    """How many times the server has read a client's socket (one per round trip of ours: a pipeline of a few
    hundred bytes is one write), this INFO's own read included."""
    return int(log.admin.info("stats")["total_reads_processed"])


def test_every_scan_asks_for_ten_keys_and_each_round_trip_checks_one_page_and_scans_the_next(seeded):
    adapter = adapter_for(seeded).connect()
    plain = operations.audit_ttl(adapter, scan_pages(adapter, "*"), sample=5, progress=_Quiet())
    walked = small_pages.Walked()
    with _Logged(seeded) as log:
        before = _reads(log)
        small = small_pages.audit_ttl(adapter, "*", sample=5, progress=_Quiet(), walked=walked)
        reads = _reads(log) - before - 1  # less the second INFO's own read
    assert {k: small[k] for k in ("scanned", "without_ttl", "by_tenant")} == {
        k: plain[k] for k in ("scanned", "without_ttl", "by_tenant")
    }
    assert small["scanned"] == seeded.client().dbsize() and len(small["sample"]) == 5
    commands = log.commands
    assert not [c for c in commands if c[0].upper() not in ("SCAN", "TTL")], "only SCANs and TTLs, no script"
    pages = _pages(commands, checks=1)
    assert [checked for _, checked in pages] == _page_sizes(seeded, [cursor for cursor, _ in pages])
    assert max(checked for _, checked in pages) <= 20  # COUNT 10 is a hint: a bucket's chain may add a few
    assert walked.keys == small["scanned"] and walked.pages == sum(1 for _, n in pages if n)
    last_has_keys = pages[-1][1] > 0
    # the first SCAN alone, then one round trip per page: its checks and the next SCAN; the last page's checks
    assert walked.round_trips == 1 + (len(pages) - 1) + last_has_keys
    assert walked.round_trips <= reads <= walked.round_trips + 2, "the server read our socket once a round trip"


def test_the_memory_report_checks_each_page_with_type_and_memory_usage_in_one_pipeline(seeded):
    adapter = adapter_for(seeded).connect()
    plain = operations.memory_report(adapter, scan_pages(adapter, "*"), top=4, progress=_Quiet())
    with _Logged(seeded) as log:
        small = small_pages.memory_report(adapter, "*", top=4, progress=_Quiet(), walked=small_pages.Walked())
    assert _without_seconds(small) == _without_seconds(plain)
    walk = log.commands[: next(i for i, c in enumerate(log.commands) if c[0].upper() not in ("SCAN", "TYPE", "MEMORY"))]
    pairs = [c for c in walk if c[0].upper() != "SCAN"]
    assert pairs and len(pairs) % 2 == 0
    assert all(
        a[0].upper() == "TYPE" and b[:2] == ["MEMORY", "USAGE"] and a[1] == b[2]
        for a, b in zip(pairs[::2], pairs[1::2], strict=True)
    )  # TYPE first: it expires a key whose TTL ran out, which MEMORY USAGE alone would still size
    pages = _pages(walk, checks=2)
    assert [checked for _, checked in pages] == _page_sizes(seeded, [cursor for cursor, _ in pages])


def test_beside_another_client_the_step_takes_the_small_pages_and_says_so(seeded, tmp_path):
    procedures = tmp_path / "procs"
    procedures.mkdir()
    (procedures / "analyse.yaml").write_text(
        "id: t/analyse\ntitle: analyse\nsection: test\ndescription: both analyses\nrequires: [redis]\nsteps:\n"
        "  - id: audit\n    name: audit\n    keyspace:\n      audit_ttl: {match: '*', sample: 3}\n"
        "  - id: memory\n    name: memory\n    keyspace:\n      memory_report: {match: 'tenant:*', top: 3}\n"
    )
    adapter = adapter_for(seeded).connect()
    expected_audit = operations.audit_ttl(adapter, scan_pages(adapter, "*"), sample=3, progress=_Quiet())
    expected_memory = operations.memory_report(adapter, scan_pages(adapter, "tenant:*"), top=3, progress=_Quiet())
    url = f"redis://127.0.0.1:{seeded.port}/0"
    for extra in ([], ["--dry-run"]):  # reads only: a rehearsal takes the same path
        with _Load(seeded, every_s=0.001), _Logged(seeded) as log:
            result = runbook(
                "run", "t/analyse", "--procedures", str(procedures), "--redis", url, "--json",
                "--transcripts-dir", str(tmp_path / f"t{len(extra)}"), *extra,
            )  # fmt: skip
        assert result.code == 0, result.output
        steps = {s["id"]: s["result"] for s in result.json()["steps"]}
        assert {k: steps["audit"][k] for k in ("scanned", "without_ttl", "by_tenant")} == {
            k: expected_audit[k] for k in ("scanned", "without_ttl", "by_tenant")
        }
        assert _without_seconds(steps["memory"]) == _without_seconds(expected_memory)
        outputs = [e["output"] for e in of_type(events(result.json()["transcript"]), "step.output")]
        methods = [o for o in outputs if o.startswith("method:")]
        assert len(methods) == 2 and all(m.startswith("method: ") and "same host, round trip" in m for m in methods)
        for method in methods:  # the path follows the round trip and the machine's idle CPU: read, not held
            assert_path_follows_what_was_seen(method)
        if all(m.startswith("method: small pages") for m in methods):
            # no script ran, nor the probe of whether this user may run them (asked only where they would run)
            assert not [c for c in log.commands if c[0].upper().startswith("EVAL")], "no script ran"
            scans = [c for c in log.commands if c[0].upper() == "SCAN"]
            assert scans and all(c[-2:] == ["COUNT", "10"] for c in scans)


def test_with_every_core_of_the_machine_taken_the_scripts_are_chosen_over_the_small_pages(seeded):
    machine = host_cpu.sample()
    if machine is None:
        pytest.skip("no /proc/stat: the machine's idle CPU is unknown here")
    if len(os.sched_getaffinity(0)) < machine.cores:
        pytest.skip("this process may not run on every core of the machine, so it cannot take them all")
    spin = "import sys\nprint('spinning', flush=True)\nwhile True: pass"
    spinners = [
        subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE, text=True) for _ in range(machine.cores)
    ]
    try:
        for spinner in spinners:  # each is running before the server is watched
            assert spinner.stdout is not None and spinner.stdout.readline() == "spinning\n"
        adapter = adapter_for(seeded).connect()
        with _Load(seeded):
            seen = adapter.activity()
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert seen.same_host and seen.others and seen.cores == machine.cores
    assert seen.idle_cores is not None and seen.idle_cores < pacing.SMALL_PAGES_CORES, seen
    # the spinners slow the PINGs too, maybe past the 0.2 ms of a direct path: the choice on a direct one
    choice = pacing.choose_path(dataclasses.replace(seen, rtt_s=pacing.FAST_RTT_S / 2))
    assert choice.path == "server-side" and "no core to spare" in choice.reason, choice


def test_the_step_takes_the_small_pages_while_a_core_is_idle_and_the_scripts_when_none_is(seeded, monkeypatch):
    """The machine's idle CPU and the round trip are what a test cannot hold on a shared machine: here they
    are given (host_cpu.sample, a direct path's round trip); the server, the other client and the scan are real."""
    adapter = adapter_for(seeded).connect()
    monkeypatch.setattr(adapter, "_round_trip_s", lambda *_: pacing.FAST_RTT_S / 2)
    expected = operations.audit_ttl(adapter, scan_pages(adapter, "*"), sample=3, progress=_Quiet())

    def reading() -> keyspace_step._Reading:
        return keyspace_step._Reading(adapter, lambda: scan_pages(adapter, "*"), lambda fn, *_: fn(_Quiet()), "here")

    for idle, path in ((1.5, "small pages"), (0.5, "server-side")):
        samples = iter([host_cpu.Sample(0, 0, 2), host_cpu.Sample(int(idle * 50), 100, 2)])
        monkeypatch.setattr(host_cpu, "sample", lambda *_, given=samples: next(given))
        action = keyspace_step._plan_analysis("audit_ttl", {"match": "*", "sample": 3}, reading, "here", "audit")
        with _Load(seeded), _Logged(seeded) as log:
            result = action.execute()
        assert {k: result[k] for k in ("scanned", "without_ttl", "by_tenant")} == {
            k: expected[k] for k in ("scanned", "without_ttl", "by_tenant")
        }
        assert action.output is not None
        method = action.output(result) or ""
        assert method.startswith(f"method: {path} (") and f", {idle:.1f} of 2 cores idle: " in method, method
        probe = ["EVAL_RO", *server_side.PROBE.split(" "), "0"]  # server_side.available: may this user run them
        scripts = [c for c in log.commands if c[0].upper() in ("EVAL_RO", "EVALSHA_RO") and c != probe]
        assert bool(scripts) == (path == "server-side")
        # whether this user may run scripts is asked only where they would run: small pages send none at all
        assert (probe in log.commands) == (path == "server-side"), log.commands[:5]
