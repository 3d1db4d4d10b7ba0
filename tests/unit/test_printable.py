"""What reaches a terminal from outside is printable: the one function, the console, the gate's panel."""

from __future__ import annotations

import io
import json
import os

import click
import pytest

from engine.printable import printable
from engine.run.gate import ApprovalRequest, render_request
from engine.spec.model import Effect
from tests.hostile_text import BIDI, EVERY_CONTROL, SEQUENCES, hostile_strings, raw_controls


@pytest.mark.parametrize("text", hostile_strings())
@pytest.mark.parametrize("multiline", [False, True])
def test_nothing_a_terminal_would_obey_survives(text: str, multiline: bool) -> None:
    shown = printable(text, multiline=multiline)
    assert raw_controls(shown) == []
    assert "\r" not in shown and "\x1b" not in shown
    assert printable(shown, multiline=multiline) == shown  # idempotent: already plain text
    if not multiline:
        assert "\n" not in shown and "\t" not in shown


@pytest.mark.parametrize("ch", EVERY_CONTROL)
def test_each_control_is_shown_as_a_visible_escape(ch: str) -> None:
    shown = printable(f"a{ch}b")
    assert shown.startswith("a") and shown.endswith("b") and len(shown) > 3
    assert shown[1] == "\\"


def test_escapes_read_like_python() -> None:
    assert printable("tenant:evil\x1b[5m:wm:active") == "tenant:evil\\x1b[5m:wm:active"
    assert printable("\u202eexe.txt") == "\\u202eexe.txt"
    assert printable("done\rFAKE OK") == "done\\rFAKE OK"
    assert printable("a\nb\tc") == "a\\nb\\tc"
    assert printable("a\nb\tc", multiline=True) == "a\nb\tc"
    assert printable("\x85\x9b") == "\\x85\\x9b"
    assert printable("\udc80") == "\\udc80"  # an undecodable byte kept by surrogateescape


def test_ordinary_text_is_untouched() -> None:
    for text in ["tenant:acme:wm:active", "Größe 4 GB ✓ ⊘ — ünïcödé 日本語 🙂", "a\u00a0b", "C:\\path"]:
        assert printable(text) == text


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _record(text: str):
    from engine.run.runner import StepRecord

    return StepRecord(
        id="s",
        name=f"step {text}",
        outcome="failed",
        effect="read",
        result=None,
        summary=f"summary {text}",
        duration_ms=1.0,
        message=f"message {text}",
        advice=f"advice {text}",
        expectations=[{"held": False, "severity": "critical", "message": f"expect {text}", "that": "x"}],
    )


@pytest.mark.parametrize("text", hostile_strings())
def test_console_shows_server_data_escaped_and_keeps_its_own_colours(text: str) -> None:
    from engine.cli.console import Console

    out = _Tty()
    Console(out).step(_record(text))
    written = out.getvalue()
    assert raw_controls(written, pty=True) == []
    assert "\x1b[31m" in written  # our own colour is still there


@pytest.mark.parametrize("text", hostile_strings())
def test_gate_panel_shows_everything_escaped(text: str) -> None:
    request = ApprovalRequest(
        step_id="x",
        step_name=f"Delete {text}",
        effect=Effect.DESTRUCTIVE,
        where=f"redis://h:1/0 {text}",
        command=f"UNLINK {text}",
        command_sha256="0" * 64,
        target_name=f"prod {text}",
        confirm=f"Really {text}?",
        blast_radius={
            "keys": [{"key": f"k{text}", "exists": True, "type": "string", "length": 1, "memory": 1, "ttl": -1}],
            "key_count": 1,
            "sample": [f"s{text}"],
            "count": 1,
            "other": text,
        },
    )
    panel = render_request(request)
    assert raw_controls(panel, pty=True) == []
    assert panel.count("\n") == click.unstyle(panel).count("\n")  # no line added by the data


def test_operator_question_is_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.run import operator as operator_module
    from engine.run.operator import Operator

    monkeypatch.setattr(operator_module, "read_line", lambda fd, echo=True: "n")
    out = io.StringIO()
    target = "prod" + "".join(BIDI) + SEQUENCES[0]
    with open(os.devnull) as nothing:
        Operator("bob", interactive=True, out=out, input=nothing).type_exact(f"Type '{target}'", target)
    asked = out.getvalue()
    assert raw_controls(asked) == [] and "\\u202e" in asked and "\\x1b[5m" in asked


def test_cli_errors_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli.main import fail
    from engine.errors import UsageError

    hostile = hostile_strings()[-1]
    with pytest.raises(SystemExit) as exit_info:
        fail(UsageError(f"--var tenant={hostile}: not a tenant name"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert raw_controls(err) == [] and "\\x1b]0;pwned\\x07" in err


def test_json_output_escapes_controls_by_itself() -> None:
    """--json stays exact (the data as it is) and is still safe to print: JSON escapes controls."""
    hostile = hostile_strings()[-1]
    text = json.dumps({"key": hostile})
    assert raw_controls(text) == [] and json.loads(text)["key"] == hostile


def test_operator_tell_escapes_unless_the_caller_built_safe_text() -> None:
    from engine.run.operator import Operator

    out = _Tty()  # click keeps colours only on a terminal
    operator = Operator("bob", interactive=True, out=out)
    operator.tell(f"  NOTE: {hostile_strings()[-1]}")
    assert raw_controls(out.getvalue()) == []
    operator.tell(click.style("ours", fg="red"), display_safe=True)
    assert "\x1b[31m" in out.getvalue()


def test_console_keeps_the_lines_a_show_template_lays_out() -> None:
    from engine.cli.console import Console

    out = io.StringIO()
    record = _record("x")
    Console(out).step(
        type(record)(**{**record.__dict__, "summary": "3 keys in 2 tenants\n      acme: 2 keys\n      globex: 1 key"})
    )
    assert "\n      acme: 2 keys\n      globex: 1 key" in out.getvalue()
