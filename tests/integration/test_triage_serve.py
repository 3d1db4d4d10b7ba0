"""`runbook serve` refuses what it must (token, size, shape, rate) with the right status and stays up;
a repeated notification of one alert group is not triaged twice."""

from __future__ import annotations

import json
from pathlib import Path

from engine.sandbox import write_inventory
from tests.integration.cli_support import runbook
from tests.integration.triage_support import TOKEN, get, notification, post, serve, wait_for


def _raw(host: str, port: int, request: bytes) -> bytes:
    import socket

    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request)
        return sock.recv(65536)


def _inventory(tmp_path: Path) -> Path:
    data = {"environments": {"prod": {"targets": {"cache": {"redis": {"url": "redis://127.0.0.1:1/0"}}}}}}
    return write_inventory(tmp_path / "inventory.yaml", data)


def test_serve_refuses_bad_requests_with_the_right_status_and_stays_up(tmp_path: Path) -> None:
    valid = notification('{}:{alertname="X"}', {"alertname": "X", "runbook_target": "nowhere"}, status="resolved")
    with serve(tmp_path, _inventory(tmp_path), "--max-body", "2048") as (host, port, proc):
        for token in (None, "wrong-token-wrong-token-wrong", TOKEN + "x", TOKEN[:-1]):
            status, body = post(host, port, valid, token=token)
            assert status == 401, (token, body)
        assert post(host, port, b"x" * 4096)[0] == 413
        assert post(host, port, b"x" * 4096, token=None)[0] == 401  # the token is checked before the size
        for bad in (
            b"{not json",
            b"[]",
            b'{"groupKey": "g"}',
            b'{"groupKey": "g", "alerts": [1]}',
            b'{"groupKey": "g", "alerts": [{"labels": {"a": 1}, "status": "firing"}]}',
            b'{"groupKey": "g", "alerts": [{"labels": {}, "status": "odd"}]}',
            b"\xff\xfe",
        ):
            status, body = post(host, port, bad)
            assert status == 400, (bad, body)
        assert post(host, port, b"[" * 1020 + b"]" * 1020)[0] == 400  # deep nesting, under the size cap
        assert post(host, port, valid, path="/other")[0] == 404
        assert _raw(
            host,
            port,
            b"POST /alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + TOKEN.encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ).startswith(b"HTTP/1.0 411")
        assert get(host, port) == 200 and proc.poll() is None
        status, body = post(host, port, valid)  # still serving: a resolved notification is acknowledged
        assert status == 202 and body["status"] == "ignored"


def test_serve_rate_bound(tmp_path: Path) -> None:
    valid = notification("g", {"alertname": "X"}, status="resolved")
    with serve(tmp_path, _inventory(tmp_path), "--rate", "0.1", "--burst", "2") as (host, port, proc):
        statuses = [post(host, port, valid)[0] for _ in range(3)]
        assert statuses[:2] == [202, 202] and statuses[2] == 429
        assert get(host, port) == 200 and proc.poll() is None


def test_a_repeated_alert_group_is_triaged_once(tmp_path: Path) -> None:
    body = notification(
        '{}:{alertname="RunbookEmergencyOom"}', {"alertname": "RunbookEmergencyOom", "runbook_target": "nowhere"}
    )
    with serve(tmp_path, _inventory(tmp_path)) as (host, port, proc):
        first = post(host, port, body)
        second = post(host, port, body)
        assert first[0] == second[0] == 202
        assert first[1]["status"] == "queued" and second[1]["status"] == "duplicate"
        assert first[1]["incident"] == second[1]["incident"]
        incident = first[1]["incident"]
        assert incident.startswith("alert-") and all(c.isalnum() or c in "._-" for c in incident)
        report_file = wait_for(tmp_path / "transcripts" / "incidents" / incident / "triage.json", proc)
        assert post(host, port, body)[1]["status"] == "duplicate"  # also once the triage is done
    # the one triage that ran: the alert is noted as detected, and the unmapped target reported
    report = json.loads(report_file.read_text())
    assert "no inventory target" in report["error"]
    notes = (tmp_path / "transcripts" / "incidents" / incident / "notes.jsonl").read_text().splitlines()
    assert len(notes) == 1 and json.loads(notes[0])["milestone"] == "detected"
    assert json.loads(notes[0])["at"].startswith("2026-11-29T01:02:03")


def test_serve_will_not_start_without_a_token(tmp_path: Path) -> None:
    inventory = _inventory(tmp_path)
    base = ("serve", "--inventory", str(inventory), "--listen", "127.0.0.1:0")
    env = {"RUNBOOK_SERVE_TOKEN": "", "RUNBOOK_SERVE_TOKEN_FILE": ""}
    missing = runbook(*base, env=env, timeout=30)
    assert missing.code == 2 and "bearer token" in missing.stderr
    short = runbook(*base, env={**env, "RUNBOOK_SERVE_TOKEN": "short"}, timeout=30)
    assert short.code == 2 and "at least 16" in short.stderr
    assert runbook(*base, "--token", TOKEN, env=env, timeout=30).code == 2  # no such option: never on argv
