"""A production client the test holds: GET after GET on its own connection until the block ends.

The condition a pacing test waits on (another client is active) is held by the test, never by a timer:
the client runs from before the operation starts until after it has ended.
"""

from __future__ import annotations

import threading
from typing import Any


class HeldClient:
    def __init__(self, server: Any) -> None:
        self.client = server.client()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.client.get("bench:load")

    def __enter__(self) -> HeldClient:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
