"""A rehearsal's time_limit, enforced while the procedure runs: a procedure polling forever is interrupted.

SIGALRM raises the session's own `Interrupted`, so the run ends the way a Ctrl-C ends it: the step in
flight stops (sleeps, socket reads and lock waits are interrupted by a signal), `run.ended` is written
with outcome `interrupted`, and the rehearsal records it as timed out. Signals reach only the main
thread; elsewhere (a test calling `rehearse` from a thread) the limit is checked after the fact only.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Deadline:
    seconds: float
    fired: bool = False


@contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    from engine.run.session import Interrupted

    state = Deadline(seconds)
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, frame: object) -> None:
        state.fired = True
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield state
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
