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
from engine.printable import printable
from engine.run.terminal_input import read_line


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
    input: TextIO | None = None  # None: sys.stdin as it is when asked

    @classmethod
    def from_environment(cls, *, name: str | None, assume_yes: bool) -> Operator:
        interactive = sys.stdin is not None and sys.stdin.isatty()
        return cls(name=name or current_user(), interactive=interactive, assume_yes=assume_yes)

    def _need_terminal(self, what: str) -> None:
        if not self.interactive:
            raise StoppedError(f"{what}: no terminal to ask on")

    def tell(self, text: str, *, display_safe: bool = False) -> None:
        """Show text to the operator, control characters escaped (`display_safe`: the caller built it
        with engine.printable and added its own colours). A terminal that is gone stops the question."""
        try:
            click.echo(text if display_safe else printable(text, multiline=True), file=self.out)
        except OSError as exc:
            raise StoppedError(f"the terminal is gone ({exc.strerror or exc})") from None

    def _prompt(self, question: str, *, secret: bool = False, default: str | None = None) -> str:
        """One answer from the terminal. End of input or a terminal gone (EIO) is 'no answer', never a
        hang; a signal (a hang-up, Ctrl-C) interrupts the wait whenever it comes (engine.run.terminal_input)."""
        shown = printable(question)
        suffix = f" [{printable(default)}]" if default and not secret else ""
        while True:
            try:
                self.out.write(f"{shown}{suffix}: ")
                self.out.flush()
                answer = read_line((self.input or sys.stdin).fileno(), echo=not secret)
                if secret:
                    self.out.write("\n")
            except EOFError:  # the terminal closed (Ctrl-D, a dropped SSH session)
                raise StoppedError(f"{shown.strip()}: no answer (input closed)") from None
            except OSError as exc:
                raise StoppedError(f"{shown.strip()}: no answer (terminal gone: {exc.strerror})") from None
            if answer:
                return answer
            if default is not None:
                return default

    def ask(
        self, question: str, *, secret: bool = False, pattern: str | None = None, default: str | None = None
    ) -> str:
        self._need_terminal(question)
        while True:
            value = self._prompt(question, secret=secret, default=default)
            if pattern is None or re.search(pattern, value):
                return value
            self.tell(f"  must match {printable(pattern)}")

    def confirm(self, question: str) -> bool:
        """y/N; end of input raises StoppedError (a refusal with its reason), as does no terminal."""
        self._need_terminal(question)
        answer = self._prompt(f"{question} [y/N]", default="")
        return answer.strip().lower() in ("y", "yes")

    def type_exact(self, question: str, expected: str) -> bool:
        self._need_terminal(question)
        return self._prompt(question, default="").strip() == expected
