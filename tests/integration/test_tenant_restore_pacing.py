"""A tenant restore beside production traffic: small pipelines while other clients are active.

Redis runs a pipeline's commands back to back as it reads them, and reads as much of a client's stream
as has arrived: beside 1,000 requests/s a restore in pipelines of 1,000 RESTOREs (and its EXISTS checks
in pipelines of 10,000) raised their p99 from 1.1 to 3.4-3.5 ms (docs/performance.md). While another
client is active the restore now sends at most 20 keys (16 KiB of payload) per RESTORE pipeline and
200 keys per EXISTS pipeline; alone on the server, as before. Round trips are counted by the
benchmark's relay (bench/relay.py, no delay) between the real CLI and a real server; the client the
test holds runs until the restore has ended.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

from bench.relay import Relay
from tests.integration.cli_support import runbook
from tests.integration.held_client import HeldClient
from tests.integration.test_proc_backup import key_state

KEYS = 2000
TENANT = "tenant:acme:*"


def _seed(client) -> None:  # type: ignore[no-untyped-def]
    pipe = client.pipeline(transaction=False)
    for i in range(KEYS):
        key = f"tenant:acme:wm:{i}"
        if i % 3 == 0:
            pipe.set(key, "v" * (i % 200), px=3_600_000)
        elif i % 3 == 1:
            pipe.hset(key, mapping={"a": "1", "b": str(i)})
        else:
            pipe.rpush(key, "x", str(i))
    pipe.set("tenant:other:keep", "1")
    pipe.execute()


def _restore(server, admin, path: Path, tmp_path: Path, name: str) -> tuple[int, int, str]:  # type: ignore[no-untyped-def]
    """(round trips, RESTOREs run, the restore step's method line) of redis/restore-tenant through a relay."""
    relay = Relay(("127.0.0.1", server.port), one_way=0.0)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    try:
        before = int(admin.info("commandstats").get("cmdstat_restore", {}).get("calls", 0))
        transcript = tmp_path / f"{name}.jsonl"
        result = runbook(
            "run",
            "redis/restore-tenant",
            "--var",
            f"input={path}",
            "--var",
            "tenant=acme",
            "--yes",
            "--redis",
            f"redis://127.0.0.1:{relay.port}/0",
            "--transcript",
            str(transcript),
            timeout=300,
        )
        assert result.code == 0, result.output
        restores = int(admin.info("commandstats")["cmdstat_restore"]["calls"]) - before
        deadline = time.monotonic() + 30  # the CLI has exited: the relay adds each connection's turns as it ends
        while relay.open and time.monotonic() < deadline:
            time.sleep(0.05)
        assert relay.open == 0
    finally:
        relay.close()
    outputs = [json.loads(line) for line in transcript.read_text().splitlines()]
    method = next(e["output"] for e in outputs if e.get("type") == "step.output" and "RESTORE pipelines" in e["output"])
    return relay.turns, restores, method


def test_a_restore_beside_another_client_sends_small_pipelines_and_restores_the_same_keys(
    redis_server, tmp_path: Path
) -> None:
    server = redis_server()
    admin = server.client()
    _seed(admin)
    before = key_state(admin, TENANT)
    out = tmp_path / "exports"
    out.mkdir()
    export = runbook(
        "run", "redis/backup-tenant", "--var", "tenant=acme", "--var", f"output={out}", "--redis", server.url,
        "--transcript", str(tmp_path / "export.jsonl"),
    )  # fmt: skip
    assert export.code == 0, export.output
    (path,) = out.glob("*.keys.jsonl")

    def emptied() -> None:
        admin.delete(*before)
        assert admin.dbsize() == 1  # the other tenant's key stays

    # alone on the server: pipelines of 1,000 keys, EXISTS of every key in one pipeline per pass
    emptied()
    alone_turns, alone_restores, alone_method = _restore(server, admin, path, tmp_path, "alone")
    assert alone_restores == KEYS
    assert re.search(r"method: 2 RESTORE pipelines, 0 of them while other clients were active", alone_method)
    assert alone_turns < 120, alone_turns  # handshakes, a probe per step, five EXISTS passes, two RESTORE pipelines: 71
    assert key_state(admin, TENANT).keys() == before.keys()

    # beside a client the test holds until the restore has ended: 20 keys a RESTORE pipeline, 200 an EXISTS one
    emptied()
    with HeldClient(server) as load:
        busy_turns, busy_restores, busy_method = _restore(server, admin, path, tmp_path, "busy")
        assert not load.stop.is_set()
    assert busy_restores == KEYS
    found = re.search(r"method: (\d+) RESTORE pipelines, (\d+) of them while other clients were active", busy_method)
    assert found and int(found[1]) == int(found[2]) >= KEYS // 20, busy_method
    assert busy_turns >= KEYS // 20 + 5 * (KEYS // 200), (busy_turns, busy_method)
    after = key_state(admin, TENANT)
    assert after.keys() == before.keys()
    for key, (kind, value, pttl) in before.items():  # the same values, and the TTLs they had left
        assert after[key][:2] == (kind, value)
        assert (pttl == -1) == (after[key][2] == -1)
