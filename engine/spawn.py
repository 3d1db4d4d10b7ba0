"""Start a child process that must not be orphaned by a signal.

A signal whose handler raises (Ctrl-C, SIGTERM from `rehearse --jobs`, a hang-up) can land inside
`subprocess.Popen` after the child exists but before Popen returns it. The exception then leaves a child
that nobody holds, and a server started in a session of its own (redis-server, sshd) outlives everything.
Inside `signals_deferred()` those signals are only noted; once the block has handed the child to its owner,
each noted signal is raised again through the handler it would have met.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

DEFERRED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM, SIGHUP and SIGQUIT for the block (keep it short: a start and its hand-over)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread has handlers
        yield
        return
    noted: list[int] = []
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in DEFERRED:
            previous[sig] = signal.signal(sig, lambda signum, frame: noted.append(signum))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    for signum in dict.fromkeys(noted):
        signal.raise_signal(signum)
