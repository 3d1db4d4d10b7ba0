"""Metrics, stats, configuration, tuning, working-memory and performance procedures, end to end on real servers."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.run.context import Connections, StepContext
from engine.sandbox.redis_server import find_binary, free_port
from engine.sandbox.seed import seed_somabrain
from engine.sandbox.sshd import install_redis_service, inventory_for, write_inventory
from engine.steps import get as get_kind
from engine.targets import RedisEndpoint, Target
from engine.transcript.redact import Redactor
from engine.transcript.verify import verify_transcript
from tests.integration.cli_support import CliResult, events, of_type, runbook, transcript_path

WM = "tenant:acme:wm:active"


# -- helpers -----------------------------------------------------------------------------------------
def run(server: Any, tmp_path: Path, procedure: str, *args: str, env: dict[str, str] | None = None) -> CliResult:
    return runbook(
        "run",
        procedure,
        "--redis",
        f"redis://127.0.0.1:{server.port}/0",
        "--transcripts-dir",
        str(tmp_path / "t"),
        "--json",
        *args,
        env=env,
    )


def run_parallel(server: Any, tmp_path: Path, *calls: tuple[str, ...], env: dict[str, str] | None = None) -> list[Any]:
    """Independent read-only runs side by side (each its own process and transcript): keeps the file fast."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: run(server, tmp_path, *call, env=env), calls))


def steps(result: CliResult) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in result.json()["steps"]}


def finished(result: CliResult, step_id: str) -> list[dict[str, Any]]:
    return [e for e in of_type(events(transcript_path(result)), "step.finished") if e["step"]["id"] == step_id]


def config(server: Any, name: str) -> str:
    return server.client().config_get(name)[name]


class Traffic:
    """A background client issuing commands until stopped (what MONITOR and the metrics should see)."""

    def __init__(self, server: Any, action: Any, pause: float = 0.002):
        self.client = server.client()
        self.action, self.pause = action, pause
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.action(self.client, self.count)
            except redis.RedisError:
                pass
            self.count += 1
            time.sleep(self.pause)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()


@pytest.fixture
def seeded(redis_server):
    server = redis_server()
    seed_somabrain(server.client())
    return server


@pytest.fixture
def bare_redis(redis_server) -> Iterator[Any]:
    """A redis-server started with command-line arguments only: no config file for CONFIG REWRITE."""
    workdir = Path(tempfile.mkdtemp(prefix="runbook-bare-"))
    port = free_port()
    proc = subprocess.Popen(
        [find_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, decode_responses=True)
    try:
        deadline = time.monotonic() + 60  # a safety net for a server that never starts
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)

        class Bare:
            pass

        bare = Bare()
        bare.port = port  # type: ignore[attr-defined]
        bare.client = lambda: redis.Redis(port=port, decode_responses=True)  # type: ignore[attr-defined]
        yield bare
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


# -- redis/key-metrics --------------------------------------------------------------------------------
def test_key_metrics_fresh_server_is_normal_with_hit_rate_na(redis_server, tmp_path):
    server = redis_server()
    result = run(server, tmp_path, "redis/key-metrics", "--var", "interval=1s")
    assert result.code == 0, result.output
    s = steps(result)
    assert s["memory"]["result"]["basis"] == "of total_system_memory (no maxmemory set)"
    assert s["memory"]["result"]["base"] == server.client().info("memory")["total_system_memory"]
    assert s["memory"]["result"]["grade"] == "normal"
    assert s["hit_rate"]["result"]["pct"] is None and s["hit_rate"]["result"]["grade"] == "n/a"
    assert s["hit_rate"]["summary"].startswith("n/a")
    assert 0 <= s["cpu"]["result"]["pct"] < 70 and s["cpu"]["result"]["grade"] == "normal"
    assert 0.9 < s["second_clock"]["result"]["elapsed"] < 60  # the interval really passed (upper bound: a hang)
    assert s["evictions"]["result"] == {"during": 0, "per_min": 0.0, "total": 0, "grade": "normal"}
    assert s["verdict"]["result"]["alerts"] == []
    assert verify_transcript(result.json()["transcript"]).ok


