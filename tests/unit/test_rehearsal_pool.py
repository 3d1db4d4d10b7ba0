"""`rehearse --jobs`'s worker pool: results in order, exceptions raised in the command, and a stop that lets
every running call tear down once, however the workers stand (one idle, one busy), and never hangs.

The calls are module-level functions (the pool starts its workers with "spawn" here: a test session has
threads); they meet the test through files in a directory it gives them."""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from pathlib import Path

import pytest

from engine.errors import Interrupted, handling_interruption
from engine.rehearsal import pool


def _square(n: int) -> int:
    return n * n


class _Unpicklable(Exception):
    def __init__(self, code: int, message: str):  # pickle rebuilds it with (message,) alone: it cannot
        super().__init__(message)
        self.code = code


def _raise_unpicklable() -> None:
    raise _Unpicklable(3, "a world that would not start")


def _die() -> None:
    os._exit(9)


def _unpicklable_result() -> object:
    return lambda: None  # a local function: pickle cannot send it back


def _quick(directory: str) -> str:
    return "quick"


def _hold_until_stopped(directory: str, signal_itself: bool) -> None:
    """Runs until the command stops it, then tears down: a second signal meanwhile must not cut that short."""
    root = Path(directory)
    try:
        (root / "started").write_text(str(os.getpid()))
        while True:
            time.sleep(0.05)
    except KeyboardInterrupt:
        if signal_itself:  # as a second Ctrl-C or a second SIGTERM would
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)
        (root / "torn-down").write_text("yes")
        raise


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_results_come_back_in_the_order_of_the_calls_and_each_is_reported_once() -> None:
    done: list[int] = []
    calls = [pool.Call(_square, (n,)) for n in range(7)]
    assert pool.run(calls, 3, lambda i, r: done.append(i), start_method="spawn") == [n * n for n in range(7)]
    assert sorted(done) == list(range(7))


def test_an_exception_that_cannot_cross_the_pipe_arrives_as_one_that_says_what_it_was() -> None:
    with pytest.raises(RuntimeError, match="_Unpicklable: a world that would not start"):
        pool.run([pool.Call(_raise_unpicklable), pool.Call(_square, (2,))], 2, start_method="spawn")


def test_a_result_that_cannot_be_sent_back_is_an_error_that_says_so() -> None:
    with pytest.raises(RuntimeError, match="the result could not be sent back"):
        pool.run([pool.Call(_unpicklable_result)], 1, start_method="spawn")


def test_a_worker_that_dies_without_a_result_is_an_error_not_a_hang() -> None:
    with pytest.raises(pool.WorkerDied, match="exit 9"):
        pool.run([pool.Call(_die)], 1, start_method="spawn")


@pytest.mark.parametrize("second_signal", [False, True], ids=["one-signal", "a-second-signal-in-the-teardown"])
def test_a_stop_with_one_worker_idle_and_one_busy_tears_the_busy_one_down_and_ends(
    tmp_path: Path, second_signal: bool
) -> None:
    # concurrent.futures hung here: the idle worker died holding the shared call queue's lock, and the
    # busy one, its teardown done, waited on that lock for ever
    def on_done(index: int, result: object) -> None:
        deadline = time.monotonic() + 60  # a safety net; the busy call writes the file as it starts
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline, "the second call never started"
            time.sleep(0.02)
        raise KeyboardInterrupt  # the operator's Ctrl-C, with one worker idle and one busy

    calls = [pool.Call(_quick, (str(tmp_path),)), pool.Call(_hold_until_stopped, (str(tmp_path), second_signal))]
    with pytest.raises(KeyboardInterrupt):
        pool.run(calls, 2, on_done, start_method="spawn")
    assert (tmp_path / "torn-down").read_text() == "yes"
    assert not _alive(int((tmp_path / "started").read_text()))


def test_an_interruption_crosses_a_pipe_with_its_signal() -> None:
    copy = pickle.loads(pickle.dumps(Interrupted(signal.SIGTERM)))
    assert isinstance(copy, Interrupted) and copy.signum == signal.SIGTERM and copy.exit_code == 143


class _SlowFinalizer:
    """Its finalizer waits for the worker's SIGTERM: the KeyboardInterrupt raised there is dropped by Python."""

    def __del__(self) -> None:
        (Path(os.environ["POOL_TEST_DIR"]) / "in-finalizer").write_text("yes")
        while not pool._stopping:
            time.sleep(0.01)


def _lose_the_first_signal(directory: str, silent_hook: bool) -> None:
    root = Path(directory)
    os.environ["POOL_TEST_DIR"] = directory
    if silent_hook:  # as a library that replaces sys.unraisablehook would: the worker's own is gone
        sys.unraisablehook = lambda hook: None
    try:
        _SlowFinalizer()  # dropped at once: its finalizer runs here and swallows the first KeyboardInterrupt
        (root / "went-on").write_text("yes")
        while True:
            time.sleep(0.05)
    except KeyboardInterrupt:
        (root / "torn-down").write_text("yes")
        raise


@pytest.mark.parametrize("silent_hook", [False, True], ids=["the-worker-sends-it-again", "the-command-sends-it-again"])
def test_a_signal_lost_in_a_finalizer_still_stops_the_call(tmp_path: Path, silent_hook: bool) -> None:
    # the worker's unraisablehook sends the dropped interruption again 50 ms later; where that hook is gone,
    # the command's SIGTERM every RESEND_S does it
    def on_done(index: int, result: object) -> None:
        deadline = time.monotonic() + 60  # a safety net; the call writes the file as its finalizer starts
        while not (tmp_path / "in-finalizer").exists():
            assert time.monotonic() < deadline, "the finalizer never ran"
            time.sleep(0.02)
        raise KeyboardInterrupt

    calls = [pool.Call(_quick, (str(tmp_path),)), pool.Call(_lose_the_first_signal, (str(tmp_path), silent_hook))]
    with pytest.raises(KeyboardInterrupt):
        pool.run(calls, 2, on_done, start_method="spawn")
    assert (tmp_path / "torn-down").read_text() == "yes"
    assert (tmp_path / "went-on").exists(), "the first signal was not lost: the test proves nothing"


def test_an_interruption_is_being_handled_in_its_except_and_finally_blocks_and_what_they_raise() -> None:
    assert not handling_interruption()
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        assert handling_interruption()
        try:
            raise ValueError("a teardown's own error")
        except ValueError:
            assert handling_interruption()
    try:
        try:
            raise Interrupted(signal.SIGTERM)
        finally:
            assert handling_interruption()
    except Interrupted:
        pass
    try:
        raise ValueError("not an interruption")
    except ValueError:
        assert not handling_interruption()
