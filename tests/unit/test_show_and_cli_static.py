"""`runbook list` / `runbook show` (no server involved) and the CLI's lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from engine.cli import main

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {"redis/wm-clear", "redis/health-check"}


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_list_names_the_shipped_procedures() -> None:
    code, out = invoke("list")
    assert code == 0, out
    lines = out.splitlines()
    assert any(line.startswith("redis/wm-clear ") and "Clear a tenant's working memory" in line for line in lines)
    assert any(line.startswith("redis/health-check ") and "Basic health check" in line for line in lines)


def test_list_json() -> None:
    code, out = invoke("list", "--json")
    assert code == 0, out
    entries = {e["id"]: e for e in json.loads(out)}
    assert set(entries) >= SHIPPED
    assert entries["redis/wm-clear"]["file"] == "procedures/redis/wm-clear.yaml"
    assert entries["redis/health-check"]["file"] == "procedures/redis/health-check.yaml"
    assert set(entries["redis/wm-clear"]) == {"id", "title", "section", "file"}
    assert entries["redis/wm-clear"]["section"].startswith("Common Operations")


def test_show_renders_the_key_and_marks_the_delete_destructive() -> None:
    code, out = invoke("show", "redis/wm-clear", "--var", "tenant=acme")
    assert code == 0, out
    lines = out.splitlines()
    (delete,) = [line for line in lines if " delete: " in line]
    assert "[DESTRUCTIVE]" in delete
    (inspect,) = [line for line in lines if " inspect: " in line]
    assert "[read]" in inspect
    assert "UNLINK tenant:acme:wm:active" in out
    assert "confirm: Delete tenant acme's active working memory?" in out
    assert "{{ tenant }}" not in out


def test_show_without_vars_keeps_the_templates() -> None:
    code, out = invoke("show", "redis/wm-clear")
    assert code == 0, out
    assert "tenant:{{ tenant }}:wm:active" in out


def test_show_json_has_steps_with_effects() -> None:
    code, out = invoke("show", "redis/wm-clear", "--var", "tenant=acme", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["id"] == "redis/wm-clear"
    effects = {s["id"]: s["effect"] for s in data["steps"]}
    assert effects == {"inspect": "read", "delete": "destructive", "verify": "read"}
    (delete,) = [s for s in data["steps"] if s["id"] == "delete"]
    assert delete["summary"] == "UNLINK tenant:acme:wm:active"
    assert delete["kind"] == "redis"
    assert delete["source"].startswith("procedures/redis/wm-clear.yaml:")
    assert data["params"][0]["name"] == "tenant"
    assert data["params"][0]["value"] == "acme"


def test_show_health_check_is_read_only() -> None:
    code, out = invoke("show", "redis/health-check", "--json")
    assert code == 0, out
    assert {s["effect"] for s in json.loads(out)["steps"]} == {"read"}


def test_show_unknown_procedure_is_a_usage_error() -> None:
    code, out = invoke("show", "redis/no-such-procedure")
    assert code == 2
    assert "no procedure 'redis/no-such-procedure'" in out


SECRET_PROCEDURE = """\
id: test/rotate
title: Rotate the replication password
section: Test
description: A secret param used in a command and a confirm text.
requires: [redis]
params:
  new_password:
    type: string
    secret: true
    required: true
steps:
  - id: set
    name: Set masterauth
    redis:
      command: [CONFIG, SET, masterauth, "{{ new_password }}"]
    confirm: "Set masterauth to {{ new_password }}?"
"""


def _show_secret(tmp_path: Path) -> str:
    path = tmp_path / "rotate.yaml"
    path.write_text(SECRET_PROCEDURE, encoding="utf-8")
    code, out = invoke("show", str(path), "--var", "new_password=Hunter2-S3cret", "--json")
    assert code == 0, out
    return out


def test_show_hides_a_secret_param_value(tmp_path: Path) -> None:
    data = json.loads(_show_secret(tmp_path))
    assert data["params"][0]["value"] == "[SECRET]"


def test_show_never_prints_a_secret_value(tmp_path: Path) -> None:
    assert "Hunter2-S3cret" not in _show_secret(tmp_path)


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import engine.cli, sys; engine.cli.main(['--help'], standalone_mode=False); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('redis','paramiko','jsonschema')))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Commands:" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_unicode_digits_in_a_typed_param_are_a_usage_error_naming_the_param() -> None:
    for procedure, var, shown in (
        ("redis/troubleshoot-memory", "top=١٢", "--var top: '\\u0661\\u0662' is not an integer"),
        ("redis/emergency-oom", "maxmemory=٤gb", "--var maxmemory: '\\u0664gb' is not a size"),
        ("redis/troubleshoot-memory", "top=1_2", "--var top: '1_2' is not an integer"),
    ):
        code, out = invoke("show", procedure, "--var", var)
        assert code == 2, out
        assert shown in out and "ASCII digits 0-9 only" in out
