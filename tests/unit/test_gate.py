"""engine.run.gate: who may approve a non-read step, and the panel the operator reads first (no terminal driven)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import click
import pytest

from engine.errors import StoppedError
from engine.run.gate import ApprovalRequest, Gate, render_blast_radius, render_request
from engine.run.operator import Operator
from engine.spec.model import Effect


def request(effect: Effect = Effect.DESTRUCTIVE, **kwargs: object) -> ApprovalRequest:
    fields: dict[str, object] = {
        "step_id": "delete",
        "step_name": "Delete the tenant's active working memory",
        "effect": effect,
        "where": "redis://cache-1.internal:6379/0",
        "command": "UNLINK tenant:acme:wm:active",
        "command_sha256": "0" * 64,
        "target_name": "staging/cache-1",
        "confirm": "Delete tenant acme's active working memory?",
    }
    fields.update(kwargs)
    return ApprovalRequest(**fields)  # type: ignore[arg-type]


@dataclass
class ScriptedOperator(Operator):
    """An operator whose answers are given in advance; no prompt, no terminal."""

    typed: str = ""
    says_yes: bool = False
    stop: bool = False
    asked: list[str] = field(default_factory=list)

    def confirm(self, question: str) -> bool:
        self.asked.append(question)
        if self.stop:
            raise StoppedError(f"{question}: no answer (input closed)")
        return self.says_yes

    def type_exact(self, question: str, expected: str) -> bool:
        self.asked.append(question)
        if self.stop:
            raise StoppedError(f"{question}: no answer (input closed)")
        return self.typed == expected


# -- decisions ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("interactive", [False, True])
@pytest.mark.parametrize("effect", [Effect.WRITE, Effect.DESTRUCTIVE])
def test_assume_yes_approves_by_flag(interactive: bool, effect: Effect) -> None:
    out = io.StringIO()
    decision = Gate(Operator("alice", interactive=interactive, assume_yes=True, out=out)).review(request(effect))
    assert decision.approved is True
    assert decision.by == "flag"
    assert decision.method == "flag"


@pytest.mark.parametrize("effect", [Effect.WRITE, Effect.DESTRUCTIVE])
def test_no_terminal_and_no_yes_is_refused(effect: Effect) -> None:
    out = io.StringIO()
    decision = Gate(Operator("alice", interactive=False, assume_yes=False, out=out)).review(request(effect))
    assert decision.approved is False
    assert decision.method == "none"
    assert "no terminal" in decision.reason
    assert "--yes" in decision.reason
    assert out.getvalue() == ""  # nothing was asked


def test_destructive_needs_the_target_name_typed() -> None:
    op = ScriptedOperator("alice", interactive=True, out=io.StringIO(), typed="staging/cache-1")
    decision = Gate(op).review(request(Effect.DESTRUCTIVE))
    assert (decision.approved, decision.by, decision.method) == (True, "alice", "typed-target")
    assert op.asked == ["  Type the target name 'staging/cache-1' to proceed"]


@pytest.mark.parametrize("typed", ["", "cache-1", "staging/cache-2", "y"])
def test_destructive_with_a_wrong_name_is_refused(typed: str) -> None:
    op = ScriptedOperator("alice", interactive=True, out=io.StringIO(), typed=typed)
    decision = Gate(op).review(request(Effect.DESTRUCTIVE))
    assert (decision.approved, decision.method, decision.reason) == (False, "typed-target", "wrong target name typed")


def test_write_is_approved_with_yes() -> None:
    op = ScriptedOperator("alice", interactive=True, out=io.StringIO(), says_yes=True)
    decision = Gate(op).review(request(Effect.WRITE))
    assert (decision.approved, decision.by, decision.method) == (True, "alice", "yes")
    assert op.asked == ["  Proceed?"]


def test_write_declined() -> None:
    op = ScriptedOperator("alice", interactive=True, out=io.StringIO(), says_yes=False)
    decision = Gate(op).review(request(Effect.WRITE))
    assert (decision.approved, decision.method, decision.reason) == (False, "yes", "declined")


@pytest.mark.parametrize("effect", [Effect.WRITE, Effect.DESTRUCTIVE])
def test_input_closed_is_a_refusal_not_a_crash(effect: Effect) -> None:
    op = ScriptedOperator("alice", interactive=True, out=io.StringIO(), stop=True)
    decision = Gate(op).review(request(effect))
    assert decision.approved is False
    assert "no answer" in decision.reason


def test_the_panel_is_shown_before_asking() -> None:
    out = io.StringIO()
    Gate(ScriptedOperator("alice", interactive=True, out=out, says_yes=True)).review(request(Effect.WRITE))
    shown = click.unstyle(out.getvalue())
    assert "UNLINK tenant:acme:wm:active" in shown
    assert "staging/cache-1" in shown


def test_real_operator_without_terminal_raises_instead_of_waiting() -> None:
    op = Operator("alice", interactive=False, out=io.StringIO())
    with pytest.raises(StoppedError, match="no terminal"):
        op.confirm("Proceed?")
    with pytest.raises(StoppedError, match="no terminal"):
        op.type_exact("Type it", "x")


# -- the panel ------------------------------------------------------------------------------------------
def test_render_request_shows_what_where_and_why() -> None:
    text = click.unstyle(render_request(request(Effect.DESTRUCTIVE)))
    assert "[DESTRUCTIVE] Delete the tenant's active working memory" in text
    assert "target : staging/cache-1 (redis://cache-1.internal:6379/0)" in text
    assert "command: UNLINK tenant:acme:wm:active" in text
    assert "why    : Delete tenant acme's active working memory?" in text


def test_render_request_marks_writes() -> None:
    text = click.unstyle(render_request(request(Effect.WRITE, confirm=None)))
    assert "[WRITE]" in text
    assert "[DESTRUCTIVE]" not in text
    assert "why" not in text


def test_blast_radius_config_change_shows_current_and_new() -> None:
    blast = {"config": {"maxmemory": {"current": "1073741824", "new": "2gb"}}}
    text = click.unstyle(render_request(request(Effect.WRITE, command="CONFIG SET maxmemory 2gb", blast_radius=blast)))
    assert "command: CONFIG SET maxmemory 2gb" in text
    assert "blast radius (measured now):" in text
    assert "CONFIG maxmemory: '1073741824' -> '2gb'" in text


def test_blast_radius_keys_with_type_ttl_and_a_missing_key() -> None:
    blast = {
        "keys": [
            {"key": "tenant:acme:wm:active", "exists": True, "type": "hash", "length": 3, "memory": 1024, "ttl": -1},
            {"key": "tenant:acme:wm:old", "exists": True, "type": "string", "length": 5, "memory": 56, "ttl": 59.5},
            {"key": "tenant:acme:wm:gone", "exists": False, "type": None, "ttl": None},
        ],
        "key_count": 3,
    }
    text = click.unstyle(render_request(request(blast_radius=blast)))
    assert "tenant:acme:wm:active: hash, 3 items, 1024 bytes, no TTL" in text
    assert "tenant:acme:wm:old: string, 5 items, 56 bytes, TTL 59.5s" in text
    assert "tenant:acme:wm:gone: does not exist" in text
    assert "more keys" not in text


def test_blast_radius_says_how_many_keys_are_not_listed() -> None:
    keys = [{"key": f"k{i}", "exists": True, "type": "string", "ttl": -1} for i in range(20)]
    lines = render_blast_radius({"keys": keys, "key_count": 25})
    assert "  ... 5 more keys" in lines


def test_blast_radius_of_a_flush() -> None:
    lines = render_blast_radius({"keys": 42, "used_memory": 1048576, "used_memory_human": "1.00M", "keyspace": {}})
    assert lines == ["blast radius (measured now):", "  keys affected: 42 (1.00M in use)"]


def test_blast_radius_other_facts_are_shown_as_json() -> None:
    lines = render_blast_radius({"host": "root@cache-1:22"})
    assert lines[-1] == '  {"host": "root@cache-1:22"}'


def test_no_blast_radius_no_section() -> None:
    assert render_blast_radius({}) == []
    assert "blast radius" not in render_request(request())


# -- a change repeated past the runner's caps: --yes does not cover it ---------------------------------
REPEAT = "step 'incr' is about to change something for the 4th time in this run (a goto loop?)"


def test_yes_does_not_cover_a_repeated_change_without_a_terminal() -> None:
    out = io.StringIO()
    op = Operator("alice", interactive=False, assume_yes=True, out=out)
    decision = Gate(op).review(request(Effect.WRITE, repeat=REPEAT))
    assert (decision.approved, decision.method) == (False, "none")
    assert decision.reason == f"{REPEAT}; no terminal to ask on"
    assert out.getvalue() == ""


@pytest.mark.parametrize("says_yes", [True, False])
def test_yes_with_a_terminal_asks_again_for_a_repeated_change(says_yes: bool) -> None:
    out = io.StringIO()
    op = ScriptedOperator("alice", interactive=True, assume_yes=True, out=out, says_yes=says_yes)
    decision = Gate(op).review(request(Effect.WRITE, repeat=REPEAT))
    assert op.asked == ["  Proceed?"]
    assert (decision.approved, decision.by, decision.method) == (says_yes, "alice", "yes")
    assert f"again  : {REPEAT}" in click.unstyle(out.getvalue())
