"""`runbook diagnose` against every rehearsal scenario's injected fault, and against a healthy sandbox.

The worlds and faults are the rehearsal's own (engine.rehearsal): the same broken Redis the procedure
is rehearsed on must make `diagnose` rank that procedure first.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import pytest

from engine.rehearsal import faults, pool, rehearse
from engine.rehearsal.scenario import Scenario, load_all
from engine.rehearsal.world import World, WorldSpec
from engine.sandbox.redis_server import SandboxUnavailable, find_binary
from engine.spec.loader import Catalog
from engine.spec.params import parse_size
from engine.targets import load_inventory, target_from_inventory
from engine.triage.diagnose import diagnose, symptom_procedures
from tests.conftest import require_binary
from tests.integration.cli_support import events, runbook

# Scenarios whose fault a read of Redis cannot tell apart from another procedure's symptom. Each names
# what diagnose must rank first instead (None: nothing at all), and why.
EXPECTED_INSTEAD = {
    # Redis cannot start on the truncated AOF: from outside it is down, and service-down's steps read the
    # log that names the corrupt file and point to troubleshoot-corruption.
    ("redis/troubleshoot-corruption", "aof-truncated-mid-record"): "redis/emergency-service-down",
    # Likewise a corrupt RDB that Redis refuses to load: it is down, and service-down leads to the cause.
    ("redis/troubleshoot-corruption", "rdb-corrupt-no-backup"): "redis/emergency-service-down",
    # The same two worlds, Redis down on a damaged AOF or RDB, where the fix fails or a backup is given.
    ("redis/troubleshoot-corruption", "aof-fix-claims-success-and-changes-nothing"): "redis/emergency-service-down",
    ("redis/troubleshoot-corruption", "aof-fix-fails"): "redis/emergency-service-down",
    ("redis/troubleshoot-corruption", "rdb-corrupt-restored-from-backup"): "redis/emergency-service-down",
    # Redis down on a fixed AOF it cannot start (a bad line in redis.conf, a start that says done): down.
    ("redis/troubleshoot-corruption", "aof-fixed-but-the-service-will-not-start"): "redis/emergency-service-down",
    ("redis/troubleshoot-corruption", "start-says-done-redis-stays-down"): "redis/emergency-service-down",
    # The AOF damaged on disk under a running server: it serves from memory and reports its AOF writes ok;
    # only reading the file (redis-check-aof, over SSH) shows it.
    ("redis/troubleshoot-corruption", "aof-damaged-under-a-running-server"): None,
    # The redis-server process died: from outside Redis is down, and service-down (status, logs, restart)
    # is the procedure for it; troubleshoot-connection is for a Redis that runs but refuses clients.
    ("redis/troubleshoot-connection", "redis-process-died"): "redis/emergency-service-down",
    # The service was killed and its config broken: from outside Redis is down (the restart that fails is
    # what troubleshoot-connection's scenario rehearses; service-down restarts too and reads the log).
    ("redis/troubleshoot-connection", "restart-fails"): "redis/emergency-service-down",
    # The primary died and Sentinel promoted a replica: the address the target names refuses, so from
    # outside Redis is down; service-down asks Sentinel first and says the promotion happened (as
    # troubleshoot-connection does), restarting nothing.
    ("redis/troubleshoot-connection", "primary-died-sentinel-promoted"): "redis/emergency-service-down",
    # Not an incident Redis shows: the operator decides an old tenant's keys should go (old_tenant).
    ("redis/troubleshoot-memory", "clear-an-old-tenant"): None,
    ("redis/troubleshoot-memory", "old-tenant-bigger-than-the-limit"): None,
    # (password-leaked is diagnosed: the credential stuffing before the intruder got in fills ACL LOG.)
    ("redis/emergency-security-breach", "acl-file-without-config-file"): None,
    ("redis/emergency-security-breach", "run-as-another-acl-user"): None,
    # No password at all: the intruder is one more client, as anyone who can reach the port is.
    ("redis/emergency-security-breach", "no-password-file"): None,
}


def _with_symptoms() -> set[str]:
    procedures, _ = symptom_procedures(Catalog())
    return {p.id for p in procedures}


def _scenarios() -> list[Scenario]:
    declared = _with_symptoms()
    return [s for s in load_all() if s.procedure in declared]


def test_every_emergency_and_troubleshooting_procedure_declares_symptoms_and_has_a_scenario() -> None:
    shipped = {
        e.id for e in Catalog().entries().values() if e.id.split("/")[-1].startswith(("emergency-", "troubleshoot-"))
    }
    assert shipped and shipped <= _with_symptoms()
    assert shipped <= {s.procedure for s in _scenarios()}


# Worlds diagnosed at once: each mostly waits on its servers, so 4 fit on 2 cores (each in its own process).
JOBS = 4


def _diagnose_in_its_world(scenario: Scenario, transcripts_dir: Path) -> dict[str, Any]:
    """In a pool process: the scenario's world with its fault injected, diagnosed, torn down; what diagnose said."""
    try:
        world = World.start(_spec(scenario))
        try:
            rehearse._seed(world, scenario.seed)
            for action in scenario.fault:
                faults.apply(world, action)
            target = target_from_inventory(load_inventory(world.inventory_path), "rehearsal")
            result = diagnose(
                target,
                target_args=["--inventory", str(world.inventory_path), "--target", "rehearsal"],
                transcripts_dir=transcripts_dir,
                incident="INC-1",
            )
        finally:
            world.stop()
        return {
            "ranked": [m.procedure for m in result.matches],
            "json": result.as_json(),
            "exit_code": result.exit_code,
            "transcript": result.transcript,
        }
    except Exception:  # reported by the scenario's own test, not by the whole module
        return {"error": traceback.format_exc()}


