"""The generated Prometheus rules load in Prometheus's own checker and fire on the symptom's numbers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.conftest import require_binary
from tests.integration.cli_support import runbook


def _rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yml"
    result = runbook("alerts", "--format", "prometheus", "-o", str(path), "--url-base", "https://runbooks.example/")
    assert result.code == 0, result.output
    return path


def test_promtool_check_rules_passes_on_the_generated_rules(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    rules = _rules(tmp_path)
    checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    data = yaml.safe_load(rules.read_text())
    alerts = {r["alert"]: r for g in data["groups"] for r in g["rules"]}
    oom = alerts["RunbookEmergencyOomWritesRefusedAtLimit"]
    assert "> 90" in oom["expr"]  # memory_alert_pct's default in redis/emergency-oom: one source
    assert oom["labels"]["runbook_procedure"] == "redis/emergency-oom"
    assert oom["annotations"]["runbook_url"] == "https://runbooks.example/redis/emergency-oom"
    assert oom["annotations"]["runbook_command"].startswith("runbook run redis/emergency-oom ")
    assert "redis_connected_clients > 1500" in alerts["RunbookTroubleshootConnectionTooManyClients"]["expr"]


def test_the_oom_rule_fires_on_memory_over_the_threshold_with_noeviction_only(tmp_path: Path) -> None:
    """promtool's rule unit test: 95% of maxmemory under noeviction fires; under allkeys-lru, or at 80%, not."""
    promtool = require_binary("promtool")
    rules = _rules(tmp_path)
    rule = next(r for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"] if "Oom" in r["alert"])
    annotations = {  # as Prometheus renders them for instance "a" (no runbook_target label in this test)
        k: v.replace("{{ $labels.instance }}", "a").replace("{{ $labels.runbook_target }}", "")
        for k, v in rule["annotations"].items()
    }
    info = 'redis_instance_info{{instance="{i}", job="redis", maxmemory_policy="{p}"}}'
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'redis_memory_used_bytes{instance="a", job="redis"}', "values": "95x5"},
                    {"series": 'redis_memory_max_bytes{instance="a", job="redis"}', "values": "100x5"},
                    {"series": info.format(i="a", p="noeviction"), "values": "1x5"},
                    {"series": 'redis_memory_used_bytes{instance="b", job="redis"}', "values": "95x5"},
                    {"series": 'redis_memory_max_bytes{instance="b", job="redis"}', "values": "100x5"},
                    {"series": info.format(i="b", p="allkeys-lru"), "values": "1x5"},
                    {"series": 'redis_memory_used_bytes{instance="c", job="redis"}', "values": "80x5"},
                    {"series": 'redis_memory_max_bytes{instance="c", job="redis"}', "values": "100x5"},
                    {"series": info.format(i="c", p="noeviction"), "values": "1x5"},
                    {"series": 'redis_memory_used_bytes{instance="d", job="redis"}', "values": "95x5"},
                    {"series": 'redis_memory_max_bytes{instance="d", job="redis"}', "values": "0x5"},
                    {"series": info.format(i="d", p="noeviction"), "values": "1x5"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "2m",
                        "alertname": "RunbookEmergencyOomWritesRefusedAtLimit",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "instance": "a",
                                    "job": "redis",
                                    "severity": "critical",
                                    "runbook_procedure": "redis/emergency-oom",
                                    "runbook_symptom": "writes-refused-at-limit",
                                },
                                "exp_annotations": annotations,
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "oom.test.yml"
    path.write_text(yaml.safe_dump(test))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