def test_key_metrics_memory_alert_when_filled_to_maxmemory(redis_server, tmp_path):
    server = redis_server(config={"maxmemory": "2mb", "maxmemory-policy": "noeviction"})
    client = server.client()
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for i in range(1000):
            client.set(f"fill:{i}", "x" * 10_000)
    result = run(server, tmp_path, "redis/key-metrics", "--var", "interval=1s")
    assert result.code == 1, result.output
    memory = steps(result)["memory"]["result"]
    assert memory["basis"].startswith("of maxmemory") and memory["base"] == 2 * 1024 * 1024
    assert memory["pct"] > 90 and memory["grade"] == "alert"
    assert "scale up or flush unused keys" in result.stderr


def test_key_metrics_alerts_on_hit_rate_idle_connections_and_cpu(redis_server, tmp_path):
    server = redis_server()
    client = server.client()
    client.set("k", "v")
    for _ in range(3):
        client.get("k")
    client.get("missing")
    idle = [server.client() for _ in range(8)]
    for c in idle:
        c.ping()  # held open and idle, like a leaking connection pool

    def burn(c: redis.Redis, i: int) -> None:  # a CPU-heavy script: Redis itself is busy, not the client
        c.eval("local x = 0 for i = 1, 2000000 do x = x + i end return 1", 0)

    with Traffic(server, burn, pause=0):
        result = run(
            server,
            tmp_path,
            "redis/key-metrics",
            "--var",
            "interval=1s",
            "--var",
            "clients_alert=5",
            "--var",
            "clients_normal=3",
            "--var",
            "cpu_alert_pct=20",
            "--var",
            "cpu_normal_pct=10",
        )
    assert result.code == 1, result.output
    s = steps(result)
    hit = s["hit_rate"]["result"]
    assert hit["hits"] == 3 and hit["misses"] == 1 and hit["pct"] == 75.0 and hit["grade"] == "alert"
    assert "review the cache strategy" in result.stderr
    assert s["clients"]["result"]["count"] >= 10 and s["clients"]["result"]["grade"] == "alert"
    assert "investigate connection leaks" in result.stderr
    cpu = s["cpu"]["result"]
    assert cpu["pct"] > 20 and cpu["grade"] == "alert" and cpu["busy_s"] > 0.2
    assert "check for expensive operations" in result.stderr
    assert s["memory"]["result"]["grade"] == "normal"
    assert s["verdict"]["result"]["alerts"] == ["clients", "cpu", "hit_rate"]
    for c in idle:
        c.close()


def test_key_metrics_evictions_per_minute_alert_from_writes_during_interval(redis_server, tmp_path):
    server = redis_server(config={"maxmemory": "2mb", "maxmemory-policy": "allkeys-lru"})

    def write(client: redis.Redis, i: int) -> None:
        client.set(f"cache:{i}", "x" * 10_000)

    with Traffic(server, write):
        result = run(server, tmp_path, "redis/key-metrics", "--var", "interval=1s")
    assert result.code == 1, result.output
    evictions = steps(result)["evictions"]["result"]
    assert evictions["during"] > 2 and evictions["per_min"] > 100 and evictions["grade"] == "alert"
    assert server.client().info("stats")["evicted_keys"] >= evictions["total"] > 0
    assert "increase memory or tune TTLs" in result.stderr


# -- redis/wm-inspect and redis/wm-extend -------------------------------------------------------------
def test_wm_inspect_shows_fields_cut_memory_and_ttl(seeded, tmp_path):
    client = seeded.client()
    client.hset(WM, "notes", "n" * 500)
    result = run(seeded, tmp_path, "redis/wm-inspect", "--var", "tenant=acme", "--var", "value_chars=20")
    assert result.code == 0, result.output
    s = steps(result)
    key = s["key"]["result"][0]
    assert key["type"] == "hash" and key["memory"] == client.memory_usage(WM) and 3500 < key["ttl"] <= 3600
    wm = s["fields"]["result"]
    assert wm["length"] == client.hlen(WM) == wm["shown"]
    assert wm["fields"]["notes"] == "n" * 20 + "... (500 chars)"
    assert wm["fields"]["goal"] == client.hget(WM, "goal")  # short values unchanged
    # the transcript never holds the whole value
    assert "n" * 21 not in transcript_path(result).read_text()
    assert "TTL 59m" in s["key"]["summary"] or "TTL 1h" in s["key"]["summary"]


