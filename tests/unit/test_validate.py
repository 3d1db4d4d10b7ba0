"""`runbook validate`: every broken procedure is reported as `file:line:column: field.path: message`.

Each case breaks a copy of procedures/redis/wm-clear.yaml in one way and checks the exact position,
the field path and the message, through `check_file` and through the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.main import main
from engine.errors import SourceError, UsageError
from engine.spec.loader import Catalog, check_file, display_path, load_procedure
from engine.spec.params import resolve
from engine.spec.validate import TENANT_PATTERN

# procedures/redis/wm-clear.yaml as shipped (one long Jinja line wrapped inside its {{ }}: same meaning).
WM_CLEAR = """\
# yaml-language-server: $schema=../../schemas/procedure.schema.json
id: redis/wm-clear
title: Clear a tenant's working memory (emergency)
section: Common Operations › Working Memory Management › Clear tenant working memory
description: >
  Deletes tenant:<tenant>:wm:active after showing its type, size and TTL. Uses UNLINK rather than the
  runbook's DEL: same effect, but a large hash is freed in the background instead of blocking Redis.
  The tenant's agents lose their current context; long-term memory is not touched.
tags: [working-memory, destructive]
requires: [redis]
params:
  tenant:
    type: string
    required: true
    pattern: '^[A-Za-z0-9_.-]+$'
    description: Tenant whose active working memory is cleared (letters, digits, _ . - only)
steps:
  - id: inspect
    name: Show the working memory about to be deleted
    redis:
      keyinfo: ["tenant:{{ tenant }}:wm:active"]
    register: before
    show: >-
      {% if before[0].exists %}{{ before[0].key }}: {{ before[0].type }}, {{ before[0].length }} entries,
      {{ before[0].memory | human_bytes }}, TTL {{ 'none' if before[0].ttl == -1
      else before[0].ttl | int ~ 's' }}{% else %}{{ before[0].key }} does not exist{% endif %}
    expect:
      - that: before[0].exists
        severity: warning
        message: >-
          tenant:{{ tenant }}:wm:active does not exist, nothing to clear. Check the tenant name
          (redis/wm-list lists working memories).

  - id: delete
    name: Delete the tenant's active working memory
    when: before[0].exists
    redis:
      command: [UNLINK, "tenant:{{ tenant }}:wm:active"]
    confirm: >-
      Delete tenant {{ tenant }}'s active working memory? Its agents lose their current context.

  - id: verify
    name: Verify the working memory is gone
    when: before[0].exists
    verifies: delete
    redis:
      command: [EXISTS, "tenant:{{ tenant }}:wm:active"]
    show: "{{ 'gone' if result == 0 else 'still present' }}"
    expect:
      - that: result == 0
        message: >-
          tenant:{{ tenant }}:wm:active still exists: a SomaBrain writer recreated it. Check the
          clients writing it (CLIENT LIST) and run the procedure again.