def _spec(scenario: Scenario) -> WorldSpec:
    return WorldSpec(**{k: v for k, v in scenario.world.items() if k in WorldSpec.__dataclass_fields__})


def _has(binary: str) -> bool:
    try:
        find_binary(binary)
    except SandboxUnavailable:
        return False
    return True


SCENARIOS = _scenarios()


@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict[str, Any]]:
    """Every scenario's world built and diagnosed once, JOBS at a time; each test checks one of them."""
    require_binary("redis-server")
    root = tmp_path_factory.mktemp("diagnose")
    runnable = [s for s in SCENARIOS if not _spec(s).ssh or _has("sshd")]  # the others skip (or fail under CI)
    calls = [pool.Call(_diagnose_in_its_world, (s, root / str(n))) for n, s in enumerate(runnable)]
    return {
        (s.procedure, s.name): r for s, r in zip(runnable, pool.run(calls, JOBS, start_method="spawn"), strict=True)
    }


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: f"{s.procedure.split('/')[-1]}/{s.name}")
def test_diagnose_ranks_the_scenarios_procedure_first(scenario: Scenario, diagnosed: dict) -> None:
    if _spec(scenario).ssh:
        require_binary("sshd")
    result = diagnosed[(scenario.procedure, scenario.name)]
    assert "error" not in result, result["error"]
    expected = EXPECTED_INSTEAD.get((scenario.procedure, scenario.name), scenario.procedure)
    ranked = result["ranked"]
    if expected is None:
        assert ranked == [], result["json"]
        assert result["exit_code"] == 0
        return
    assert ranked and ranked[0] == expected, json.dumps(result["json"], indent=1, default=str)
    assert result["exit_code"] == 1
    first = result["json"]["ranked"][0]
    assert first["evidence"] and first["command"].startswith(f"runbook run {expected} --inventory ")
    assert first["command"].endswith("--incident INC-1")
    if expected == "redis/emergency-oom":  # the derived param: twice what was in use, at least twice the limit
        assert parse_size(first["params"]["maxmemory"]) >= 2 * parse_size("8mb")
        assert f"--var maxmemory={first['params']['maxmemory']}" in first["command"]
    evts = events(result["transcript"])
    assert evts[0]["type"] == "run.started" and evts[0]["procedure"]["id"] == "runbook/diagnose"
    assert evts[0]["incident"] == "INC-1"
    assert evts[-1]["type"] == "run.ended" and evts[-1]["summary"]["ranked"][0]["procedure"] == expected


