"""Production traffic beside the operation: paced GET/SET at the Redis under test, every latency recorded.

Why our own and not redis-benchmark: redis-benchmark reports one histogram per run, and the benchmark
needs the latency of the requests sent *during* each operation (ours, the reference, idle) from one
continuous stream. Each request is due at a fixed rate (open loop) on each of `--clients` connections;
its latency is counted from when it was due, not from when it was sent, so a request held up behind a
long server-side call is charged the whole wait, and so are those queued behind it (no coordinated
omission). Keys are `bench:load:<n>` (100 of them, TTL one hour), outside every tenant.

Each request also gets a second figure, its service latency: from when it was sent, unless it had to
wait for its connection (the previous reply came after it fell due: then from when it was due, as
above). The generator is a Python process on the machine it measures, and it wakes up late for its own
reasons (0.5 ms at the median on this 2-core VM, idle); the first figure charges that lateness to Redis,
the second does not, and isolates what Redis itself added (docs/performance.md).

Run as `python -m bench.load --port P --out FILE`: it writes float64 triples (due_at monotonic, latency
from due, service latency; seconds) to FILE until stdin closes or SIGTERM, then flushes and exits.
"""

from __future__ import annotations

import argparse
import array
import selectors
import signal
import socket
import sys
import threading
import time
from pathlib import Path

KEYS = 100


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def requests() -> list[bytes]:
    """The cycle of requests: SET then GET of each key in turn."""
    out = []
    for n in range(KEYS):
        key = b"bench:load:%d" % n
        out.append(_command(b"SET", key, b"x" * 64, b"EX", b"3600"))
        out.append(_command(b"GET", key))
    return out


def reply_complete(buffer: bytes) -> int:
    """Length of the first complete reply of a simple GET/SET in `buffer`, 0 if not complete yet."""
    end = buffer.find(b"\r\n")
    if end < 0:
        return 0
    if buffer[:1] == b"$":
        size = int(buffer[1:end])
        if size < 0:
            return end + 2
        total = end + 2 + size + 2
        return total if len(buffer) >= total else 0
    return end + 2  # +OK, -ERR, :n


class _Client:
    def __init__(self, port: int, offset: float, interval: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.interval = interval
        self.next_due = time.monotonic() + offset
        self.pending: float | None = None  # due time of the request in flight
        self.charged = 0.0  # when its service latency counts from
        self.free_at = 0.0  # when the previous reply arrived
        self.buffer = b""
        self.cycle = requests()
        self.n = 0


def run(port: int, out: Path, rate: float, clients: int, stop: list[bool]) -> None:
    interval = clients / rate
    conns = [_Client(port, i * interval / clients, interval) for i in range(clients)]
    selector = selectors.DefaultSelector()
    for c in conns:
        selector.register(c.sock, selectors.EVENT_READ, c)
    samples = array.array("d")
    with open(out, "wb") as sink:
        while not stop[0]:
            now = time.monotonic()
            for c in conns:
                if c.pending is None and now >= c.next_due:
                    c.pending = c.next_due
                    c.next_due += c.interval
                    c.charged = charged_from(c.pending, time.monotonic(), c.free_at)
                    c.sock.sendall(c.cycle[c.n % len(c.cycle)])
                    c.n += 1
            waiting = [c.next_due for c in conns if c.pending is None]
            timeout = max(0.0, min(waiting) - time.monotonic()) if waiting else 0.05
            for key, _ in selector.select(min(timeout, 0.05)):
                c = key.data
                try:
                    data = c.sock.recv(65536)
                except OSError:
                    data = b""
                if not data:  # the server went away: the benchmark is over
                    stop[0] = True
                    break
                c.buffer += data
                if c.pending is not None and (size := reply_complete(c.buffer)):
                    done = time.monotonic()
                    samples.extend((c.pending, done - c.pending, done - c.charged))
                    c.free_at = done
                    c.buffer = c.buffer[size:]
                    c.pending = None
            if len(samples) >= 30_000:
                samples.tofile(sink)
                sink.flush()
                del samples[:]
        samples.tofile(sink)


def charged_from(due: float, sent: float, free_at: float) -> float:
    """When a request's service latency counts from: when it was due if it waited for its connection (the
    previous reply came after that), else when it was sent (the generator's own lateness is not Redis's)."""
    return due if free_at > due else sent


def read_samples(path: Path, service: bool = False) -> list[tuple[float, float]]:
    """(due_at, latency) of every request in FILE: latency from when it was due, or its service latency."""
    data = array.array("d")
    data.frombytes(path.read_bytes())
    return list(zip(data[0::3], data[2::3] if service else data[1::3], strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second, all clients together")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))

    def watch_stdin() -> None:  # the parent closing our stdin (or dying) ends the traffic
        sys.stdin.read()
        stop[0] = True

    threading.Thread(target=watch_stdin, daemon=True).start()
    run(args.port, args.out, args.rate, args.clients, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
