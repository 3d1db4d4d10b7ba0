"""`runbook list` / `runbook show` (no server involved) and the CLI's lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from engine.cli.main import main

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
        "import engine.cli.main, sys; engine.cli.main.main(['--help'], standalone_mode=False); "
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


TEMPLATED_EFFECTS = """\
id: test/templated
title: Effects that rendered values decide
section: Test
description: Each step's effect depends on a param.
requires: [redis]
params:
  n: {type: string, default: "10"}
  ttl: {type: integer, default: 0}
steps:
  - id: acl-log
    name: ACL LOG n (RESET clears it)
    redis: {command: [ACL, LOG, "{{ n }}"]}
    confirm: Read or reset the ACL log?
  - id: expire
    name: EXPIRE with a TTL param (0 deletes the key)
    redis: {command: [EXPIRE, "tenant:acme:wm:active", "{{ ttl }}"]}
    confirm: Set the TTL?
  - id: get
    name: A read whatever the key
    redis: {command: [GET, "tenant:{{ n }}:x"]}
"""


def test_show_says_when_a_rendered_value_decides_the_effect(tmp_path: Path) -> None:
    path = tmp_path / "templated.yaml"
    path.write_text(TEMPLATED_EFFECTS, encoding="utf-8")
    code, out = invoke("show", str(path))
    assert code == 0, out
    lines = out.splitlines()
    for step in ("acl-log", "expire"):
        (line,) = [line for line in lines if f" {step}: " in line]
        assert "[decided at run time]" in line and "[read]" not in line and "[WRITE]" not in line
    (get_line,) = [line for line in lines if " get: " in line]
    assert "[read]" in get_line
    # with the defaults: ACL LOG 10 reads, EXPIRE ... 0 deletes, GET reads
    assert "here: [read]" in out and "here: [DESTRUCTIVE]" in out
    code, out = invoke("show", str(path), "--var", "n=RESET", "--var", "ttl=60", "--json")
    assert code == 0, out
    steps = {s["id"]: s for s in json.loads(out)["steps"]}
    assert {k: (s["effect"], s["effect_for_values"]) for k, s in steps.items()} == {
        "acl-log": ("decided at run time", "write"),
        "expire": ("decided at run time", "write"),
        "get": ("read", None),
    }


def test_a_step_whose_effect_a_value_decides_needs_a_confirm_text(tmp_path: Path) -> None:
    path = tmp_path / "templated.yaml"
    path.write_text(TEMPLATED_EFFECTS.replace("    confirm: Read or reset the ACL log?\n", ""), encoding="utf-8")
    code, out = invoke("validate", str(path))
    assert code == 2, out
    assert "templated.yaml:10:5: steps[0]: a step whose effect a rendered value decides" in out
    assert "needs a 'confirm' text" in out


def test_show_reports_a_template_that_fails_with_every_name_known(tmp_path: Path) -> None:
    broken = TEMPLATED_EFFECTS.replace("confirm: Set the TTL?", 'confirm: "Set the TTL to {{ 3600 // ttl }}s?"')
    path = tmp_path / "broken.yaml"
    path.write_text(broken, encoding="utf-8")
    code, out = invoke("show", str(path), "--json")
    assert code == 0, out
    steps = {s["id"]: s for s in json.loads(out)["steps"]}
    assert len(steps["expire"]["template_errors"]) == 1 and "division" in steps["expire"]["template_errors"][0]
    assert [s for s in steps if steps[s]["template_errors"]] == ["expire"]
    code, out = invoke("show", str(path))
    assert "template error: Set the TTL to {{ 3600 // ttl }}s?" in out


# Required params of the shipped procedures, with values `show` can render (no server involved).
SHOW_SAMPLE_VARS = {
    "redis/backup-tenant": ["tenant=acme"],
    "redis/backup-verify": ["path=/backups/nightly.rdb"],
    "redis/config-set": ["parameter=maxmemory-policy", "value=allkeys-lru"],
    "redis/restore-rdb": ["backup=/backups/nightly.rdb"],
    "redis/restore-tenant": ["input=/backups/acme.keys.jsonl"],
    "redis/wm-clear": ["tenant=acme"],
    "redis/wm-extend": ["tenant=acme"],
    "redis/wm-inspect": ["tenant=acme"],
}


def _shipped() -> list[str]:
    from engine.spec.loader import Catalog

    return sorted(Catalog().entries())


def test_show_renders_every_shipped_procedure_without_a_template_error() -> None:
    broken = {}
    for procedure in _shipped():
        argv = ["show", procedure, "--json"]
        for var in SHOW_SAMPLE_VARS.get(procedure, []):
            argv += ["--var", var]
        code, out = invoke(*argv)
        assert code == 0, f"{procedure}: {out}"
        errors = {s["id"]: s["template_errors"] for s in json.loads(out)["steps"] if s["template_errors"]}
        if errors:
            broken[procedure] = errors
    assert broken == {}


def test_show_marks_a_call_with_the_strongest_effect_of_the_called_steps(tmp_path: Path) -> None:
    code, out = invoke("show", "redis/emergency-data-loss", "--json")
    assert code == 0, out
    steps = {s["id"]: s for s in json.loads(out)["steps"]}
    assert steps["restore"]["kind"] == "call" and steps["restore"]["effect"] == "destructive"  # redis/restore-rdb
    code, out = invoke("show", "redis/troubleshoot-memory", "--json")
    steps = {s["id"]: s for s in json.loads(out)["steps"]}
    assert steps["leaks"]["effect"] == "read"  # redis/audit-ttl only reads
    caller = tmp_path / "caller.yaml"
    caller.write_text(
        "id: test/caller\ntitle: T\nsection: S\ndescription: D\nrequires: [redis]\n"
        "params:\n  which: {type: string, default: redis/wm-list}\n"
        "steps:\n  - id: any\n    name: Call a procedure named by a param\n"
        '    call: {procedure: "{{ which }}"}\n',
        encoding="utf-8",
    )
    code, out = invoke("show", str(caller))
    assert code == 0, out
    assert "[decided at run time] any: Call a procedure named by a param" in out