def test_diagnose_on_a_healthy_sandbox_finds_nothing_and_exits_0(tmp_path: Path) -> None:
    require_binary("redis-server")
    result = runbook("diagnose", "--sandbox", "--json", "--transcripts-dir", str(tmp_path))
    assert result.code == 0, result.output
    data = json.loads(result.stdout)
    assert data["reachable"] is True and data["ranked"] == []
    verified = runbook("transcript", "verify", data["transcript"])
    assert verified.code == 0, verified.output


def test_diagnose_cannot_write_and_reads_once(redis_server, tmp_path: Path) -> None:
    """One round of reads, each recorded as a read step; the adapter under it refuses any write."""
    server = redis_server(config={"maxmemory": "8mb", "maxmemory-policy": "noeviction"})
    with server.client() as client:
        client.set("k", "v")
        before = client.config_get("*"), client.dbsize()
    result = runbook(
        "diagnose", "--redis", f"redis://{server.host}:{server.port}", "--json", "--transcripts-dir", str(tmp_path)
    )
    assert result.code == 0, result.output
    evts = events(json.loads(result.stdout)["transcript"])
    commands = [e["command"] for e in evts if e["type"] == "step.started"]
    assert commands == [
        "PING",
        "INFO all",
        "CONFIG GET *",
        "CLIENT LIST",
        "SLOWLOG GET 128",
        "LATENCY LATEST",
        "ACL LOG 128",
    ]
    assert {e["effect"] for e in evts if e["type"] == "step.started"} == {"read"}
    with server.client() as client:
        assert (client.config_get("*"), client.dbsize()) == before


def test_diagnose_refuses_a_write_at_the_adapter(redis_server) -> None:
    from engine.adapters.redis import RedisAdapter
    from engine.errors import MutationRefused
    from engine.targets import RedisEndpoint

    server = redis_server()
    adapter = RedisAdapter(RedisEndpoint(host=server.host, port=server.port), allow_mutation=False)
    try:
        with pytest.raises(MutationRefused):
            adapter.call(["SET", "k", "v"])
    finally:
        adapter.close()


def test_failed_authentications_rank_the_security_breach_procedure(redis_server, tmp_path: Path) -> None:
    """Wrong passwords tried against a Redis with requirepass: the ACL log shows them to diagnose."""
    import redis

    server = redis_server(password="the-real-password-0123")
    for attempt in range(3):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=server.host, port=server.port, password=f"guess-{attempt}").ping()
    result = runbook(
        "diagnose", "--redis", f"redis://{server.host}:{server.port}", "--json", "--transcripts-dir", str(tmp_path),
        env={"REDISCLI_AUTH": "the-real-password-0123"},
    )  # fmt: skip
    assert result.code == 1, result.output
    first = json.loads(result.stdout)["ranked"][0]
    assert first["procedure"] == "redis/emergency-security-breach"
    assert "3 failed AUTH attempts" in first["evidence"][0]["evidence"]
    transcript = Path(json.loads(result.stdout)["transcript"]).read_text()
    assert "the-real-password-0123" not in transcript


def test_ctrl_c_during_the_reads_exits_130_and_closes_the_transcript(tmp_path: Path) -> None:
    """A Redis that accepts and never answers holds diagnose in its first read until the test interrupts it."""
    import signal
    import socket
    import subprocess
    import sys

    from engine.sandbox import write_inventory

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    targets = {"mute": {"redis": {"url": url, "timeout": "300s"}}}
    inventory = write_inventory(tmp_path / "inv.yaml", {"environments": {"t": {"targets": targets}}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "diagnose", "--inventory", str(inventory), "--target", "mute",
         "--transcripts-dir", str(tmp_path / "tr")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # SIGINT's default action in the child, as on a terminal: a suite started in the background by a shell
        # without job control ignores SIGINT, and its children would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        listener.settimeout(60)
        conn, _ = listener.accept()
        conn.settimeout(60)
        assert conn.recv(1024)  # the first command arrived: diagnose now waits for an answer that never comes
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        conn.close()
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "interrupted" in err
    [transcript] = list((tmp_path / "tr").rglob("*.jsonl"))
    last = events(transcript)[-1]
    assert last["type"] == "run.ended" and last["outcome"] == "interrupted" and last["exit_code"] == 130