def test_wm_inspect_flags_missing_ttl_and_missing_key(seeded, tmp_path):
    seeded.client().persist(WM)
    result = run(seeded, tmp_path, "redis/wm-inspect", "--var", "tenant=acme", "--var", "max_fields=2")
    assert result.code == 1, result.output
    assert "will never expire" in result.stderr and "redis/wm-extend" in result.stderr
    assert steps(result)["fields"]["result"]["shown"] == 2
    missing = run(seeded, tmp_path, "redis/wm-inspect", "--var", "tenant=nobody")
    assert missing.code == 1 and "does not exist" in missing.stderr
    assert steps(missing)["fields"]["outcome"] == "skipped"


def test_wm_extend_refused_dry_run_and_approved(seeded, tmp_path):
    client = seeded.client()
    before = client.ttl(WM)
    assert 3500 < before <= 3600

    refused = run(seeded, tmp_path, "redis/wm-extend", "--var", "tenant=acme", "--var", "ttl=2h")
    assert refused.code == 3, refused.output
    assert client.ttl(WM) <= before
    assert of_type(events(transcript_path(refused)), "approval.refused")

    dry = run(seeded, tmp_path, "redis/wm-extend", "--var", "tenant=acme", "--var", "ttl=2h", "--dry-run")
    assert dry.code == 0, dry.output
    assert client.ttl(WM) <= before
    expire = finished(dry, "expire")[0]
    assert expire["outcome"] == "predicted"
    assert expire["predicted_changes"][0]["kind"] == "ttl_set" and expire["predicted_changes"][0]["ttl_after"] == "7200"
    assert [e["held"] for e in finished(dry, "verify")[0]["expectations"]] == [None]

    started_at = time.monotonic()
    approved = run(seeded, tmp_path, "redis/wm-extend", "--var", "tenant=acme", "--var", "ttl=2h", "--yes")
    assert approved.code == 0, approved.output
    ran_down = math.ceil(time.monotonic() - started_at) + 1  # the most the new TTL can have run down since
    assert 7200 - ran_down <= client.ttl(WM) <= 7200
    change = finished(approved, "expire")[0]["changes"][0]
    assert change["kind"] == "ttl_set" and change["keys"] == [WM] and 3000 < change["ttl_before"][0] <= 3600
    verify = steps(approved)["verify"]
    assert verify["summary"].startswith("TTL 3")
    assert 7200 - ran_down <= int(verify["summary"].split("->")[1].strip().rstrip("s")) <= 7200
    started = next(e for e in of_type(events(transcript_path(approved)), "step.started") if e["step"]["id"] == "expire")
    assert started["command"] == f"EXPIRE {WM} 7200" and started["effect"] == "write"


def test_wm_extend_missing_key_changes_nothing(seeded, tmp_path):
    result = run(seeded, tmp_path, "redis/wm-extend", "--var", "tenant=ghost", "--yes")
    assert result.code == 1, result.output
    assert "there is no session to extend" in result.stderr
    assert not seeded.client().exists("tenant:ghost:wm:active")
    assert not of_type(events(transcript_path(result)), "approval.given")


def test_wm_extend_says_when_it_shortens(seeded, tmp_path):
    started_at = time.monotonic()
    result = run(seeded, tmp_path, "redis/wm-extend", "--var", "tenant=acme", "--var", "ttl=60s", "--yes")
    assert result.code == 0, result.output
    requested = of_type(events(transcript_path(result)), "approval.requested")[0]
    assert "SHORTENS" in requested["confirm"]
    assert 60 - math.ceil(time.monotonic() - started_at) - 1 <= seeded.client().ttl(WM) <= 60


