"""A step kind from outside the engine: one class, registered, and every command knows it.

`counter` keeps named counters in this module (a stand-in for any system a kind talks to): `{name: n}`
reads one, `{name: n, add: 5}` changes it, measured before the gate and acted on exactly as measured.
The test registers it, then validates, shows, dry-runs and runs a procedure using it through the
real CLI (in-process), and unregisters it. No engine file names it; docs/writing-procedures.md
("Adding a step kind") shows this very class.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli.main import main
from engine.errors import SourceError
from engine.spec.kinds import CheckContext
from engine.spec.model import Effect
from engine.spec.yamlsource import Located
from engine.steps import Action, Done, Measured, StepKind, get, kinds, register, registered

COUNTERS: dict[str, int] = {}  # the "system" this kind changes


class CounterKind(StepKind):
    name = "counter"
    description = "Read a named counter, or add to it (a change, shown before the gate)."
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9-]*$", "description": "The counter."},
            "add": {"type": ["integer", "string"], "description": "Add this much (a change); a template is allowed."},
        },
    }
    results = {"": {"type": "object", "required": ["name", "value"]}}  # what a step registers

    def static_effect(self, body: Any) -> Effect | None:
        return Effect.WRITE if "add" in body else Effect.READ

    def summary(self, body: Any) -> str:
        return f"counter {body['name']}" + (f" += {body['add']}" if "add" in body else "")

    def validate(self, body: Any, located: Located, path: tuple[Any, ...], context: CheckContext) -> list[SourceError]:
        if body.get("add") == 0:
            return [located.error((*path, "counter", "add"), "add: 0 changes nothing; leave `add` out to read")]
        return []

    def plan(self, body: Any, ctx: Any) -> Action:
        name = body["name"]
        if "add" not in body:
            return Action(Effect.READ, "counters", self.summary(body), lambda: {"name": name, "value": COUNTERS[name]})
        add = int(body["add"])

        def measure() -> Measured:  # reads only: what the operator approves
            return Measured({"counter": name, "now": COUNTERS.get(name, 0), "add": add}, approved=(name,))

        def apply(measured: Measured) -> Done:  # acts on what was measured and approved, nothing else
            (approved,) = measured.approved
            COUNTERS[approved] = measured["now"] + add
            change = {"kind": "command", "command": f"counter {approved}: {measured['now']} -> {COUNTERS[approved]}"}
            return Done({"name": approved, "value": COUNTERS[approved]}, changes=[change])

        return Action(
            Effect.WRITE,
            "counters",
            self.summary(body),
            lambda: apply(measure()).result,
            measure=measure,
            apply=apply,
            predict=lambda measured: {"name": name, "value": measured["now"] + add},
            changes=lambda measured, result: [{"kind": "command", "command": f"counter {name} += {add}"}],
        )


PROCEDURE = """\
id: test/counter
title: Bump a counter
section: Test
description: Reads a counter, adds to it, reads it again.
params:
  by: {type: integer, default: 5}
steps:
  - id: before
    name: Read the counter
    counter: {name: visits}
    register: before
  - id: bump
    name: Add to the counter
    counter: {name: visits, add: "{{ by }}"}
    confirm: Add {{ by }} to visits?
  - id: after
    name: Read it again
    counter: {name: visits}
    register: after
    verifies: bump
    expect:
      - that: after.value == before.value + by
        message: the counter did not move by {{ by }}
"""

INVENTORY = """\
environments:
  lab:
    targets:
      notebook: {description: nothing but counters}
