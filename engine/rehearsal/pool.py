"""`rehearse --jobs N`: independent rehearsals (or mutants) in N worker processes, results in input order.

Processes, not threads: a rehearsal's time limit is a SIGALRM, which only a main thread receives.

Not concurrent.futures: its workers share one call queue whose lock a worker holds while it waits for work,
and it SIGTERMs every worker as soon as one exits without a result (an unpicklable exception is enough).
A second SIGTERM cuts a world's teardown short, and a worker that exits holding the lock leaves the others
blocked for ever; `rehearse` then never exits (seen in CI). Here each worker has a pipe of its own, runs in a
process group of its own (a Ctrl-C on the terminal reaches the command alone), and the command is the only
one that signals it: SIGTERM while it runs a call, repeated every RESEND_S until the call has stopped (the
first may be lost: see engine.errors.handling_interruption). It becomes KeyboardInterrupt, so the rehearsal
stopped half-way still tears its world down; one that reaches that teardown is ignored.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from engine.errors import handling_interruption, redeliver_dropped_interruptions

STOP_GRACE_S = 120.0
"""How long the stopped workers get to tear their worlds down, all together, before they are killed."""
RESEND_S = 5.0
"""A worker still running its call this long after a SIGTERM gets another (its first may have been lost)."""


@dataclass(frozen=True)
class Call:
    """A module-level function and its (picklable) arguments."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


class WorkerDied(RuntimeError):
    """A worker process ended without returning its call's result (killed, out of memory)."""


# -- in the worker ---------------------------------------------------------------------------------

_busy = False  # a call was received and its reply is not sent yet: a signal must not end the process
_in_call = False  # the call itself runs: a signal stops it (its rehearsal tears down)
_stopping = False  # the command stops everything: reply, then leave


def _interrupt(signum: int, frame: object) -> None:
    global _stopping
    if not _busy:  # waiting for work: nothing to tear down, and no lock is held (the pipe is its own)
        os._exit(128 + signum)
    _stopping = True
    # the command repeats its signal until the worker is gone: one that reaches a teardown already under way
    # is ignored; one whose KeyboardInterrupt a finalizer dropped (see handling_interruption) raises again
    if _in_call and not handling_interruption():
        raise KeyboardInterrupt