# -- redis/cache-stats and the MONITOR sample ---------------------------------------------------------
def test_cache_stats_without_monitor_reports_stats_keyspace_and_top_commands(seeded, tmp_path):
    client = seeded.client()
    for i in range(30):
        client.get(f"tenant:acme:cache:{i}")
    result = run(seeded, tmp_path, "redis/cache-stats", "--var", "top=5")
    assert result.code == 0, result.output
    s = steps(result)
    live = client.info("stats")
    assert s["stats"]["result"]["keyspace_hits"] <= live["keyspace_hits"]
    assert s["stats"]["result"]["keyspace_hits"] + s["stats"]["result"]["keyspace_misses"] >= 30
    assert s["keyspace"]["result"]["db0"]["keys"] == client.dbsize()
    top = s["commandstats"]["result"]
    assert len(top["by_time"]) == 5 and "GET" in [c["command"] for c in top["by_calls"]]
    assert next(c for c in top["by_calls"] if c["command"] == "GET")["calls"] >= 30
    assert s["monitor_sample"]["outcome"] == "skipped"  # off by default: MONITOR costs performance


def test_cache_stats_monitor_sample_sees_background_commands_and_masks_auth(redis_server, tmp_path):
    password = "monitor-secret-pw"
    server = redis_server(password=password)

    def traffic(client: redis.Redis, i: int) -> None:
        client.set(f"tenant:acme:cache:{i % 10}", "v")
        client.get("session:1")
        client.execute_command("AUTH", password)

    with Traffic(server, traffic, pause=0.01) as bg:
        result = run(
            server,
            tmp_path,
            "redis/cache-stats",
            "--var",
            "monitor=true",
            "--var",
            "monitor_seconds=1s",
            env={"REDISCLI_AUTH": password},
        )
    assert result.code == 0, result.output
    sample = steps(result)["monitor_sample"]["result"]
    assert sample["stopped_by"] == "seconds" and 0.9 < sample["seconds"] < 60  # upper bound: only a hang
    assert 0 < sample["commands"] <= 3 * bg.count
    assert sample["by_command"]["SET"] > 5 and sample["by_command"]["GET"] > 5
    assert sample["by_prefix"]["tenant:acme"] == sample["by_command"]["SET"]
    assert sample["by_prefix"]["session"] == sample["by_command"]["GET"]
    assert len(sample["by_client"]) == 1 and len(sample["sample"]) == 20
    for text in (result.output, transcript_path(result).read_text()):
        assert password not in text
    assert "Use sparingly" in result.output


def test_monitor_sample_respects_max_commands(seeded, tmp_path):
    with Traffic(seeded, lambda c, i: c.set(f"tenant:globex:x{i}", i), pause=0) as bg:
        result = run(
            seeded,
            tmp_path,
            "redis/cache-stats",
            "--var",
            "monitor=true",
            "--var",
            "monitor_seconds=20s",
            "--var",
            "monitor_commands=25",
        )
    assert result.code == 0, result.output
    assert bg.count > 25
    sample = steps(result)["monitor_sample"]["result"]
    assert sample["commands"] == 25 and sample["stopped_by"] == "max_commands"
    assert sample["seconds"] < 20  # did not wait for the 20 s bound
    assert sample["by_prefix"] == {"tenant:globex": 25}


