"""What a tenant export costs on the wire: 5,000 keys among a million in at most 50 round trips (issue 15).

The rare pattern is the expensive case: with SCAN COUNT 1000 and one pipeline per SCAN page it took
about 2,000 round trips (a thousand SCANs, each followed by a pipeline for its few keys). The export
now grows COUNT while pages come back sparse and pipelines per 1,000 keys found. Round trips are
counted by the benchmark's relay (bench/relay.py, no delay) between the real CLI and a real server;
commands by INFO commandstats.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.relay import Relay
from engine.adapters.redis import BUSY_BATCH_KEYS
from engine.steps.tenant_data_step import BUSY_EXISTS_KEYS
from tests.integration.cli_support import runbook
from tests.integration.held_client import HeldClient

KEYS, TENANT_KEYS = 1_000_000, 5_000
MAX_ROUND_TRIPS = 50


def _commandstats(client) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {name.removeprefix("cmdstat_"): v["calls"] for name, v in client.info("commandstats").items()}


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _seed(client) -> None:  # type: ignore[no-untyped-def]
    client.execute_command("DEBUG", "POPULATE", KEYS - TENANT_KEYS, "other", 20)
    pipe = client.pipeline(transaction=False)
    for i in range(TENANT_KEYS):
        key = f"tenant:acme:wm:{i}"
        kind = i % 4
        if kind == 0:
            pipe.set(key, "v" * 50, px=3_600_000 if i % 8 == 0 else None)
        elif kind == 1:
            pipe.hset(key, mapping={"a": "1", "b": str(i)})
        elif kind == 2:
            pipe.rpush(key, "x", "y")
        else:
            pipe.sadd(key, "m1", "m2")
    pipe.execute()
    assert client.dbsize() == KEYS


@dataclass(frozen=True)
class Export:
    turns: int
    calls: dict[str, int]
    longest_scan_ms: float


def _export(server, admin, tmp_path: Path, env: dict[str, str] | None) -> Export:  # type: ignore[no-untyped-def]
    admin.slowlog_reset()
    relay = Relay(("127.0.0.1", server.port), one_way=0.0)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    try:
        before = _commandstats(admin)
        result = runbook(
            "run",
            "redis/backup-tenant",
            "--var",
            "tenant=acme",
            "--var",
            f"output={out}",
            "--redis",
            f"redis://127.0.0.1:{relay.port}/0",
            "--transcript",
            str(out / "t.jsonl"),
            env=env,
            timeout=300,
        )
        assert result.code == 0, result.output
        after = _commandstats(admin)
        # the CLI has exited: its connections are closed, and the relay adds each one's turns as it ends
        deadline = time.monotonic() + 30
        while relay.open and time.monotonic() < deadline:
            time.sleep(0.05)
        assert relay.open == 0
    finally:
        relay.close()
    exported = list(out.glob("*.keys.jsonl"))
    assert len(exported) == 1
    header = json.loads(exported[0].read_text().split("\n", 1)[0])
    assert header["match"] == "tenant:acme:*"
    calls = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    calls["info"] -= 1  # our own INFO commandstats (the others: the export's, beside each SCAN)
    slow = [e for e in admin.slowlog_get(10000) if _text(e["command"]).upper().startswith("SCAN")]
    longest = max((e["duration"] for e in slow), default=0) / 1000
    print(f"\nround trips {relay.turns}; longest SCAN {longest:.1f} ms; commands {sum(calls.values())}: {calls}")
    assert calls.get("dump", 0) == TENANT_KEYS
    return Export(relay.turns, calls, longest)


def test_a_rare_tenant_among_a_million_keys_exports_in_few_round_trips(redis_server, tmp_path: Path) -> None:
    server = redis_server()
    admin = server.client()
    _seed(admin)
    admin.config_set("slowlog-log-slower-than", 1000)  # every call over 1 ms, for the report
    admin.config_set("slowlog-max-len", 10000)

    # an idle server (nobody else sends a command): the SCANs grow to the idle budget, no setting needed
    # (a SCAN may take up to 100 ms then: about 22 SCANs for a million keys at 0.6 us a key on a quiet
    # machine, about 40 round trips in all; a busy machine stretches each SCAN's measured cost, so more)
    idle = _export(server, admin, tmp_path, None)
    assert idle.calls.get("scan", 0) <= 60, idle.calls
    # besides the SCANs: 15 fixed round trips (three handshakes of one HELLO each, COMMAND, INFO server,
    # INFO cluster, ROLE, the probe's five PINGs, its CLIENT INFO and two INFO stats), 5 DUMP pipelines and
    # the read-back's two INFO stats (are others active?) and its EXISTS pipeline: 23; the relay counts
    # direction changes on the wire, and a busy machine may split a pipeline in two
    assert idle.turns - idle.calls["scan"] <= 23 + 6, f"{idle.turns} round trips (commands: {idle.calls})"
    assert idle.calls.get("hello", 0) == 3 and idle.calls.get("ping", 0) == 5, idle.calls
    # no CLIENT SETINFO: the one CLIENT command is the probe's INFO (does the server see our own socket?)
    assert [name for name in idle.calls if name.startswith("client")] == ["client|info"], idle.calls
    assert idle.calls["client|info"] == 1, idle.calls

    # beside a production client (held by the test until the export ends): the SCANs stay at the busy
    # budget (through the relay, not the server's own host: twice a call's cost besides the server's work,
    # 0.25 ms at least), and the keys found go in pipelines of BUSY_BATCH_KEYS, not per SCAN page: a
    # pipeline's commands run back to back as Redis reads them, so production requests wait for a few
    # keys' DUMPs at most, for a round trip per 20 keys
    with HeldClient(server):
        busy = _export(server, admin, tmp_path, None)
    # (and the check step reads the file back and looks its keys up in EXISTS pipelines of BUSY_EXISTS_KEYS)
    scans = busy.calls.get("scan", 0)
    pipelines = TENANT_KEYS // BUSY_BATCH_KEYS + TENANT_KEYS // BUSY_EXISTS_KEYS
    assert scans > 3 * idle.calls.get("scan", 0), (busy.calls, idle.calls)
    assert scans + pipelines <= busy.turns <= scans + pipelines + 30, f"{busy.turns} round trips ({busy.calls})"
