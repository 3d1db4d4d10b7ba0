"""The human at the keyboard: questions, confirmations and typed answers, never a hang.

When nobody can answer (no terminal), every question raises StoppedError at once instead of
waiting; the caller decides whether `--yes` or a `--var` value stands in for the answer.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
from dataclasses import dataclass
from typing import TextIO

import click

from engine.errors import StoppedError


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER") or f"uid-{os.getuid()}"


@dataclass
class Operator:
    name: str
    interactive: bool
    assume_yes: bool = False
    out: TextIO = sys.stderr

    @classmethod
    def from_environment(cls, *, name: str | None, assume_yes: bool) -> Operator:
        interactive = sys.stdin is not None and sys.stdin.isatty()
        return cls(name=name or current_user(), interactive=interactive, assume_yes=assume_yes)

    def _need_terminal(self, what: str) -> None:
        if not self.interactive:
            raise StoppedError(f"{what}: no terminal to ask on")

    def tell(self, text: str) -> None:
        click.echo(text, file=self.out)

    def ask(
        self, question: str, *, secret: bool = False, pattern: str | None = None, default: str | None = None
    ) -> str:
        self._need_terminal(question)
        while True:
            try:
                value = click.prompt(question, hide_input=secret, default=default, show_default=not secret, err=True)
            except click.Abort:
                raise StoppedError(f"{question}: no answer (input closed)") from None
            if pattern is None or re.search(pattern, str(value)):
                return str(value)
            click.echo(f"  must match {pattern}", err=True)

    def confirm(self, question: str) -> bool:
        self._need_terminal(question)
        try:
            answer = click.prompt(f"{question} [y/N]", default="", show_default=False, err=True)
        except click.Abort:
            return False
        return str(answer).strip().lower() in ("y", "yes")

    def type_exact(self, question: str, expected: str) -> bool:
        self._need_terminal(question)
        try:
            answer = click.prompt(question, default="", show_default=False, err=True)
        except click.Abort:
            return False
        return str(answer).strip() == expected
