"""One line from the terminal that a signal always interrupts: no lost hang-up at a gate prompt.

`input()` (and click.prompt, getpass) block in C; a signal that lands after the prompt is printed
but before the read starts is only handled once a line is typed, so a hang-up could leave the run
waiting for an answer that cannot come. Here the read waits on the terminal and on a wake-up pipe
that the interpreter writes to on every signal (`signal.set_wakeup_fd`), so the Python handler
(which raises Interrupted) runs whenever the signal arrives.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from collections.abc import Iterator


def read_line(fd: int, *, echo: bool = True) -> str:
    """The next line typed on `fd` (a terminal in canonical mode), without its newline.

    EOFError at end of input (Ctrl-D, a closed terminal); OSError if the terminal is gone (EIO).
    """
    with _wakeup() as wake, _no_echo(fd, enabled=not echo):
        data = b""
        while True:
            readable = [fd] if wake is None else [fd, wake]
            ready, _, _ = select.select(readable, [], [])
            if wake is not None and wake in ready:
                _drain(wake)  # a signal: its handler runs as soon as this returns to Python code
            if fd in ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    if data:
                        break
                    raise EOFError
                data += chunk
                if b"\n" in chunk:
                    break
    return data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace")


@contextlib.contextmanager
def _wakeup() -> Iterator[int | None]:
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    try:
        yield read_end
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


@contextlib.contextmanager
def _no_echo(fd: int, *, enabled: bool) -> Iterator[None]:
    """Typed characters not echoed (a secret), restored however the read ends."""
    if not enabled:
        yield
        return
    import termios

    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSAFLUSH, quiet)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSAFLUSH, saved)
