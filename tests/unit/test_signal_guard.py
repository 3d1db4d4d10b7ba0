"""The run's signal guard: the first signal ends the run, later ones do not cut its recording short, and a
second one still ends it when the first one's Interrupted was dropped (raised inside a finalizer)."""

from __future__ import annotations

import signal
import sys

import pytest

from engine.errors import Interrupted
from engine.run.session import _SignalGuard


def test_the_first_signal_raises_and_one_during_its_handling_is_ignored() -> None:
    guard = _SignalGuard()
    with pytest.raises(Interrupted):
        try:
            guard.handler(signal.SIGINT, None)
        except Interrupted:
            guard.handler(signal.SIGTERM, None)  # the run is ending: ignored, not raised over the first
            raise
    assert guard.received == [signal.SIGINT, signal.SIGTERM]


def test_a_second_signal_ends_the_run_when_a_finalizer_dropped_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    guard = _SignalGuard()
    dropped: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda hook: dropped.append(hook.exc_value))

    class Finalized:
        def __del__(self) -> None:  # where a signal's handler may run: what it raises there is dropped
            guard.handler(signal.SIGINT, None)

    Finalized()
    assert len(dropped) == 1 and isinstance(dropped[0], Interrupted)
    with pytest.raises(Interrupted):  # the operator's second Ctrl-C
        guard.handler(signal.SIGINT, None)


def test_once_the_run_records_its_end_no_signal_raises() -> None:
    guard = _SignalGuard()
    guard.armed = guard.cleanup_interruptible = False  # what the session sets before it writes run.ended
    guard.handler(signal.SIGTERM, None)
    guard.handler(signal.SIGHUP, None)
    assert guard.received == [signal.SIGTERM, signal.SIGHUP]


def test_an_interruption_a_finalizer_dropped_is_sent_again_and_anything_else_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time
    from types import SimpleNamespace

    from engine.errors import redeliver_dropped_interruptions

    heard: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: heard.append(signum))
    reported: list[BaseException] = []
    monkeypatch.setattr(sys, "__unraisablehook__", lambda hook: reported.append(hook.exc_value))
    try:
        redeliver_dropped_interruptions(SimpleNamespace(exc_value=Interrupted(signal.SIGUSR1)))
        deadline = time.monotonic() + 10  # it comes 50 ms later, from a timer: a safety net
        while not heard and time.monotonic() < deadline:
            time.sleep(0.01)
        error = ValueError("a finalizer's own bug")
        redeliver_dropped_interruptions(SimpleNamespace(exc_value=error))
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert heard == [signal.SIGUSR1]
    assert reported == [error]


def test_an_interruption_a_finalizer_dropped_interrupts_a_read_the_main_thread_is_blocked_in() -> None:
    """By the time it is sent again the main thread may wait in a read that nothing will answer (diagnose of
    a Redis that accepts and never replies, its socket timeout minutes away): the second delivery is a real
    signal, which interrupts the read, not a note for the next bytecode, which the read never reaches."""
    import subprocess
    from pathlib import Path

    child = """
import socket, sys
from engine.errors import redeliver_dropped_interruptions
sys.unraisablehook = redeliver_dropped_interruptions

class Finalized:
    def __del__(self):
        raise KeyboardInterrupt  # Python drops it: only the hook hears of it

quiet, _other_end = socket.socketpair()
try:
    Finalized()
    quiet.recv(1)  # nothing ever comes (the signal comes again 50 ms later, wherever it finds this thread)
except KeyboardInterrupt:
    print("interrupted")
"""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", child], cwd=root, capture_output=True, text=True, timeout=120,
        preexec_fn=_sigint_as_on_a_terminal,
    )  # fmt: skip
    assert done.stdout == "interrupted\n" and done.returncode == 0, done.stderr


def _sigint_as_on_a_terminal() -> None:
    """In the child before it runs: SIGINT's default action, whatever this process inherited. A suite started
    in the background by a shell without job control (`pytest &` in a script, CI runners) ignores SIGINT, its
    children inherit that, and Python then leaves SIGINT ignored: nothing here would ever be interrupted."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class _Stopped(Exception):
    pass


def test_a_signal_during_a_start_is_raised_once_the_child_is_held() -> None:
    import os
    import time

    from engine.spawn import signals_deferred

    order: list[str] = []

    def handler(signum: int, frame: object) -> None:
        order.append("handler")
        raise _Stopped

    previous = signal.signal(signal.SIGHUP, handler)
    try:
        with pytest.raises(_Stopped), signals_deferred():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)  # a handler that ran here would have raised here
            order.append("held by its owner")
        assert signal.getsignal(signal.SIGHUP) is handler
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert order == ["held by its owner", "handler"]


@pytest.fixture
def signals_restored():
    """entry() leaves every stop signal to a handler that ends the process: put this process's back."""
    names = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
    saved = {name: signal.getsignal(getattr(signal, name)) for name in names}
    yield
    for name, handler in saved.items():
        signal.signal(getattr(signal, name), handler)


def test_a_signal_landing_while_the_command_exits_keeps_the_status_it_decided(monkeypatch, signals_restored) -> None:
    """A KeyboardInterrupt raised while the SystemExit unwinds (a redelivered or second signal) does not end
    the process by SIGINT (status -2): the decided status stands; a bare one exits 130."""
    import engine.cli.main as cli

    def exits_then_interrupted() -> None:
        try:
            sys.exit(130)
        finally:
            raise KeyboardInterrupt  # as a signal handler would, in click's context exit

    monkeypatch.setattr(cli, "main", exits_then_interrupted)
    with pytest.raises(SystemExit) as exited:
        cli.entry()
    assert exited.value.code == 130

    def decided_one() -> None:
        try:
            sys.exit(1)  # findings
        finally:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli, "main", decided_one)
    with pytest.raises(SystemExit) as exited:
        cli.entry()
    assert exited.value.code == 1

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "main", interrupted)
    with pytest.raises(SystemExit) as exited:
        cli.entry()
    assert exited.value.code == 130


LATE_SIGNAL = """
import os, signal, sys
import engine.cli.main as cli

def decided_three():
    sys.exit(3)

cli.main = decided_three
try:
    cli.entry()
finally:  # a signal that lands while the exit unwinds through the frames above entry (runpy's, say)
    os.kill(os.getpid(), signal.{name})
    signal.pause()  # a handler that raised or returned would leave this process here
"""


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_after_the_status_is_settled_ends_the_process_with_that_status(name) -> None:
    """Without it: a KeyboardInterrupt out of the exit kills the process by SIGINT (-2), a SIGTERM by
    SIGTERM; with it, the process ends at once with the status the command decided."""
    import subprocess

    script = LATE_SIGNAL.format(name=name)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr


INTERRUPTED_STRING_EXEC = """
import sys
import engine.cli.main as cli

def interrupted_in_a_string_exec():  # as a SIGTERM landing while a dataclass builds its methods
    try:
        exec("raise KeyboardInterrupt", {})
    except KeyboardInterrupt:
        sys.exit(130)

cli.main = interrupted_in_a_string_exec
cli.entry()
"""


def test_an_interruption_caught_inside_a_string_exec_still_exits_with_the_status_decided(tmp_path) -> None:
    """Under `python -m` (how the tests and `python -m engine.cli` run it) CPython kills itself by SIGINT
    at exit when a string exec ended in a KeyboardInterrupt, caught or not: entry() clears that note."""
    import os
    import subprocess

    from tests.integration.cli_support import REPO

    (tmp_path / "interrupted_module.py").write_text(INTERRUPTED_STRING_EXEC)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-m", "interrupted_module"], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 130, done.stderr
