"""Pure triage logic: symptoms (validation, evaluation, ranking, derived params), webhook payloads,
alert -> target mapping, group key -> incident id, rule names."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.spec.loader import Catalog, check_file
from engine.timeline.incident import check_incident_id
from engine.triage import webhook
from engine.triage.alerts import prometheus_rules, rule_name
from engine.triage.diagnose import next_command, symptom_procedures
from engine.triage.symptoms import evaluate

MB = 1024 * 1024


def _findings(**overrides):
    base = {
        "reachable": True,
        "auth_failed": False,
        "error": "",
        "info": {
            "used_memory": 1 * MB,
            "used_memory_human": "1M",
            "maxmemory": 0,
            "maxmemory_human": "0B",
            "maxmemory_policy": "noeviction",
            "connected_clients": 3,
            "rejected_connections": 0,
            "evicted_keys": 0,
            "keyspace_hits": 0,
            "keyspace_misses": 0,
            "blocked_clients": 0,
            "role": "master",
            "rdb_last_bgsave_status": "ok",
            "uptime_in_seconds": 100,
        },
        "config": {"maxclients": "10000"},
        "clients": [],
        "slowlog": [],
        "latency": [],
        "acl_log": [],
        "keys": 100,
        "expires": 90,
        "now": 1_000_000.0,
    }
    info = {**base["info"], **overrides.pop("info", {})}
    return {**base, **overrides, "info": info}


@pytest.fixture(scope="module")
def shipped():
    return symptom_procedures(Catalog())


def test_healthy_findings_match_nothing(shipped) -> None:
    procedures, thresholds = shipped
    assert evaluate(procedures, _findings(), thresholds) == []


def test_oom_ranks_emergency_oom_first_with_twice_the_memory(shipped) -> None:
    procedures, thresholds = shipped
    findings = _findings(
        info={
            "used_memory": 8 * MB + 1000,
            "maxmemory": 8 * MB,
            "maxmemory_human": "8M",
            "errorstat_OOM": {"count": 7},
        },
        keys=3000,
        expires=0,
    )
    ranked = evaluate(procedures, findings, thresholds)
    assert ranked[0].procedure == "redis/emergency-oom"
    assert ranked[0].params == {"maxmemory": "17mb"}  # 2 x (8mb + 1000 bytes), rounded up to whole mb
    assert "7 commands refused with OOM" in ranked[0].evidence[0].evidence
    assert "redis/troubleshoot-memory" in [m.procedure for m in ranked[1:]]  # the no-TTL keys, ranked below


def test_one_threshold_for_diagnose_and_alerts(shipped) -> None:
    """memory_alert_pct changes both what diagnose matches and the PromQL: they cannot drift apart."""
    procedures, thresholds = shipped
    oom = next(p for p in procedures if p.id == "redis/emergency-oom")
    lowered = replace(
        oom, params=tuple(replace(p, default=50) if p.name == "memory_alert_pct" else p for p in oom.params)
    )
    at_60 = _findings(info={"used_memory": 60 * MB, "maxmemory": 100 * MB})
    assert evaluate([oom], at_60, thresholds) == []
    assert [m.procedure for m in evaluate([lowered], at_60, thresholds)] == ["redis/emergency-oom"]
    assert "> 90" in prometheus_rules([oom], thresholds) and "> 50" in prometheus_rules([lowered], thresholds)


def test_unreachable_ranks_service_down_but_an_auth_failure_does_not(shipped) -> None:
    procedures, thresholds = shipped
    down = _findings(reachable=False, error="cannot connect: Connection refused", info={})
    assert evaluate(procedures, down, thresholds)[0].procedure == "redis/emergency-service-down"
    # refused credentials, or a server full to the last connection: Redis runs, service-down is the wrong lead
    denied = _findings(reachable=False, auth_failed=True, error="authentication failed", info={})
    ((match, symptom),) = [
        (m.procedure, e.symptom) for m in evaluate(procedures, denied, thresholds) for e in m.evidence
    ]
    assert (match, symptom) == ("redis/troubleshoot-connection", "authentication-refused")
    full = _findings(reachable=False, error="cannot connect: ERR max number of clients reached", info={})
    ((match, symptom),) = [(m.procedure, e.symptom) for m in evaluate(procedures, full, thresholds) for e in m.evidence]
    assert (match, symptom) == ("redis/troubleshoot-connection", "maxclients-reached")


def test_connections_near_maxclients_point_to_troubleshoot_connection_before_blocked_clients(shipped) -> None:
    procedures, thresholds = shipped
    # CONFIG GET answers strings: 116 workers blocked in BLPOP and 6 leaked connections, maxclients 128
    near = _findings(info={"connected_clients": 122, "blocked_clients": 116}, config={"maxclients": "128"})
    ranked = evaluate(procedures, near, thresholds)
    assert [m.procedure for m in ranked][:2] == ["redis/troubleshoot-connection", "redis/troubleshoot-performance"]
    assert "122 connected of maxclients 128 (95%)" in ranked[0].evidence[0].evidence
    below = _findings(info={"connected_clients": 115, "blocked_clients": 0}, config={"maxclients": "128"})
    assert evaluate(procedures, below, thresholds) == []


def test_thresholds_from_key_metrics(shipped) -> None:
    procedures, thresholds = shipped
    crowded = _findings(info={"connected_clients": 1501}, clients=[{"idle": 400}, {"idle": 1}])
    first = evaluate(procedures, crowded, thresholds)[0]
    assert first.procedure == "redis/troubleshoot-connection"
    assert "alert above 1500" in first.evidence[0].evidence and "1 idle 300 s or longer" in first.evidence[0].evidence
    assert evaluate(procedures, _findings(info={"connected_clients": 1500}), thresholds) == []


def test_next_command_prefills_params_and_incident(shipped) -> None:
    procedures, thresholds = shipped
    findings = _findings(info={"used_memory": 95 * MB, "maxmemory": 100 * MB})
    match = evaluate(procedures, findings, thresholds)[0]
    argv = next_command(match, ["--inventory", "inv.yaml", "--target", "prod/cache"], "INC-1")
    assert argv == [
        "runbook", "run", "redis/emergency-oom", "--inventory", "inv.yaml", "--target", "prod/cache",
        "--var", "maxmemory=200mb", "--incident", "INC-1",
    ]  # fmt: skip


def _procedure(tmp_path: Path, symptoms: str) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text(
        "id: t/p\ntitle: T\nsection: S\ndescription: d\nparams:\n  limit: {type: integer, default: 3}\n"
        "steps:\n  - id: a\n    name: A\n    note: hi\n" + symptoms
    )
    return [str(e) for e in check_file(path, known_procedures=lambda name: name == "redis/key-metrics")[1]]


@pytest.mark.parametrize(
    ("symptoms", "message"),
    [
        (
            "symptoms:\n  - {id: s, summary: x, when: 'info.x >', severity: info, weight: 1}\n",
            "expression does not parse",
        ),
        (
            "symptoms:\n  - {id: s, summary: x, when: 'true', severity: info, weight: 1, params: {nope: '1'}}\n",
            "unknown param 'nope'",
        ),
        (
            "symptoms:\n  - {id: s, summary: x, when: 'true', severity: info, weight: 1}\n"
            "  - {id: s, summary: y, when: 'true', severity: info, weight: 1}\n",
            "duplicate symptom id 's'",
        ),
        ("symptoms:\n  - {id: s, summary: x, when: 'true', severity: bad, weight: 1}\n", "is not one of"),
        ("symptoms:\n  - {id: s, summary: x, when: 'true', severity: info, weight: 101}\n", "101"),
        (
            "symptoms:\n  - {id: s, summary: x, when: 'true', severity: info, weight: 1, thresholds_from: a/b}\n",
            "no procedure",
        ),
        (
            "symptoms:\n  - {id: s, summary: x, when: 'true', severity: info, weight: 1, colour: red}\n",
            "unknown field 'colour'",
        ),
    ],
)
def test_bad_symptoms_are_reported_with_file_line_and_field(tmp_path: Path, symptoms: str, message: str) -> None:
    errors = _procedure(tmp_path, symptoms)
    assert errors and any(message in e for e in errors), errors
    assert all(":12" in e or ":13" in e for e in errors), errors  # the symptom's own line


def test_a_good_symptom_validates(tmp_path: Path) -> None:
    ok = (
        "symptoms:\n  - {id: s, summary: x, when: 'keys > limit', severity: info, weight: 1, params: {limit: 'keys'}}\n"
    )
    assert _procedure(tmp_path, ok) == []


# -- webhook ---------------------------------------------------------------------------------------
def _body(**overrides) -> bytes:
    data = {
        "groupKey": '{}:{alertname="A"}',
        "status": "firing",
        "alerts": [{"status": "firing", "labels": {"alertname": "A"}, "startsAt": "2026-11-29T01:02:03.123456789Z"}],
    }
    data.update(overrides)
    return json.dumps(data).encode()


def test_parse_reads_nanosecond_starts_at() -> None:
    note = webhook.parse(_body())
    assert note.firing[0].starts_at == datetime(2026, 11, 29, 1, 2, 3, 123456, tzinfo=UTC)
    assert webhook.parse_time("0001-01-01T00:00:00Z") is None and webhook.parse_time("garbage") is None
    assert webhook.parse_time("2026-11-29T02:02:03+01:00") == datetime(2026, 11, 29, 1, 2, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [b"", b"null", b"[]", b"{", b"\xff", _body(groupKey=""), _body(groupKey=3), _body(alerts=[]), _body(alerts={}),
     _body(alerts=[{"labels": {"a": 1}, "status": "firing"}]), _body(alerts=[{"status": "firing"}]),
     _body(alerts=[{"labels": {}, "status": "maybe"}]), b"[" * 200_000 + b"]" * 200_000,
     b'{"groupKey": "g", "alerts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"],
)  # fmt: skip
def test_parse_rejects_what_is_not_a_notification(body: bytes) -> None:
    with pytest.raises(webhook.BadPayload):
        webhook.parse(body)


@pytest.mark.parametrize(
    "group_key",
    ['{}:{alertname="A"}', "../../etc/passwd", "a/b\\c", " spaces and\nnewlines\t", "é ü 漢字", "", "-", "." * 300,
     "x" * 10_000, '{}/{severity="critical"}:{alertname="RunbookEmergencyOom", redis="10.0.0.1:6379"}'],
)  # fmt: skip
def test_incident_id_is_always_a_valid_incident_id_and_distinct(group_key: str) -> None:
    incident = webhook.incident_id(group_key)
    assert check_incident_id(incident) == incident and len(incident) <= 128
    assert incident != webhook.incident_id(group_key + "x")
    assert incident == webhook.incident_id(group_key)


INVENTORY = {
    "environments": {
        "prod": {"targets": {"cache": {"redis": {"url": "redis://10.0.0.1:6379/0"}}, "queue": {"redis": {"url": "rediss://u@q.example:6380"}}}},
        "staging": {"targets": {"cache": {"redis": {"url": "redis://127.0.0.1:7000"}}}},
    }
}  # fmt: skip


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"runbook_target": "prod/cache"}, "prod/cache"),
        ({"runbook_target": "queue"}, "prod/queue"),
        ({"runbook_target": "cache"}, None),  # in two environments: ambiguous, never a guess
        ({"runbook_target": "nope", "redis": "10.0.0.1:6379"}, None),  # an explicit label wins, even unknown
        ({"redis": "10.0.0.1:6379"}, "prod/cache"),
        ({"redis": "redis://q.example:6380"}, "prod/queue"),
        ({"instance": "localhost:7000"}, "staging/cache"),
        ({"instance": "exporter:9121", "redis": "127.0.0.1:7000"}, "staging/cache"),
        ({"instance": "10.0.0.2:6379"}, None),
        ({}, None),
    ],
)
def test_map_target(labels: dict[str, str], expected: str | None) -> None:
    assert webhook.map_target(labels, INVENTORY) == expected


def test_rule_names_are_prometheus_names() -> None:
    assert rule_name("redis/emergency-oom", "writes-refused-at-limit") == "RunbookEmergencyOomWritesRefusedAtLimit"