"""

DELETE_COMMAND = '      command: [UNLINK, "tenant:{{ tenant }}:wm:active"]\n'
DELETE_CONFIRM = (
    "    confirm: >-\n"
    "      Delete tenant {{ tenant }}'s active working memory? Its agents lose their current context.\n"
)
VERIFY_COMMAND = '    redis:\n      command: [EXISTS, "tenant:{{ tenant }}:wm:active"]\n'


def edit(text: str, old: str, new: str) -> str:
    """Replace exactly one occurrence, so a case can never silently test the unbroken file."""
    assert text.count(old) == 1, f"expected exactly one {old!r} in the procedure"
    return text.replace(old, new)


def where(text: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """1-based line and column of the nth occurrence of `needle`."""
    index = -1
    for _ in range(nth + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[str], str]
    needle: str
    path: str
    fragment: str
    nth: int = 0


def _unknown_option(t: str) -> str:
    return edit(t, "    redis:\n      keyinfo:", '    redis:\n      patern: "tenant:*"\n      keyinfo:')


def _yaml_syntax(t: str) -> str:
    return edit(t, "    name: Delete the tenant's active working memory\n", "    name: Delete it: now\n")


def _duplicate_ids(t: str) -> str:
    return edit(t, "  - id: verify\n", "  - id: delete\n")


def _goto_nowhere(t: str) -> str:
    return edit(t, "    verifies: delete\n", "    verifies: delete\n    on_failure: {goto: nowhere}\n")


def _call_missing(t: str) -> str:
    step = "  - id: follow-up\n    name: Run the follow-up\n    call: {procedure: redis/does-not-exist}\n\n"
    return edit(t, "  - id: verify\n", step + "  - id: verify\n")


def _register_later(t: str) -> str:
    t = edit(
        t,
        "    when: before[0].exists\n    redis:\n      command: [UNLINK",
        "    when: gone == 0\n    redis:\n      command: [UNLINK",
    )
    return edit(t, "    verifies: delete\n", "    verifies: delete\n    register: gone\n")


def _param_typo(t: str) -> str:
    return edit(t, DELETE_COMMAND, DELETE_COMMAND.replace("{{ tenant }}", "{{ tenantt }}"))


def _del_without_confirm(t: str) -> str:
    t = edit(t, DELETE_COMMAND, DELETE_COMMAND.replace("UNLINK", "DEL"))
    return edit(t, DELETE_CONFIRM, "")


def _ssh_without_confirm(t: str) -> str:
    step = '  - id: log\n    name: Note it in the host log\n    ssh:\n      run: "logger cleared {{ tenant }}"\n\n'
    return edit(t, "  - id: verify\n", step + "  - id: verify\n")


def _ssh_read(run: str) -> Callable[[str], str]:
    """An ssh step labelled `effect: read` running `run` (the label must be proven from the command)."""

    def build(t: str) -> str:
        step = f"  - id: look\n    name: Look on the host\n    effect: read\n    ssh:\n      run: {run}\n\n"
        return edit(t, "  - id: verify\n", step + "  - id: verify\n")

    return build


def _two_actions(t: str) -> str:
    return edit(t, "    show: \"{{ 'gone'", "    wait: 1s\n    show: \"{{ 'gone'")


def _no_action(t: str) -> str:
    return edit(t, VERIFY_COMMAND, "")


def _tenant_without_pattern(t: str) -> str:
    return edit(t, "    pattern: '^[A-Za-z0-9_.-]+$'\n", "")


def _bad_type(t: str) -> str:
    return edit(t, "    verifies: delete\n", '    verifies: delete\n    retry: {attempts: "x"}\n')


def _declared_read_on_del(t: str) -> str:
    t = edit(t, DELETE_COMMAND, DELETE_COMMAND.replace("UNLINK", "DEL"))
    return edit(t, DELETE_CONFIRM, "    effect: read\n" + DELETE_CONFIRM)


CASES = [
    Case("unknown-option", _unknown_option, "patern:", "steps[0].redis", "unknown option 'patern'"),
    Case("yaml-syntax", _yaml_syntax, ": now", "", "YAML syntax error: mapping values are not allowed here"),
    Case(
        "duplicate-id", _duplicate_ids, "id: delete", "steps[2].id", "duplicate step id 'delete' (first at steps[1])", 1
    ),
    Case(
        "goto-nowhere",
        _goto_nowhere,
        "goto: nowhere",
        "steps[2].on_failure.goto",
        "goto 'nowhere': no step with that id",
    ),
    Case(
        "call-missing",
        _call_missing,
        "procedure: redis/does-not-exist",
        "steps[2].call.procedure",
        "call 'redis/does-not-exist': no such procedure",
    ),
    Case(
        "register-later",
        _register_later,
        "when: gone",
        "steps[1].when",
        "undeclared name 'gone': not a param, an earlier register, or a built-in (it is registered by a later step)",
    ),
    Case("param-typo", _param_typo, '"tenant:{{ tenantt }}', "steps[1].redis.command[1]", "undeclared name 'tenantt'"),
    Case("del-no-confirm", _del_without_confirm, "id: delete", "steps[1]", "a destructive step needs a 'confirm' text"),
    Case("ssh-no-confirm", _ssh_without_confirm, "id: log", "steps[2]", "a destructive step needs a 'confirm' text"),
    Case(
        "ssh-read-cp",
        _ssh_read('"cp /var/backups/redis/old.rdb /var/lib/redis/dump.rdb"'),
        'run: "cp',
        "steps[2].ssh.run",
        "effect: read, but 'cp' is not a read-only program",
    ),
    Case(
        "ssh-read-redirect",
        _ssh_read('"cat /var/backups/redis/old.rdb > /var/lib/redis/dump.rdb"'),
        'run: "cat',
        "steps[2].ssh.run",
        "effect: read, but output redirection '>' writes a file (/var/lib/redis/dump.rdb)",
    ),
    Case(
        "ssh-read-hidden-in-substitution",
        _ssh_read("'ls \"$(c\\p x /var/lib/redis/dump.rdb)\"'"),
        "run: 'ls",
        "steps[2].ssh.run",
        "effect: read, but 'cp' is not a read-only program (written c\\p)",
    ),
    Case(
        "ssh-read-template-as-option",
        _ssh_read('"sort {{ tenant }}"'),
        'run: "sort',
        "steps[2].ssh.run",
        "effect: read, but '{{ tenant }}' may be any option of 'sort' (put '--' before it)",
    ),
    Case("two-actions", _two_actions, "wait: 1s", "steps[2].wait", "a step has exactly one action; found redis, wait"),
    Case("no-action", _no_action, "id: verify", "steps[2]", "a step needs one action: "),
    Case(
        "tenant-no-pattern",
        _tenant_without_pattern,
        "tenant:\n    type: string",
        "params.tenant",
        "a tenant param must restrict its value: pattern: '^[A-Za-z0-9_.-]+$'",
    ),
    Case("bad-type", _bad_type, 'attempts: "x"', "steps[2].retry.attempts", "expected integer, got string 'x'"),
    Case(
        "declared-read-del",
        _declared_read_on_del,
        "effect: read",
        "steps[1].effect",
        "declared 'read' but this redis step is destructive",
    ),
]


def write(tmp_path: Path, text: str, name: str = "proc.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def check(path: Path) -> list[SourceError]:
    _, errors, _ = check_file(path, known_procedures=Catalog([path]).has)
    return errors


def test_the_copy_is_valid(tmp_path: Path) -> None:
    assert check(write(tmp_path, WM_CLEAR)) == []


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_check_file_reports_line_column_path_and_message(tmp_path: Path, case: Case) -> None:
    text = case.build(WM_CLEAR)
    path = write(tmp_path, text)
    line, column = where(text, case.needle, case.nth)
    errors = check(path)
    matching = [e for e in errors if case.fragment in e.message]
    assert matching, f"no error containing {case.fragment!r} in {[str(e) for e in errors]}"
    (error,) = matching
    assert (error.file, error.line, error.column, error.path) == (display_path(path), line, column, case.path)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_validate_prints_file_line_column_path_message_and_exits_2(tmp_path: Path, case: Case) -> None:
    text = case.build(WM_CLEAR)
    path = write(tmp_path, text)
    line, column = where(text, case.needle, case.nth)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    field = f" {case.path}:" if case.path else ""
    assert f"{display_path(path)}:{line}:{column}:{field} {case.fragment}" in result.output
    assert "error(s) in 1 file(s)" in result.output


def test_unknown_option_gets_a_suggestion_when_one_is_close(tmp_path: Path) -> None:
    text = edit(WM_CLEAR, "      keyinfo:", "      keyinfoo:")
    errors = check(write(tmp_path, text))
    assert any(e.message == "unknown option 'keyinfoo' (did you mean 'keyinfo'?)" for e in errors)


def test_unknown_top_level_field_is_a_field_not_an_option(tmp_path: Path) -> None:
    text = edit(WM_CLEAR, "tags: [", "tagz: [x]\ntags: [")
    (error,) = check(write(tmp_path, text))
    assert (error.line, error.column, error.path) == (*where(text, "tagz:"), "")
    assert error.message == "unknown field 'tagz' (did you mean 'tags'?)"


def test_call_to_a_shipped_procedure_is_fine(tmp_path: Path) -> None:
    text = _call_missing(WM_CLEAR).replace("redis/does-not-exist", "redis/health-check")
    assert check(write(tmp_path, text)) == []


def test_ssh_step_declared_read_needs_no_confirm(tmp_path: Path) -> None:
    text = _ssh_read('"tail -n 50 -- /var/log/redis/redis-server.log | grep -c -- {{ tenant }}"')(WM_CLEAR)
    assert check(write(tmp_path, text)) == []


def test_register_used_after_its_step_is_fine(tmp_path: Path) -> None:
    # The counterpart of register-later: the shipped order (register, then use) is accepted.
    text = edit(WM_CLEAR, "    verifies: delete\n", "    verifies: delete\n    register: gone\n")
    assert check(write(tmp_path, text)) == []


def test_default_that_breaks_the_pattern_is_reported(tmp_path: Path) -> None:
    text = edit(WM_CLEAR, "    required: true\n", "    default: 'a*'\n")
    (error,) = check(write(tmp_path, text))
    assert (error.line, error.column, error.path) == (*where(text, "default:"), "params.tenant.default")
    assert error.message.startswith("default: 'a*' does not match")


def test_default_below_the_minimum_is_reported(tmp_path: Path) -> None:
    text = edit(WM_CLEAR, "steps:\n", "  batch:\n    type: integer\n    default: 0\n    minimum: 1\nsteps:\n")
    errors = check(write(tmp_path, text))
    assert [(e.line, e.column, e.path) for e in errors] == [(*where(text, "default: 0"), "params.batch.default")]


def test_all_errors_of_a_file_are_reported_in_one_run(tmp_path: Path) -> None:
    text = _register_later(_param_typo(_goto_nowhere(WM_CLEAR)))
    path = write(tmp_path, text)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert "3 error(s) in 1 file(s)" in result.output
    for fragment in ("undeclared name 'gone'", "undeclared name 'tenantt'", "goto 'nowhere'"):
        assert fragment in result.output


def test_missing_file_is_reported(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_a_yaml_list_is_not_a_procedure(tmp_path: Path) -> None:
    (error,) = check(write(tmp_path, "- a\n- b\n"))
    assert (error.line, error.column) == (1, 1)
    assert "a procedure is a YAML mapping" in error.message


# -- the shipped procedures ------------------------------------------------------------------------
SHIPPED = Catalog().files()


def test_there_are_shipped_procedures() -> None:
    assert {"redis/wm-clear", "redis/health-check"} <= set(Catalog().entries())
    assert len(SHIPPED) >= 2


def test_cli_validate_without_arguments_accepts_every_shipped_procedure() -> None:
    result = CliRunner().invoke(main, ["validate"])
    assert result.exit_code == 0, result.output
    from engine.rehearsal.scenario import scenario_files

    assert f"{len(SHIPPED) + len(scenario_files())} file(s) valid" in result.output


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_each_shipped_procedure_validates(path: Path) -> None:
    _, errors, _ = check_file(path, known_procedures=Catalog().has)
    assert [str(e) for e in errors] == []
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output


def _tenant_params() -> list[tuple[str, str]]:
    out = []
    for path in SHIPPED:
        procedure = load_procedure(path, known_procedures=Catalog().has)
        out.extend((procedure.id, p.name) for p in procedure.params if "tenant" in p.name)
    return out


TENANT_PARAMS = _tenant_params()


def test_some_shipped_procedure_has_a_tenant_param() -> None:
    assert ("redis/wm-clear", "tenant") in TENANT_PARAMS


@pytest.mark.parametrize(("procedure_id", "name"), TENANT_PARAMS, ids=[f"{p}:{n}" for p, n in TENANT_PARAMS])
def test_shipped_tenant_params_are_restricted(procedure_id: str, name: str) -> None:
    procedure = Catalog().load(procedure_id)
    param = procedure.param(name)
    assert param is not None
    assert param.pattern == TENANT_PATTERN == "^[A-Za-z0-9_.-]+$"
    others = {p.name: "1" for p in procedure.params if p.required and p.name != name}
    assert resolve(procedure.params, {**others, name: "acme-01_x.y"}, procedure=procedure_id)[name] == "acme-01_x.y"
    for bad in ("a*", "x;id", "a b"):
        with pytest.raises(UsageError, match=f"--var {name}: "):
            resolve(procedure.params, {**others, name: bad}, procedure=procedure_id)


@pytest.mark.parametrize(
    ("command", "refused"),
    [
        ('[EXPIRE, "tenant:{{ tenant }}:wm:active", "{{ ttl }}"]', True),  # a write for any TTL (0 deletes)
        ('[SET, "tenant:{{ tenant }}:wm:active", "{{ ttl }}"]', True),
        ('[CONFIG, SET, maxmemory, "{{ ttl }}"]', True),
        ('[ACL, LOG, "{{ ttl }}"]', False),  # a read for a count, a write for RESET: run time decides
        ('[CONFIG, "{{ ttl }}", maxmemory]', False),  # the subcommand itself is a value
        ('["{{ ttl }}", "tenant:{{ tenant }}:wm:active"]', False),  # so is the command
    ],
)
def test_a_read_label_on_a_command_that_writes_whatever_its_values_is_refused(
    tmp_path: Path, command: str, refused: bool
) -> None:
    """`effect: read` on a Redis command whose values decide only how much it changes is a mislabel."""
    text = edit(WM_CLEAR, "  tenant:\n", "  ttl:\n    type: string\n    default: '1'\n  tenant:\n")
    text = edit(text, DELETE_COMMAND, f"      command: {command}\n")
    text = edit(text, DELETE_CONFIRM, "    effect: read\n" + DELETE_CONFIRM)
    messages = [e.message for e in check(write(tmp_path, text))]
    assert any("declared 'read'" in m for m in messages) is refused, messages
