"""Every way a run can end badly, each with the exit code the CLI promises (docs/cli.md)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

from engine.outcome import RunOutcome


class ExitCode:
    OK = 0
    FINDINGS = 1
    USAGE = 2
    STOPPED = 3
    UNREACHABLE = 4
    INTERRUPTED = 130


class RunbookError(Exception):
    """Base class; `exit_code` is what the CLI exits with when this ends the run.

    `advice`: what the operator can do about it (the runbook's Common Errors text), printed under the
    error and kept in the step's `error.advice`; None when there is nothing useful to add.
    """

    exit_code = ExitCode.UNREACHABLE
    outcome: RunOutcome = RunOutcome.ERROR

    def __init__(self, message: str = "", advice: str | None = None):
        super().__init__(message)
        self.advice = advice


@dataclass(frozen=True)
class SourceError:
    """One problem in an input file, located precisely enough to jump to it in an editor."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class UsageError(RunbookError):
    """Bad input: a malformed procedure or inventory, a bad --var, an unknown procedure id."""

    exit_code = ExitCode.USAGE
    outcome = RunOutcome.USAGE

    def __init__(self, message: str, errors: list[SourceError] | None = None, advice: str | None = None):
        self.errors = list(errors or [])
        if self.errors:
            message = message + "\n" + "\n".join(f"  {e}" for e in self.errors)
        super().__init__(message, advice)


class StoppedError(RunbookError):
    """The operator declined, or nobody could be asked: nothing past this point was changed."""

    exit_code = ExitCode.STOPPED
    outcome = RunOutcome.STOPPED


class TargetError(RunbookError):
    """A target could not be reached, refused our credentials, or an action failed outright."""

    exit_code = ExitCode.UNREACHABLE
    outcome = RunOutcome.ERROR


class MutationRefused(TargetError):
    """An adapter refused a command that would change state while mutation is forbidden (dry-run)."""


class HostKeyError(TargetError):
    """The SSH host presented a key we do not know or one that changed."""


class ActionFailed(TargetError):
    """The action reached its target and was refused there (a Redis error reply, a failed HTTP call)."""


class TranscriptUnwritable(RunbookError):
    """The transcript could not be written (disk full, I/O error): without evidence nothing may change."""

    exit_code = ExitCode.UNREACHABLE
    outcome = RunOutcome.ERROR


class StepAborted(Exception):
    """A step failed and its on_failure says abort: the run (or the enclosing block) stops here.

    Not a RunbookError: no kind's `except RunbookError` may take a procedure's own abort for a failure
    of its action. `exit_code` is the failed step's (1 for an expectation, 4 for an error, ...).
    """

    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(BaseException):
    """SIGINT, SIGTERM, SIGHUP or SIGQUIT (or a lost stdout, as SIGPIPE): stop, record it, exit 128+signum.

    A BaseException so that no `except Exception` on the way up mistakes it for a step failure.
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    def __reduce__(self) -> tuple[type[Interrupted], tuple[int]]:  # crosses `rehearse --jobs`'s pipe
        return Interrupted, (self.signum,)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def handling_interruption() -> bool:
    """An interruption (Interrupted or KeyboardInterrupt) is being handled: an `except` or `finally` block it
    reached runs, its own exceptions included. A signal handler asks before raising another one.

    Why not a flag set when the first one is raised: an exception raised in a signal handler that runs inside
    a finalizer (`__del__`, a weakref callback) is printed and dropped, and the interrupted code goes on as if
    no signal had come. A handler that stops listening after raising would then never stop the run."""
    exc = sys.exc_info()[1]
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Interrupted | KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


def redeliver_dropped_interruptions(hook: Any) -> None:
    """`sys.unraisablehook`: an interruption raised inside a finalizer, which Python drops, arrives again as its
    signal 50 ms later (outside the finalizer, whose end a handler run from here could not outlive), instead of
    being printed as a traceback; anything else goes to the default hook."""
    exc = hook.exc_value
    if isinstance(exc, Interrupted | KeyboardInterrupt):
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        timer = threading.Timer(REDELIVER_S, _redeliver, (signum,))
        timer.daemon = True
        timer.start()
    else:
        sys.__unraisablehook__(hook)


REDELIVER_S = 0.05


def _redeliver(signum: int) -> None:
    """The signal again, sent to the main thread: by now it may be blocked in a read (a server that never
    answers, a 300 s socket timeout), which only a real signal interrupts. `_thread.interrupt_main` merely
    marks the signal for the next bytecode, and a diagnose interrupted that way waited out its timeout.
    A signal whose handler is no longer Python's (the run has restored SIG_DFL) is not sent: it would kill
    the process where the dropped one would have raised."""
    main = threading.main_thread().ident
    if main is not None and callable(signal.getsignal(signum)):
        with contextlib.suppress(OSError):  # the main thread has ended: the process is on its way out
            signal.pthread_kill(main, signum)
