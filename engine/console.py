"""What the operator reads while a run goes: one line per step, failures with the runbook's advice.

Everything printed has been through the redactor already (the runner redacts at the source).
"""

from __future__ import annotations

import sys
from typing import TextIO

import click

from engine.runner import StepRecord

_MARK = {
    "ok": ("✓", "green"),
    "failed": ("✗", "red"),
    "error": ("!", "red"),
    "skipped": ("-", None),
    "predicted": ("~", "cyan"),
    "refused": ("⊘", "yellow"),
}
_EFFECT = {"read": "[read]", "write": "[WRITE]", "destructive": "[DESTRUCTIVE]", "-": ""}


class Console:
    def __init__(self, out: TextIO | None = None, *, quiet: bool = False):
        self.out = out or sys.stdout
        self.quiet = quiet
        self.colour = self.out.isatty()

    def line(self, text: str = "", *, fg: str | None = None, bold: bool = False) -> None:
        if self.quiet:
            return
        if self.colour and (fg or bold):
            text = click.style(text, fg=fg, bold=bold)
        click.echo(text, file=self.out)

    def step(self, record: StepRecord) -> None:
        mark, colour = _MARK.get(record.outcome, ("?", None))
        indent = "  " * (record.depth + 1)
        effect = _EFFECT.get(record.effect, record.effect)
        timing = f"{record.duration_ms:.0f} ms" if record.outcome not in ("skipped",) else "skipped"
        head = f"{indent}{mark} {record.name}"
        self.line(f"{head:<58} {effect:<14} {timing:>9}", fg=colour)
        if record.summary:
            self.line(f"{indent}    {record.summary}")
        if record.outcome == "predicted":
            self.line(f"{indent}    dry-run: would run, not sent", fg="cyan")
        for expectation in record.expectations:
            if expectation["held"] is False:
                colour_e = "red" if expectation["severity"] == "critical" else "yellow"
                self.line(f"{indent}    {expectation['severity'].upper()}: {expectation['message']}", fg=colour_e)
            elif expectation["held"] is None:
                reason = expectation.get("reason", "predicted")
                self.line(f"{indent}    {reason}: {expectation['that']}", fg="cyan")
        if (
            record.outcome in ("error", "failed", "refused")
            and record.message
            and not any(e["held"] is False and e["message"] == record.message for e in record.expectations)
        ):
            self.line(f"{indent}    {record.message}", fg="red")
        if record.advice:
            self.line(f"{indent}    advice: {record.advice}", fg="yellow")
