"""The benchmark keyspace: SomaBrain-shaped, reproducible, built fast and cached as an RDB file.

1,000,000 keys over 200 tenants (`tenant:<t>:wm:<id>`, `tenant:<t>:cache:<id>`): 40% strings of
50-2000 bytes, 30% hashes of 5-20 fields, 15% lists, 15% sets, about 0.1% big outliers, 70% with a
TTL. The protocol is generated here and streamed through `redis-cli --pipe` (C speed); the resulting
dataset is saved once per (keys, seed) under bench/.cache and loaded from there on later runs.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from engine.sandbox import RedisServer, find_binary

CACHE = Path(__file__).resolve().parent / ".cache"
TENANTS = 200


def _resp(*args: bytes | str | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def commands(keys: int, seed: int = 7) -> Iterator[bytes]:
    rng = random.Random(seed)
    pool = bytes(rng.getrandbits(8) % 26 + 97 for _ in range(1 << 16))  # letters; values are slices of it

    def text(n: int) -> bytes:
        start = rng.randrange(0, len(pool) - n)
        return pool[start : start + n]

    for i in range(keys):
        tenant = f"t{i % TENANTS}"
        roll = rng.random()
        big = rng.random() < 0.001
        if roll < 0.40:
            key = f"tenant:{tenant}:cache:{i}"
            yield _resp(b"SET", key, text(rng.randint(50_000, 60_000) if big else rng.randint(50, 2000)))
        elif roll < 0.70:
            key = f"tenant:{tenant}:wm:{i}"
            fields = rng.randint(2000, 5000) if big else rng.randint(5, 20)
            args: list[bytes | str] = [b"HSET", key]
            for j in range(fields):
                args += [f"f{j}", text(rng.randint(8, 40))]
            yield _resp(*args)
        elif roll < 0.85:
            key = f"tenant:{tenant}:wm:{i}"
            yield _resp(
                b"RPUSH",
                key,
                *(text(rng.randint(8, 60)) for _ in range(rng.randint(2000, 5000) if big else rng.randint(3, 30))),
            )
        else:
            key = f"tenant:{tenant}:cache:{i}"
            yield _resp(b"SADD", key, *(f"m{j}" for j in range(rng.randint(2000, 5000) if big else rng.randint(3, 30))))
        if rng.random() < 0.70:
            yield _resp(b"EXPIRE", key, rng.randint(86_400, 7 * 86_400))  # long: nothing expires during a bench


LOAD_TIMEOUT = 600.0  # a 1M-key RDB (about 730 MB) loads in seconds on a quiet machine, minutes on a busy one


def start_loaded(keys: int, seed: int = 7, directory: Path | None = None) -> RedisServer:
    """A redis-server (own temp dir, free port) holding the keyspace; built once, then loaded from the cache.

    The server is stopped on every way out of here but the successful one, so a failed or interrupted
    build never leaves a redis-server behind; the one-off SAVE has no client timeout.
    """
    import tempfile

    cached = CACHE / f"keyspace-{keys}-{seed}.rdb"
    workdir = directory or Path(tempfile.mkdtemp(prefix="runbook-bench-"))
    if cached.exists():
        shutil.copy(cached, workdir / "dump.rdb")
    server = RedisServer.start(directory=workdir, config={"save": ""}, start_timeout=LOAD_TIMEOUT)
    try:
        if cached.exists() and server.client().dbsize() == keys:
            return server
        _build(server, keys, seed)
        save_to_cache(server, cached)
        return server
    except BaseException:
        server.stop()
        if directory is None:
            shutil.rmtree(workdir, ignore_errors=True)  # the copied dataset is hundreds of MB
        raise


def save_to_cache(server: RedisServer, cached: Path) -> None:
    """SAVE (no client timeout: a million keys take longer than any socket timeout on a busy machine),
    then copy the RDB into the cache atomically."""
    server.client(socket_timeout=None).save()
    CACHE.mkdir(exist_ok=True)
    partial = cached.with_name(f".{cached.name}.{os.getpid()}.part")
    shutil.copy(server.directory / "dump.rdb", partial)
    os.replace(partial, cached)  # a cut-off copy never poses as the cache


@contextmanager
def mass_insert(server: RedisServer) -> Iterator[IO[bytes]]:
    """A stream into `redis-cli --pipe` for `server` (emptied first): write RESP commands to it; checked at the end."""
    server.client(socket_timeout=None).flushall()
    cli = find_binary("redis-cli")
    pipe = subprocess.Popen(
        [cli, "-h", server.host, "-p", str(server.port), "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    assert pipe.stdin is not None
    try:
        yield pipe.stdin
        pipe.stdin.close()
        if pipe.wait() != 0:
            raise RuntimeError("redis-cli --pipe failed while loading the benchmark keyspace")
    finally:
        if pipe.poll() is None:
            pipe.kill()
            pipe.wait()


def _build(server: RedisServer, keys: int, seed: int) -> None:
    with mass_insert(server) as stream:
        batch: list[bytes] = []
        for command in commands(keys, seed):
            batch.append(command)
            if len(batch) >= 10_000:
                stream.write(b"".join(batch))
                batch.clear()
        stream.write(b"".join(batch))
