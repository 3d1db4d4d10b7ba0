"""Alert to procedure with real processes: redis-server -> prometheus-redis-exporter -> Prometheus (the
generated rules) -> Alertmanager -> `runbook serve` -> diagnose + a dry-run of redis/emergency-oom.

Every process runs on free loopback ports with its own temp storage; the test waits on conditions it
polls (the triage report appearing), with a deadline only as a safety net.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from engine.sandbox import inventory_for, write_inventory
from engine.sandbox.redis_server import free_port, port_is_open
from engine.spec.params import parse_size
from tests.conftest import require_binary
from tests.integration.cli_support import events, runbook
from tests.integration.triage_support import TOKEN, post, serve

DEADLINE_S = 300  # a safety net only: each wait ends as soon as its condition shows


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in reversed(started):
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start(processes: list, argv: list[str], log: Path, port: int) -> None:
    handle = log.open("wb")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT)
    processes.append(proc)
    deadline = time.monotonic() + DEADLINE_S
    while not port_is_open("127.0.0.1", port):
        assert proc.poll() is None, f"{argv[0]} exited {proc.returncode}: {log.read_text(errors='replace')[-2000:]}"
        assert time.monotonic() < deadline, f"{argv[0]} not listening on {port}"
        time.sleep(0.05)


def _fill_until_oom(client: redis.Redis) -> int:
    value = "x" * 2048
    for n in range(1_000_000):
        try:
            client.set(f"tenant:acme:cache:{n}", value)
        except redis.exceptions.OutOfMemoryError:
            return n
    raise AssertionError("never reached OOM")


def _snapshot(client: redis.Redis) -> tuple:
    keys = sorted(client.scan_iter(count=1000))
    return client.config_get("*"), keys, [client.get(k) for k in keys[:50]]


def test_an_oom_alert_is_triaged_to_emergency_oom_in_dry_run(redis_server, tmp_path: Path, processes: list) -> None:
    exporter = require_binary("prometheus-redis-exporter")
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager")
    server = redis_server(config={"maxmemory": "8mb", "maxmemory-policy": "noeviction"})
    address = f"{server.host}:{server.port}"
    inventory = write_inventory(
        tmp_path / "inventory.yaml", inventory_for(server, None, None, name="cache", environment="prod")
    )

    rules = tmp_path / "rules.yml"
    generated = runbook("alerts", "--format", "prometheus", "-o", str(rules))
    assert generated.code == 0, generated.output

    with serve(tmp_path, inventory) as (serve_host, serve_port, serve_proc):
        exporter_port, prom_port, am_port = free_port(), free_port(), free_port()
        _start(
            processes,
            [exporter, f"-redis.addr=redis://{address}", f"-web.listen-address=127.0.0.1:{exporter_port}"],
            tmp_path / "exporter.log",
            exporter_port,
        )
        am_config = {
            "route": {
                "receiver": "runbook",
                "group_by": ["alertname", "redis"],
                "group_wait": "1s",
                "group_interval": "2s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "runbook",
                    "webhook_configs": [
                        {
                            "url": f"http://{serve_host}:{serve_port}/alertmanager",
                            "send_resolved": False,
                            "http_config": {"authorization": {"credentials_file": str(tmp_path / "serve.token")}},
                        }
                    ],
                }
            ],
        }
        (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
        _start(
            processes,
            [
                alertmanager,
                f"--config.file={tmp_path / 'alertmanager.yml'}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            tmp_path / "alertmanager.log",
            am_port,
        )
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [
                {
                    "job_name": "redis",
                    "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"], "labels": {"redis": address}}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
        _start(
            processes,
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            tmp_path / "prometheus.log",
            prom_port,
        )

        with server.client() as client:
            written = _fill_until_oom(client)
            before = _snapshot(client)
        assert written > 0

        incidents = tmp_path / "transcripts" / "incidents"
        deadline = time.monotonic() + DEADLINE_S
        reports: list[Path] = []
        while not reports:
            assert serve_proc.poll() is None, "runbook serve exited"
            assert time.monotonic() < deadline, "no triage within the deadline: " + "\n".join(
                (tmp_path / n).read_text(errors="replace")[-1500:] for n in ("alertmanager.log", "prometheus.log")
            )
            reports = sorted(incidents.glob("*/triage.json")) if incidents.is_dir() else []
            time.sleep(0.2)

        report = json.loads(reports[0].read_text())
        incident = report["incident"]
        assert "RunbookEmergencyOomWritesRefusedAtLimit" in report["alerts"]
        assert report["target"] == "prod/cache"
        first = report["diagnosis"]["ranked"][0]
        assert first["procedure"] == "redis/emergency-oom", report["diagnosis"]
        assert parse_size(first["params"]["maxmemory"]) >= 2 * parse_size("8mb")
        assert first["command"].startswith("runbook run redis/emergency-oom --inventory ")
        assert f"--var maxmemory={first['params']['maxmemory']}" in first["command"]

        dry = report["dry_run"]
        assert dry["procedure"] == "redis/emergency-oom" and dry["transcript"], dry
        header = events(dry["transcript"])[0]
        assert header["mode"] == "dry-run" and header["incident"] == incident
        assert header["params"]["maxmemory"] == parse_size(first["params"]["maxmemory"])
        diagnose_header = events(report["diagnosis"]["transcript"])[0]
        assert diagnose_header["incident"] == incident and diagnose_header["procedure"]["id"] == "runbook/diagnose"

        # the repeated notification of the same group starts nothing new
        again = json.dumps(
            {"groupKey": report["group_key"], "status": "firing", "alerts": [{"status": "firing", "labels": {}}]}
        ).encode()
        assert post(serve_host, serve_port, again, token=TOKEN)[1]["status"] == "duplicate"

    with server.client() as client:
        assert _snapshot(client) == before  # nothing on the server changed
    runs = [p for p in (tmp_path / "transcripts").rglob("*.jsonl") if "incidents" not in p.parts]
    assert len(runs) == 2  # one diagnosis, one dry-run

    # the detected milestone is the alert's startsAt, and the post-mortem measures from it
    notes = [json.loads(line) for line in (incidents / incident / "notes.jsonl").read_text().splitlines()]
    detected = [n for n in notes if n.get("milestone") == "detected"]
    assert len(detected) == 1 and detected[0]["at"].startswith(report["starts_at"][:19])
    timeline = runbook("timeline", "--incident", incident, "--transcripts-dir", str(tmp_path / "transcripts"))
    assert timeline.code == 0, timeline.output
    postmortem = runbook("postmortem", "--incident", incident, "--transcripts-dir", str(tmp_path / "transcripts"))
    assert postmortem.code == 0, postmortem.output
    assert report["starts_at"][11:19] in postmortem.stdout
