"""`rehearse --jobs N`: independent rehearsals (or mutants) in N worker processes, results in input order.

Processes, not threads: a rehearsal's time limit is a SIGALRM, which only a main thread receives. Each
worker turns SIGTERM into KeyboardInterrupt, as the command itself does, so a rehearsal stopped half-way
still tears its world down; Ctrl-C or SIGTERM on the command stops every worker that way, then exits.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Call:
    """A module-level function and its (picklable) arguments."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


_busy = False  # in a worker: a call is running (its rehearsal must hear the signal and tear down)


def _interrupt(signum: int, frame: object) -> None:
    if not _busy:  # idle, waiting for work: nothing to tear down, and no traceback from the pool's loop
        os._exit(128 + signum)
    raise KeyboardInterrupt


def _run(call: Call) -> Any:
    global _busy
    _busy = True
    try:
        return call.fn(*call.args, **call.kwargs)
    finally:
        _busy = False


def _worker_setup() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def run(
    calls: list[Call],
    jobs: int,
    on_done: Callable[[int, Any], None] = lambda i, r: None,
    *,
    start_method: str = "fork",
) -> list[Any]:
    """Every call's result, in the order of `calls`; `on_done(index, result)` as each one finishes.

    "fork" (the command's default: its one thread, its imports ready) or "spawn" (a caller with threads
    of its own, such as a test session)."""
    results: list[Any] = [None] * len(calls)
    context = multiprocessing.get_context(start_method)
    executor = ProcessPoolExecutor(
        max_workers=min(jobs, len(calls)) or 1, mp_context=context, initializer=_worker_setup
    )
    try:
        pending: dict[Future[Any], int] = {executor.submit(_run, c): i for i, c in enumerate(calls)}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                results[index] = future.result()
                on_done(index, results[index])
    except BaseException:
        _stop_workers(executor)
        raise
    executor.shutdown(wait=True)
    return results


def _stop_workers(executor: ProcessPoolExecutor) -> None:
    """SIGTERM each worker (its rehearsal tears the world down), then wait for all of them to exit."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive() and process.pid is not None:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for process in processes:
        process.join(60)