def _picklable(exc: BaseException) -> BaseException:
    """The exception itself when it survives the pipe, else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _serve(conn: Connection, inherited: list[int]) -> None:
    """The worker's loop: a call in, (ok, value) out, until the pipe closes, says None, or a signal came.

    `inherited`: the command's ends of the pipes of the workers forked before this one. Closed here, so
    that the command closing its end is an end of file for that worker, whoever was forked after it."""
    global _busy
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    os.setpgid(0, 0)
    sys.unraisablehook = redeliver_dropped_interruptions  # as the command does (a spawned worker has not)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    while True:
        try:
            call = conn.recv()
        except (EOFError, OSError):
            return
        if call is None:
            return
        reply = _answer(call)
        try:
            conn.send(reply)
        except OSError:  # the command stopped listening
            return
        except Exception as exc:  # a result that cannot be pickled (nothing of it was sent)
            try:
                conn.send((False, RuntimeError(f"the result could not be sent back: {exc!r}")))
            except OSError:
                return
        if _stopping:
            return
        _busy = False


def _answer(call: Call) -> tuple[bool, Any]:
    """(True, result) or (False, exception); a signal after the call returned no longer raises."""
    global _busy, _in_call
    _busy = _in_call = True
    try:
        try:
            return True, call.fn(*call.args, **call.kwargs)
        finally:
            _in_call = False
    except BaseException as exc:  # handed back to the command, which raises it there
        return False, _picklable(exc)


# -- in the command --------------------------------------------------------------------------------


@dataclass
class _Worker:
    process: Any  # multiprocessing.Process of the chosen context
    conn: Connection
    index: int | None = None  # the call it runs


def _start(context: Any, started: list[_Worker]) -> _Worker:
    ours, theirs = context.Pipe()
    forked = context.get_start_method() == "fork"  # a spawned worker inherits no descriptor it is not given
    inherited = [w.conn.fileno() for w in started] + [ours.fileno()] if forked else []
    process = context.Process(target=_serve, args=(theirs, inherited))
    process.start()
    theirs.close()
    try:  # the worker does the same: whichever runs first, no terminal signal reaches it in between
        os.setpgid(process.pid, process.pid)
    except OSError:
        pass
    return _Worker(process, ours)


def run(
    calls: list[Call],
    jobs: int,
    on_done: Callable[[int, Any], None] = lambda i, r: None,
    *,
    start_method: str = "fork",
) -> list[Any]:
    """Every call's result, in the order of `calls`; `on_done(index, result)` as each one finishes.

    A call's exception is raised here, after every worker has been stopped (a KeyboardInterrupt too).
    "fork" (the command's default: its one thread, its imports ready) or "spawn" (a caller with threads
    of its own, such as a test session)."""
    results: list[Any] = [None] * len(calls)
    if not calls:
        return results
    context = multiprocessing.get_context(start_method)
    waiting = deque(range(len(calls)))
    workers: list[_Worker] = []
    try:
        for _ in range(min(jobs, len(calls))):
            workers.append(_start(context, workers))
        for worker in workers:
            _assign(worker, calls, waiting)
        while any(w.index is not None for w in workers):
            busy = [w for w in workers if w.index is not None]
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                if worker.conn not in ready and worker.process.sentinel not in ready:
                    continue
                index, value = _reply(worker)
                results[index] = value
                on_done(index, value)
                _assign(worker, calls, waiting)
    except BaseException:
        _stop(workers)
        raise
    _close(workers)
    return results


def _assign(worker: _Worker, calls: list[Call], waiting: deque[int]) -> None:
    worker.index = waiting.popleft() if waiting else None
    if worker.index is not None:
        worker.conn.send(calls[worker.index])


def _reply(worker: _Worker) -> tuple[int, Any]:
    """The finished call's index and result; its exception is raised."""
    index, worker.index = worker.index, None
    assert index is not None
    try:
        ok, value = worker.conn.recv()
    except (EOFError, OSError):
        worker.process.join(1)
        raise WorkerDied(f"a rehearsal worker ended without a result (exit {worker.process.exitcode})") from None
    if not ok:
        raise value
    return index, value


def _close(workers: list[_Worker]) -> None:
    for worker in workers:
        try:
            worker.conn.send(None)
        except OSError:
            pass
        worker.conn.close()
    for worker in workers:
        worker.process.join()


def _stop(workers: list[_Worker]) -> None:
    """SIGTERM each worker that runs a call (its rehearsal tears its world down), again every RESEND_S while
    it runs; close every pipe (an idle worker leaves); one still there after STOP_GRACE_S is killed (the next
    sandbox start reaps what it left)."""
    running = [w for w in workers if w.index is not None]
    for worker in workers:
        worker.conn.close()
    signalled: dict[int, float] = {}
    deadline = time.monotonic() + STOP_GRACE_S
    while True:
        alive = [w for w in workers if w.process.is_alive()]
        now = time.monotonic()
        if not alive or now >= deadline:
            break
        for worker in alive:
            if worker in running and now - signalled.get(id(worker), -RESEND_S) >= RESEND_S:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGTERM)
                signalled[id(worker)] = now
        wait([w.process.sentinel for w in alive], timeout=min(0.5, deadline - now))
    for worker in workers:
        if worker.process.is_alive():
            worker.process.kill()
            with contextlib.suppress(OSError):
                sys.stderr.write(
                    f"runbook: a rehearsal worker (pid {worker.process.pid}) did not stop in {STOP_GRACE_S:g}s:"
                    " killed; the next sandbox start reaps its servers\n"
                )
        worker.process.join()
