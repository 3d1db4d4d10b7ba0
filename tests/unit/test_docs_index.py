"""docs/procedures.md is generated from the procedure files and must be in step with them."""

from __future__ import annotations

from engine.cli.docs_index import DEFAULT_OUTPUT, REGENERATE, generate, main, render
from engine.spec.loader import Catalog


def test_docs_procedures_md_is_up_to_date() -> None:
    on_disk = DEFAULT_OUTPUT.read_text(encoding="utf-8") if DEFAULT_OUTPUT.exists() else ""
    assert on_disk == generate(), f"docs/procedures.md is out of date with procedures/: run `{REGENERATE}`"


def test_every_shipped_procedure_has_exactly_one_row() -> None:
    text = generate()
    for pid in Catalog().entries():
        assert text.count(f"| `{pid}` |") == 1, pid


def test_row_shows_purpose_params_and_strongest_effect() -> None:
    described = [
        {
            "id": "redis/x",
            "title": "Do x",
            "section": "A › B | C",
            "params": [
                {"name": "tenant", "type": "string", "default": None, "required": True, "secret": False},
                {"name": "ttl", "type": "duration", "default": "3600s", "required": False, "secret": False},
                {"name": "flag", "type": "boolean", "default": False, "required": False, "secret": False},
                {"name": "value", "type": "string", "default": "", "required": False, "secret": False},
                {"name": "pw", "type": "string", "default": None, "required": False, "secret": True},
            ],
            "steps": [
                {"effect": "read", "kind": "redis", "summary": "INFO"},
                {"effect": "write", "kind": "redis", "summary": "EXPIRE k 1"},
                {"effect": "destructive", "kind": "redis", "summary": "UNLINK k"},
                {"effect": "read", "kind": "call", "summary": "call redis/verify-wm", "calls": ["redis/verify-wm"]},
                {"effect": "decided at run time", "kind": "redis", "summary": "{{ cmd }}"},
            ],
        }
    ]
    row = render(described).splitlines()[-1]
    assert row == (
        "| `redis/x` | Do x (A › B \\| C) | `tenant:string (required)`, `ttl:duration=3600s`, `flag:boolean=false`, "
        '`value:string=""`, `pw:string (secret)` | **destructive**: 1 destructive, 1 write, 2 read, '
        "1 decided at run time; calls `redis/verify-wm` |"
    )
    read_only = render([{**described[0], "params": [], "steps": [described[0]["steps"][0]]}]).splitlines()[-1]
    assert read_only.endswith("| none | read-only: 1 read |")


def test_check_mode_reports_a_stale_file(tmp_path, capsys) -> None:
    stale = tmp_path / "procedures.md"
    stale.write_text("old\n")
    assert main(["--check", "--output", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["--output", str(stale)]) == 0
    assert main(["--check", "--output", str(stale)]) == 0
    assert stale.read_text() == generate()