def test_monitor_kind_closes_its_connection(seeded):
    """In-process: after the sample, no connection of ours is still in MONITOR mode (flag O)."""
    target = Target(name="t", redis=RedisEndpoint(host="127.0.0.1", port=seeded.port))
    connections = Connections(target, allow_mutation=False)
    ctx = StepContext(
        connections=connections,
        operator=None,  # type: ignore[arg-type]
        redactor=Redactor(),
        procedure=None,  # type: ignore[arg-type]
        step=None,  # type: ignore[arg-type]
        dry_run=True,
        values={},
        call_procedure=lambda pid, params: None,
    )
    try:
        action = get_kind("monitor").plan({"seconds": 1, "max_commands": 100}, ctx)
        assert str(action.effect) == "read"
        seen: list[str] = []
        done = threading.Event()

        def watch() -> None:  # polls (CLIENT LIST is not fed to MONITOR) until it sees the sample running
            with seeded.client() as client:
                while not done.is_set() and not any("O" in flags for flags in seen):
                    seen[:] = [c["flags"] for c in client.client_list()]
                    time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            result = action.execute()
        finally:
            done.set()
            watcher.join()
        assert any("O" in flags for flags in seen)  # it was monitoring during the sample (dry-run allows MONITOR)
        assert result["stopped_by"] == "seconds"
        flags_after = [c["flags"] for c in seeded.client().client_list()]
        assert not any("O" in flags for flags in flags_after)
        assert connections.redis().call(["PING"]) in (True, "PONG")  # the adapter itself still works
    finally:
        connections.close()
    with pytest.raises(Exception, match="seconds"):
        get_kind("monitor").plan({"seconds": "10m", "max_commands": 10}, ctx)


# -- redis/config-show --------------------------------------------------------------------------------
def test_config_show_pattern_and_masked_password(redis_server, tmp_path):
    server = redis_server(password="cfg-secret-pw")
    result, secret, bad = run_parallel(
        server,
        tmp_path,
        ("redis/config-show", "--var", "pattern=maxmemory*"),
        ("redis/config-show", "--var", "pattern=requirepass"),
        ("redis/config-show", "--var", "pattern=a b"),
        env={"REDISCLI_AUTH": "cfg-secret-pw"},
    )
    assert result.code == 0, result.output
    got = steps(result)["config"]["result"]
    assert got["maxmemory-policy"] == "noeviction" and set(got) == set(server.client().config_get("maxmemory*"))
    assert steps(secret)["config"]["result"]["requirepass"].startswith("[SECRET")
    assert "cfg-secret-pw" not in secret.output + transcript_path(secret).read_text()
    assert bad.code == 2


def test_config_show_baseline_yaml_json_and_redis_conf(redis_server, tmp_path):
    server = redis_server(config={"maxmemory": "1gb", "save": "900 1 300 10"})
    same_yaml = tmp_path / "same.yaml"
    same_yaml.write_text("maxmemory: 1gb\nsave: '900 1 300 10'\nmaxmemory-policy: NoEviction\n")
    drift_json = tmp_path / "base.json"
    drift_json.write_text(json.dumps({"maxmemory": "2gb", "appendonly": "no", "timeout": 0}))
    conf = tmp_path / "redis.conf"
    conf.write_text(
        "# production\nmaxmemory 1gb\nsave 900 1\nsave 300 100\n"
        "include /etc/redis/extra.conf\nhash-max-ziplist-entries 512\n"
    )
    ok, drifted, from_conf = run_parallel(
        server,
        tmp_path,
        ("redis/config-show", "--var", "pattern=maxmemory", "--var", f"baseline={same_yaml}"),
        ("redis/config-show", "--var", f"baseline={drift_json}"),
        ("redis/config-show", "--var", f"baseline={conf}"),
    )
    assert ok.code == 0, ok.output
    assert steps(ok)["drift"]["result"]["differ"] == []
    assert steps(ok)["baseline_json"]["outcome"] == "skipped"

    assert drifted.code == 1, drifted.output
    rows = steps(drifted)["drift"]["result"]["differ"]
    assert [(r["param"], r["current"], r["desired"]) for r in rows] == [("maxmemory", "1073741824", "2gb")]
    assert "1 setting(s) differ" in drifted.stderr

    assert from_conf.code == 1, from_conf.output
    result = steps(from_conf)["drift"]["result"]
    assert [r["param"] for r in result["differ"]] == ["save"]  # 900 1 300 100 vs live 900 1 300 10
    assert result["unknown"] == ["include"]
    assert "hash-max-listpack-entries" in result["same"] and "maxmemory" in result["same"]


