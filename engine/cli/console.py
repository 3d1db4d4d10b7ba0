"""What the operator reads while a run goes: one line per step, failures with the runbook's advice.

Everything printed has been through the redactor already (the runner redacts at the source), and
goes through `printable` here before our own colours are added: a key name or value holding a
terminal escape is shown as `\\x1b[...`, never obeyed. If the output goes away mid-run (a closed
pipe, a hung-up terminal) the run is ended as interrupted (SIGPIPE, SIGHUP) rather than by a traceback.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from typing import TYPE_CHECKING, TextIO

import click

from engine.outcome import Outcome
from engine.printable import printable
from engine.spec.model import Effect

if TYPE_CHECKING:  # the runner (and jinja2 with it) is not loaded for the console's sake
    from engine.run.runner import StepRecord

_MARK: dict[str, tuple[str, str | None]] = {
    Outcome.OK: ("✓", "green"),
    Outcome.FAILED: ("✗", "red"),
    Outcome.ERROR: ("!", "red"),
    Outcome.SKIPPED: ("-", None),
    Outcome.PREDICTED: ("~", "cyan"),
    Outcome.REFUSED: ("⊘", "yellow"),
}
_EFFECT = {str(e): e.marker for e in Effect} | {"-": ""}  # "-": a skipped step, whose effect was not decided


class Console:
    def __init__(self, out: TextIO | None = None, *, quiet: bool = False):
        self.out = out or sys.stdout
        self.quiet = quiet
        self.colour = self.out.isatty()
        self.lost = False  # the output went away: nothing more is written to it

    def line(self, text: str = "", *, fg: str | None = None, bold: bool = False) -> None:
        """One line of display text; control characters in it are shown escaped (newlines kept)."""
        if self.quiet or self.lost:
            return
        text = printable(text, multiline=True)
        if self.colour and (fg or bold):
            text = click.style(text, fg=fg, bold=bold)
        try:
            click.echo(text, file=self.out)
        except OSError as exc:
            self._lose(exc)

    def _lose(self, exc: OSError) -> None:
        """A closed pipe (EPIPE) or a hung-up terminal (EIO): stop writing and end the run as that signal."""
        from engine.run.session import interrupt

        self.lost = True
        silence(self.out)
        interrupt(signal.SIGPIPE if exc.errno == errno.EPIPE else signal.SIGHUP)

    def step(self, record: StepRecord) -> None:
        mark, colour = _MARK.get(record.outcome, ("?", None))
        indent = "  " * (record.depth + 1)
        effect = printable(_EFFECT.get(record.effect, record.effect))
        timing = f"{record.duration_ms:.0f} ms" if record.outcome != Outcome.SKIPPED else "skipped"
        head = f"{indent}{mark} {printable(record.name)}"
        self.line(f"{head:<58} {effect:<14} {timing:>9}", fg=colour)
        if record.summary:
            # a `show` template may lay its text out on several lines: newlines stay, every other control is escaped
            self.line(f"{indent}    {printable(record.summary, multiline=True)}")
        if record.outcome == Outcome.PREDICTED:
            self.predicted(record, indent)
        for expectation in record.expectations:
            if expectation["held"] is False:
                colour_e = "red" if expectation["severity"] == "critical" else "yellow"
                severity = printable(str(expectation["severity"]).upper())
                self.line(f"{indent}    {severity}: {printable(expectation['message'], multiline=True)}", fg=colour_e)
            elif expectation["held"] is None:
                reason = expectation.get("reason", "predicted")
                self.line(f"{indent}    {printable(reason)}: {printable(expectation['that'])}", fg="cyan")
        if (
            record.outcome in (Outcome.ERROR, Outcome.FAILED, Outcome.REFUSED)
            and record.message
            and not any(e["held"] is False and e["message"] == record.message for e in record.expectations)
        ):
            self.line(f"{indent}    {printable(record.message, multiline=True)}", fg="red")
        if record.advice:
            self.line(f"{indent}    advice: {printable(record.advice, multiline=True)}", fg="yellow")
        for item in record.follow_up:
            kind = printable(str(item.get("kind", ""))).upper()
            self.line(f"{indent}    FOLLOW UP ({kind}): {printable(item.get('text', ''), multiline=True)}", fg="yellow")

    def predicted(self, record: StepRecord, indent: str) -> None:
        """A dry-run's change as the gate would have shown it: where, the command, the blast radius, the change."""
        from engine.run.gate import render_blast_radius
        from engine.timeline.changes import changes_text

        where = f" on {printable(record.where)}" if record.where else ""
        if record.command:
            self.line(f"{indent}    dry-run: would run{where}, not sent: {printable(record.command)}", fg="cyan")
        else:
            self.line(f"{indent}    dry-run: would run{where}, not sent", fg="cyan")
        for text in render_blast_radius(record.blast_radius or {}):
            self.line(f"{indent}    {printable(text)}", fg="cyan")
        for text in changes_text(record.predicted_changes):
            self.line(f"{indent}    would change: {printable(text)}", fg="cyan")


def silence(stream: TextIO) -> None:
    """Point a lost stream's descriptor at /dev/null, so the flush at exit cannot fail with a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