"""


@pytest.fixture
def counter_kind() -> Iterator[StepKind]:
    COUNTERS.clear()
    COUNTERS["visits"] = 10
    with registered(CounterKind()) as kind:
        yield kind
    assert "counter" not in kinds()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "counter.yaml").write_text(PROCEDURE, encoding="utf-8")
    (tmp_path / "inventory.yaml").write_text(INVENTORY, encoding="utf-8")
    return {"procedure": tmp_path / "counter.yaml", "inventory": tmp_path / "inventory.yaml", "dir": tmp_path}


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run(files: dict[str, Path], *extra: str) -> dict[str, Any]:
    result = cli(
        "run",
        str(files["procedure"]),
        "--inventory",
        str(files["inventory"]),
        "--target",
        "lab/notebook",
        "--transcripts-dir",
        str(files["dir"] / "transcripts"),
        "--json",
        *extra,
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.splitlines()[-1])


def test_the_kind_is_registered_and_unregistered_cleanly(counter_kind: StepKind) -> None:
    assert get("counter") is counter_kind
    with pytest.raises(ValueError, match="registered twice"):
        register(CounterKind())


def test_validate_knows_the_kind_its_schema_and_its_own_check(counter_kind: StepKind, files: dict[str, Path]) -> None:
    assert cli("validate", str(files["procedure"])).exit_code == 0
    unknown = files["dir"] / "unknown.yaml"
    unknown.write_text(PROCEDURE.replace("{name: visits}", "{name: visits, step: 2}", 1))
    result = cli("validate", str(unknown))
    assert result.exit_code == 2 and "steps[0].counter: unknown option 'step'" in result.output  # its schema
    zero = files["dir"] / "zero.yaml"
    zero.write_text(PROCEDURE.replace('add: "{{ by }}"', "add: 0"))
    result = cli("validate", str(zero))
    assert result.exit_code == 2 and "steps[1].counter.add: add: 0 changes nothing" in result.output  # its validate


def test_show_rates_each_step_by_the_kind(counter_kind: StepKind, files: dict[str, Path]) -> None:
    shown = json.loads(cli("show", str(files["procedure"]), "--json", "--var", "by=3").output)
    assert [(s["kind"], s["effect"], s["summary"]) for s in shown["steps"]] == [
        ("counter", "read", "counter visits"),
        ("counter", "write", "counter visits += 3"),
        ("counter", "read", "counter visits"),
    ]


def test_a_dry_run_predicts_from_the_measurement_and_changes_nothing(
    counter_kind: StepKind, files: dict[str, Path]
) -> None:
    summary = run(files, "--dry-run")
    bump = next(s for s in summary["steps"] if s["id"] == "bump")
    assert bump["outcome"] == "predicted" and bump["result"] == {"name": "visits", "value": 15}
    assert COUNTERS["visits"] == 10


def test_a_run_changes_what_was_measured_and_records_it(
    counter_kind: StepKind, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNBOOK_CHECK_RESULTS", "1")  # the results the kind declares are checked too
    summary = run(files, "--yes", "--var", "by=7")
    assert summary["outcome"] == "ok", summary
    assert COUNTERS["visits"] == 17
    transcript = Path(summary["transcript"])
    events = [json.loads(line) for line in transcript.read_text(encoding="utf-8").splitlines()]
    approval = next(e for e in events if e["type"] == "approval.requested")
    assert approval["blast_radius"] == {"counter": "visits", "now": 10, "add": 7}
    finished = next(e for e in events if e["type"] == "step.finished" and e["step"]["id"] == "bump")
    assert finished["changes"] == [{"kind": "command", "command": "counter visits: 10 -> 17"}]


def test_runbook_kinds_names_a_module_that_registers_kinds(tmp_path: Path, files: dict[str, Path]) -> None:
    """Outside a test, a kind's module is named in $RUNBOOK_KINDS (or imported by a wrapper) and registers it."""
    (tmp_path / "my_kinds.py").write_text(
        textwrap.dedent(
            """\
            from engine.steps import register
            from tests.unit.test_kind_plugin import CounterKind

            register(CounterKind())
            """
        )
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "RUNBOOK_KINDS": "my_kinds", "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    command = [sys.executable, "-m", "engine.cli", "validate", str(files["procedure"])]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    env["RUNBOOK_KINDS"] = "no_such_kinds_module"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "RUNBOOK_KINDS: cannot import 'no_such_kinds_module'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_docs_show_this_very_kind() -> None:
    """docs/writing-procedures.md ("Adding a step kind") copies CounterKind: keep them the same."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "writing-procedures.md"
    assert inspect.getsource(CounterKind) in docs.read_text(encoding="utf-8")


ROOT = Path(__file__).resolve().parents[2]
ASK_THE_REGISTRY = [
    *sorted((ROOT / "engine" / "spec").glob("*.py")),
    ROOT / "engine" / "run" / "session.py",
    ROOT / "engine" / "run" / "approval.py",
    ROOT / "engine" / "cli" / "show.py",
    ROOT / "engine" / "cli" / "docs_index.py",
]


def _kind_names_used(path: Path, names: set[str]) -> list[str]:
    """Kind names compared with, looked up or subscripted by: `kind == "call"`, `step["redis"]`, `.get("block")`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            places: list[ast.AST] = [node.left, *node.comparators]
        elif isinstance(node, ast.Subscript):
            places = [node.slice]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            places = list(node.args[:1])
        else:
            continue
        for place in places:
            for constant in ast.walk(place):
                if isinstance(constant, ast.Constant) and constant.value in names:
                    found.append(f"{path.relative_to(ROOT)}:{constant.lineno}: {constant.value!r}")
    return found


def test_validation_session_show_and_docs_name_no_kind() -> None:
    """They ask the registry (hooks and flags); a kind's knowledge lives in its own module only."""
    names = set(kinds())
    assert [hit for path in ASK_THE_REGISTRY for hit in _kind_names_used(path, names)] == []


def test_the_procedure_format_never_imports_the_kinds() -> None:
    """spec/ sits below steps/: the registry is handed to it (engine/__init__.py), never imported."""
    for path in sorted((ROOT / "engine" / "spec").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(m == "engine.steps" or m.startswith("engine.steps.") for m in modules), path