# -- redis/config-set ---------------------------------------------------------------------------------
def test_config_set_refused_dry_run_and_approved(redis_server, tmp_path):
    server = redis_server()
    args = ("--var", "parameter=maxmemory-policy", "--var", "value=allkeys-lru")

    refused = run(server, tmp_path, "redis/config-set", *args)
    assert refused.code == 3, refused.output
    assert config(server, "maxmemory-policy") == "noeviction"

    dry = run(server, tmp_path, "redis/config-set", *args, "--dry-run")
    assert dry.code == 0, dry.output
    assert config(server, "maxmemory-policy") == "noeviction"
    step = finished(dry, "set")[0]
    assert step["outcome"] == "predicted"
    assert step["predicted_changes"] == [
        {"kind": "config", "name": "maxmemory-policy", "before": "noeviction", "after": "allkeys-lru"}
    ]

    approved = run(server, tmp_path, "redis/config-set", *args, "--yes")
    assert approved.code == 0, approved.output
    assert config(server, "maxmemory-policy") == "allkeys-lru"
    assert finished(approved, "set")[0]["changes"] == step["predicted_changes"]
    assert steps(approved)["current"]["summary"] == "maxmemory-policy: noeviction -> allkeys-lru"
    assert steps(approved)["verify"]["result"]["rows"][0]["same"] is True

    again = run(server, tmp_path, "redis/config-set", *args, "--yes")
    assert again.code == 0 and steps(again)["set"]["outcome"] == "skipped"  # already set: nothing sent
    assert not of_type(events(transcript_path(again)), "approval.requested")


def test_config_set_rewrite_saves_the_config_file(redis_server, tmp_path):
    server = redis_server()
    assert "maxmemory " not in server.config_path.read_text()
    result = run(
        server,
        tmp_path,
        "redis/config-set",
        "--var",
        "parameter=maxmemory",
        "--var",
        "value=64mb",
        "--var",
        "rewrite=true",
        "--yes",
    )
    assert result.code == 0, result.output
    assert config(server, "maxmemory") == str(64 * 1024 * 1024)
    assert "maxmemory 64mb" in server.config_path.read_text()
    assert finished(result, "rewrite")[0]["outcome"] == "ok"


def test_config_set_rewrite_without_config_file_says_so(bare_redis, tmp_path):
    result = run(
        bare_redis,
        tmp_path,
        "redis/config-set",
        "--var",
        "parameter=timeout",
        "--var",
        "value=120",
        "--var",
        "rewrite=true",
        "--yes",
    )
    assert result.code == 1, result.output
    assert "started without a config file" in result.stderr and "lost at the next restart" in result.stderr
    assert bare_redis.client().config_get("timeout")["timeout"] == "120"  # the live change happened
    assert steps(result)["rewrite"]["outcome"] == "skipped"


def test_config_set_refuses_credentials_unknown_and_unsafe_names(redis_server, tmp_path):
    server = redis_server()
    cred, unknown, unsafe = run_parallel(
        server,
        tmp_path,
        ("redis/config-set", "--var", "parameter=requirepass", "--var", "value=x", "--yes"),
        ("redis/config-set", "--var", "parameter=no-such-thing", "--var", "value=1", "--yes"),
        ("redis/config-set", "--var", "parameter=maxmemory *", "--var", "value=1", "--yes"),
    )
    assert cred.code == 1 and "redis/emergency-security-breach" in cred.stderr
    assert config(server, "requirepass") == ""
    assert not of_type(events(transcript_path(cred)), "approval.requested")
    assert unknown.code == 1 and "has no configuration parameter" in unknown.stderr
    assert unsafe.code == 2 and "does not match" in unsafe.stderr


