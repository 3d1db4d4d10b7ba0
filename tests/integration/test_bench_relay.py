"""The benchmark's delaying relay with a real redis-server: bytes go through unchanged, the delay is real."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from bench.relay import read_stats

ONE_WAY_MS = 2.0


def test_relay_forwards_unchanged_adds_its_delay_and_counts_round_trips(redis_server, tmp_path: Path) -> None:
    server = redis_server()
    stats = tmp_path / "relay.stats"
    relay = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.relay",
            "--target",
            f"127.0.0.1:{server.port}",
            "--one-way-ms",
            str(ONE_WAY_MS),
            "--stats",
            str(stats),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert relay.stdout is not None
        port = int(relay.stdout.readline())
        client = redis.Redis(port=port)
        value = bytes(range(256)) * 1000  # binary, bigger than one read of the relay
        client.set("bench:relay", value)
        assert client.get("bench:relay") == value
        assert redis.Redis(port=server.port).get("bench:relay") == value  # what reached the server is what was sent
        pipe = client.pipeline(transaction=False)
        for n in range(100):
            pipe.echo(f"e{n}")
        assert pipe.execute() == [f"e{n}".encode() for n in range(100)]
        began = time.perf_counter()
        client.ping()
        assert time.perf_counter() - began >= 2 * ONE_WAY_MS / 1000  # only a lower bound: the delay guarantees it
        client.close()
        redis_py_turns = _settled_turns(stats)
        raw = socket.create_connection(("127.0.0.1", port))
        for _ in range(3):  # three request/reply turns
            raw.sendall(b"PING\r\n")
            assert _read(raw, 7) == b"+PONG\r\n"
        raw.sendall(b"PING\r\n" * 50)  # a pipeline: one turn
        assert _read(raw, 7 * 50) == b"+PONG\r\n" * 50
        raw.close()
        turns, open_ = _settled_turns(stats), read_stats(stats)[1]
        assert open_ == 0
        assert turns - redis_py_turns == 4
    finally:
        assert relay.stdin is not None
        relay.stdin.close()
        relay.wait(timeout=30)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the relay closed the connection"
        data += chunk
    return data


def _settled_turns(stats: Path) -> int:
    """The relay's turn count once it has seen every connection closed."""
    deadline = time.monotonic() + 120  # a safety net: the relay notices each close at once
    while read_stats(stats)[1]:
        assert time.monotonic() < deadline, "the relay never saw every connection closed"
        time.sleep(0.05)
    return read_stats(stats)[0]
