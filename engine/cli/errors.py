"""How every `runbook` command ends on an error: `runbook: <message>` (and any advice) on stderr, then
the error's exit code (docs/cli.md). One place for the main CLI and the sub-CLIs (timeline, rehearse,
triage), which import it downward; it imports nothing of theirs and no heavy library.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from engine.errors import RunbookError
from engine.printable import printable


def say(text: str, *, err: bool = False) -> None:
    """Echo text that may hold outside data (file content, params, server replies), made printable.

    A closed stdout or a hung-up terminal makes it silent instead of a traceback at exit.
    """
    stream = sys.stderr if err else sys.stdout
    try:
        click.echo(printable(text, multiline=True), file=stream)
    except OSError:
        from engine.cli.console import silence

        silence(stream)


def fail(exc: RunbookError) -> NoReturn:
    """Print the error (and its advice, when it has one) and exit with its code."""
    say(f"runbook: {exc}", err=True)
    advice = getattr(exc, "advice", None)
    if advice:
        say(f"advice: {advice}", err=True)
    sys.exit(exc.exit_code)