# -- redis/tune-* -------------------------------------------------------------------------------------
def test_tune_memory_refused_dry_run_and_approved(redis_server, tmp_path):
    server = redis_server()
    before = server.client().config_get("*")
    args = ("--var", "hash_max_entries=256")

    refused = run(server, tmp_path, "redis/tune-memory", *args)
    assert refused.code == 3, refused.output
    assert server.client().config_get("*") == before

    dry = run(server, tmp_path, "redis/tune-memory", *args, "--dry-run")
    assert dry.code == 0, dry.output
    assert server.client().config_get("*") == before
    rows = {r["param"]: r for r in steps(dry)["current"]["result"]["rows"]}
    assert "alias of hash-max-listpack-entries" in rows["hash-max-listpack-entries"]["note"]
    assert rows["hash-max-listpack-value"]["same"] is True  # 64 already: left alone
    predicted = [e for e in finished(dry, "apply") if e["outcome"] == "predicted"]
    assert sorted(e["predicted_changes"][0]["name"] for e in predicted) == [
        "hash-max-listpack-entries",
        "list-compress-depth",
        "maxmemory-policy",
    ]

    approved = run(server, tmp_path, "redis/tune-memory", *args, "--yes")
    assert approved.code == 0, approved.output
    after = server.client().config_get("*")
    assert after["hash-max-listpack-entries"] == after["hash-max-ziplist-entries"] == "256"
    assert after["list-compress-depth"] == "1" and after["maxmemory-policy"] == "volatile-lru"
    assert after["hash-max-listpack-value"] == "64"
    changed = {e["changes"][0]["name"]: e["changes"][0] for e in finished(approved, "apply")}
    assert changed["list-compress-depth"] == {
        "kind": "config",
        "name": "list-compress-depth",
        "before": "0",
        "after": "1",
    }
    assert len(of_type(events(transcript_path(approved)), "approval.given")) == 3


def test_tune_connections_dry_run_and_approved(redis_server, tmp_path):
    server = redis_server()
    before = config(server, "client-output-buffer-limit")
    dry = run(server, tmp_path, "redis/tune-connections", "--dry-run")
    assert dry.code == 0, dry.output
    assert config(server, "timeout") == "0" and config(server, "client-output-buffer-limit") == before
    assert len([e for e in finished(dry, "apply") if e["outcome"] == "predicted"]) == 3

    approved = run(server, tmp_path, "redis/tune-connections", "--yes")
    assert approved.code == 0, approved.output
    assert config(server, "timeout") == "300" and config(server, "tcp-keepalive") == "60"
    limits = config(server, "client-output-buffer-limit")
    assert limits.startswith("normal 33554432 8388608 60 ")
    assert limits.split(" ", 4)[4] == before.split(" ", 4)[4]  # replica and pubsub classes untouched
    confirm = " ".join(e["confirm"] for e in of_type(events(transcript_path(approved)), "approval.requested"))
    assert "closed by the server" in confirm

    again = run(server, tmp_path, "redis/tune-connections", "--yes")
    assert again.code == 0 and not [e for e in finished(again, "apply") if e["outcome"] == "ok"]


def test_tune_persistence_rdb_approved_and_cache_dry_run_then_approved(redis_server, tmp_path):
    server = redis_server(config={"save": "3600 1"}, appendonly=True)

    rdb = run(server, tmp_path, "redis/tune-persistence", "--yes")
    assert rdb.code == 0, rdb.output
    assert config(server, "save") == "900 1 300 10 60 10000" and config(server, "appendonly") == "yes"
    assert finished(rdb, "apply")[0]["effect"] == "destructive"  # CONFIG SET save: durability

    dry = run(server, tmp_path, "redis/tune-persistence", "--var", "mode=cache", "--dry-run")
    assert dry.code == 0, dry.output
    assert config(server, "save") == "900 1 300 10 60 10000" and config(server, "appendonly") == "yes"
    predicted = finished(dry, "apply")
    assert [e["outcome"] for e in predicted] == ["predicted", "predicted"]
    assert {e["predicted_changes"][0]["name"] for e in predicted} == {"save", "appendonly"}
    assert "nothing on this server survives a restart" in steps(dry)["cache_warning"]["result"]

    cache = run(server, tmp_path, "redis/tune-persistence", "--var", "mode=cache", "--yes")
    assert cache.code == 0, cache.output
    assert config(server, "save") == "" and config(server, "appendonly") == "no"
    requested = of_type(events(transcript_path(cache)), "approval.requested")
    assert [r["effect"] for r in requested] == ["destructive", "destructive"]
    assert "RDB snapshots stop" in requested[0]["confirm"] or "RDB snapshots stop" in requested[1]["confirm"]
    assert any("survives a restart" in r["confirm"] for r in requested)


