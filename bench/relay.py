"""A delaying TCP relay: a network between the operator and Redis, on a machine without netem.

Every chunk read from one side is written to the other `one_way` seconds after it arrived, in order,
so a request/reply round trip grows by twice that, and bandwidth is not limited (a pipeline is
delayed once, not per command), as on a real network. It forwards bytes only: no framing, no parsing.

It also counts round trips without parsing the protocol: a turn begins each time the client sends
after having received (or for the first time), which is what a request/reply client pays a round
trip for; a pipeline sent in several chunks before any reply counts once.

Run as `python -m bench.relay --target HOST:PORT --one-way-ms 0.5 --stats FILE`: it prints the port it
listens on (127.0.0.1 only), then serves until stdin closes or SIGTERM. The stats file holds
`<turns> <open connections>` and is rewritten whenever a connection opens or closes.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path


class DelayLine:
    """Chunks in arrival order, each due `one_way` seconds after it arrived (pure: time is passed in)."""

    def __init__(self, one_way: float) -> None:
        if one_way < 0:
            raise ValueError("the delay cannot be negative")
        self.one_way = one_way
        self._queue: collections.deque[tuple[float, bytes]] = collections.deque()

    def push(self, data: bytes, now: float) -> None:
        self._queue.append((now + self.one_way, data))

    def next_due(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def pop_due(self, now: float) -> bytes:
        """All bytes due by `now`, joined in order (b'' when none is due yet)."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            out.append(self._queue.popleft()[1])
        return b"".join(out)

    def __len__(self) -> int:
        return len(self._queue)


class TurnCounter:
    """Round trips of a request/reply conversation, counted from the direction of the traffic alone."""

    def __init__(self) -> None:
        self.turns = 0
        self._client_spoke_last: bool | None = None

    def client_sent(self) -> None:
        if self._client_spoke_last is not True:
            self.turns += 1
        self._client_spoke_last = True

    def server_sent(self) -> None:
        self._client_spoke_last = False


class _Pipe:
    """One direction of one connection: a reader thread fills the delay line, a writer drains it when due."""

    def __init__(self, source: socket.socket, sink: socket.socket, one_way: float, on_data: Callable[[], None]) -> None:
        self.source, self.sink, self.on_data = source, sink, on_data
        self.line = DelayLine(one_way)
        self.ready = threading.Condition()
        self.closed = False

    def read(self) -> None:
        try:
            while data := self.source.recv(1 << 16):
                self.on_data()
                with self.ready:
                    self.line.push(data, time.monotonic())
                    self.ready.notify()
        except OSError:
            pass
        with self.ready:
            self.closed = True
            self.ready.notify()

    def write(self) -> None:
        try:
            while True:
                with self.ready:
                    while True:
                        due = self.line.next_due()
                        if due is None:
                            if self.closed:
                                return
                            self.ready.wait()
                            continue
                        wait = due - time.monotonic()
                        if wait <= 0:
                            break
                        self.ready.wait(wait)
                    data = self.line.pop_due(time.monotonic())
                self.sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                self.sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass


class Relay:
    """Listens on 127.0.0.1 (a free port) and relays every connection to `target` with the delay."""

    def __init__(self, target: tuple[str, int], one_way: float, stats: Path | None = None) -> None:
        self.target, self.one_way, self.stats = target, one_way, stats
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.turns = 0
        self.open = 0
        self._lock = threading.Lock()

    def serve_forever(self) -> None:
        self._write_stats()
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        counter = TurnCounter()
        lock = threading.Lock()

        def client_sent() -> None:
            with lock:
                counter.client_sent()

        def server_sent() -> None:
            with lock:
                counter.server_sent()

        with self._lock:
            self.open += 1
        self._write_stats()
        up = _Pipe(client, upstream, self.one_way, client_sent)
        down = _Pipe(upstream, client, self.one_way, server_sent)
        threads = [threading.Thread(target=f, daemon=True) for f in (up.read, up.write, down.read, down.write)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.close()
        upstream.close()
        with self._lock:
            self.turns += counter.turns
            self.open -= 1
        self._write_stats()

    def _write_stats(self) -> None:
        if self.stats is None:
            return
        with self._lock:
            text = f"{self.turns} {self.open}\n"
            partial = self.stats.with_name(f".{self.stats.name}.{threading.get_ident()}")
            partial.write_text(text)
            os.replace(partial, self.stats)


def read_stats(path: Path) -> tuple[int, int]:
    """(turns so far, connections open) from the relay's stats file."""
    turns, open_ = path.read_text().split()
    return int(turns), int(open_)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--one-way-ms", type=float, required=True, help="delay added in each direction")
    parser.add_argument("--stats", type=Path, help="file to keep '<turns> <open connections>' in")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    sys.setswitchinterval(0.0001)  # the writer threads must wake on time, not after another thread's 5 ms slice
    relay = Relay((host, int(port)), args.one_way_ms / 1000, args.stats)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(relay.port, flush=True)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    sys.stdin.read()  # the parent closing our stdin (or dying) ends the relay
    return 0


if __name__ == "__main__":
    sys.exit(main())