# -- redis/troubleshoot-performance -------------------------------------------------------------------
def test_troubleshoot_performance_slowlog_blocked_clients_and_monitor(seeded, tmp_path):
    client = seeded.client()
    client.execute_command("DEBUG", "SLEEP", "0.05")  # a 50 ms command: above the default 10 ms threshold
    blocker = seeded.client()
    blocked = threading.Thread(target=lambda: blocker.blpop(["queue:jobs"], timeout=0), daemon=True)
    blocked.start()  # blocked until the test pushes: held for the whole run, however long it takes
    try:
        deadline = time.monotonic() + 60  # a safety net: the thread blocks as soon as it runs
        while not any(c["cmd"] == "blpop" for c in client.client_list()):
            assert time.monotonic() < deadline, "the blocker never blocked"
            time.sleep(0.02)
        with Traffic(seeded, lambda c, i: c.get(f"tenant:initech:cache:{i % 20}"), pause=0.005):
            result = run(seeded, tmp_path, "redis/troubleshoot-performance", "--var", "monitor_seconds=1s")
    finally:
        client.lpush("queue:jobs", "wake")
        blocked.join(5)
    assert result.code == 1, result.output
    s = steps(result)
    slow = s["slowlog"]["result"]
    debug = next(e for e in slow["entries"] if e["command"] == "DEBUG")
    assert debug["duration_ms"] >= 50 and debug["args"] == '"SLEEP" "0.05"' and debug["client"].startswith("127.0.0.1:")
    assert slow["threshold_us"] == 10000
    assert "Identify expensive operations" in result.stderr
    assert s["commandstats"]["result"]["by_time"][0]["usec"] >= s["commandstats"]["result"]["by_time"][-1]["usec"]
    assert s["blocked"]["result"]["matched"] == 1 and s["blocked"]["result"]["by_cmd"] == {"blpop": 1}
    assert "avoid blocking operations" in result.stderr
    sample = s["monitor_sample"]["result"]
    assert (
        sample["by_command"].get("GET", 0) > 10 and sample["by_prefix"]["tenant:initech"] == sample["by_command"]["GET"]
    )
    assert s["cpu"]["result"]["pct"] >= 0 and s["cpu"]["result"]["elapsed"] >= 1
    assert s["swap"]["outcome"] == "skipped" and s["swap_figures"]["outcome"] == "skipped"  # no SSH host


def test_troubleshoot_performance_swap_over_ssh(redis_server, sshd_host, tmp_path):
    server = redis_server()
    host = sshd_host()
    service = install_redis_service(host, server)
    inventory = write_inventory(tmp_path / "inventory.yaml", inventory_for(server, host, service))
    result = runbook(
        "run",
        "redis/troubleshoot-performance",
        "--inventory",
        str(inventory),
        "--target",
        "sandbox",
        "--var",
        "monitor=false",
        "--var",
        "monitor_seconds=0.2s",
        "--transcripts-dir",
        str(tmp_path / "t"),
        "--json",
    )
    assert result.code in (0, 1), result.output
    s = steps(result)
    meminfo = Path("/proc/meminfo").read_text()
    swap_total = int(next(line for line in meminfo.splitlines() if line.startswith("SwapTotal:")).split()[1]) * 1024
    assert s["swap_figures"]["result"]["total"] == swap_total
    pid = server.client().info("server")["process_id"]
    vm = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmSwap:"))
    assert s["swap_figures"]["result"]["redis_swap"] == int(vm.split()[1]) * 1024
    assert s["monitor_sample"]["outcome"] == "skipped" and s["window"]["outcome"] == "ok"
    swap_started = next(
        e for e in of_type(events(transcript_path(result)), "step.started") if e["step"]["id"] == "swap"
    )
    assert swap_started["effect"] == "read" and f"/proc/{pid}/status" in swap_started["command"]
