"""The incidents a scenario can inject, one small function each, registered by name.

A fault acts on the world directly (a client, a file, a process), never through the engine: the point
of a rehearsal is that the engine finds the world broken the way production would be.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from engine.rehearsal.world import World

FAULTS: dict[str, Callable[[World, Any], None]] = {}


def fault(name: str) -> Callable[[Callable[[World, Any], None]], Callable[[World, Any], None]]:
    def register(fn: Callable[[World, Any], None]) -> Callable[[World, Any], None]:
        FAULTS[name] = fn
        return fn

    return register


def apply(world: World, action: dict[str, Any]) -> None:
    ((name, args),) = action.items()
    if name not in FAULTS:
        raise ValueError(f"unknown fault '{name}' (known: {', '.join(sorted(FAULTS))})")
    FAULTS[name](world, args)


@fault("redis")
def _command(world: World, argv: list[Any]) -> None:
    """Any command, as a client of the application would send it."""
    with world.client() as client:
        client.execute_command(*[str(a) for a in argv])


@fault("save")
def _save(world: World, args: Any) -> None:
    with world.client() as client:
        client.save()


@fault("backup")
def _backup(world: World, name: str) -> None:
    """SAVE, then copy dump.rdb into the backups dir; `world.<name>` is its path and `<name>_keys` its size."""
    assert world.redis is not None
    with world.client() as client:
        client.save()
        keys = client.dbsize()
    target = world.backups / f"{name}.rdb"
    shutil.copy2(world.redis.directory / "dump.rdb", target)
    world.vars[name] = str(target)
    world.vars[f"{name}_keys"] = keys


@fault("flushall")
def _flushall(world: World, args: Any) -> None:
    with world.client() as client:
        client.flushall()


@fault("delete")
def _delete(world: World, match: str) -> None:
    """Lose every key matching a pattern (a tenant wiped by a bad deploy)."""
    with world.client() as client:
        keys = list(client.scan_iter(match=match, count=1000))
        if keys:
            client.delete(*keys)
    world.vars["deleted_keys"] = len(keys)


@fault("fill_until_oom")
def _fill(world: World, args: dict[str, Any] | None) -> None:
    """Write values until Redis answers OOM (maxmemory reached with noeviction)."""
    args = args or {}
    size = int(args.get("value_size", 2048))
    prefix = args.get("prefix", "tenant:acme:cache:fill:")
    with world.client() as client:
        for i in range(1_000_000):
            try:
                client.set(f"{prefix}{i}", "x" * size)
            except redis.ResponseError as exc:
                if "OOM" in str(exc):
                    world.vars["filled_keys"] = i
                    return
                raise
    raise RuntimeError("fill_until_oom: Redis never refused a write (is maxmemory set with noeviction?)")


@fault("leak_keys")
def _leak(world: World, args: dict[str, Any]) -> None:
    """Keys written without a TTL by a buggy client: the memory leak the runbook hunts."""
    prefix, count = args["prefix"], int(args["count"])
    with world.client() as client:
        pipe = client.pipeline(transaction=False)
        for i in range(count):
            pipe.set(f"{prefix}{i}", f"leaked-{i}")
        pipe.execute()
    world.vars["leaked"] = count


@fault("idle_connections")
def _idle(world: World, count: int) -> None:
    """Connections opened and never closed, as a leaking connection pool leaves them."""
    for _ in range(int(count)):
        client = world.client(single_connection_client=True)
        client.ping()
        world.keep(client)


@fault("slow_client")
def _slow(world: World, args: dict[str, Any]) -> None:
    """A client issuing a slow command in a loop until the rehearsal ends."""
    name = args.get("name", "slow-reporter")
    argv = [str(a) for a in args.get("command", ["DEBUG", "SLEEP", "0.05"])]
    client = world.client(single_connection_client=True)
    client.client_setname(name)

    def loop() -> None:
        while not world.stopping.is_set():
            try:
                client.execute_command(*argv)
            except redis.RedisError:
                time.sleep(0.05)
            time.sleep(float(args.get("pause", 0.01)))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    world.keep(client)
    world.keep(thread)
    time.sleep(float(args.get("warmup", 0.3)))


@fault("kill_redis")
def _kill(world: World, args: Any) -> None:
    assert world.redis is not None
    world.redis.kill()


@fault("stop_redis")
def _stop(world: World, args: Any) -> None:
    import subprocess

    assert world.service is not None
    subprocess.run(world.service.stop, shell=True, check=True, capture_output=True, timeout=30)


@fault("corrupt")
def _corrupt(world: World, args: dict[str, Any]) -> None:
    """Damage a data file: `file: rdb|aof|<backup name>`, `how: truncate|flip`."""
    assert world.redis is not None
    which = args["file"]
    if which == "rdb":
        path = world.redis.directory / "dump.rdb"
    elif which == "aof":
        aof_dir = world.redis.directory / "appendonlydir"
        path = max(aof_dir.glob("*.incr.aof"), key=lambda p: p.stat().st_size)
    else:
        path = Path(world.vars[which])
    data = bytearray(path.read_bytes())
    if args.get("how", "truncate") == "truncate":
        cut = int(len(data) * float(args.get("keep", 0.6)))
        data = data[:cut]
    else:
        rng = random.Random(7)
        for _ in range(int(args.get("bytes", 8))):
            i = rng.randrange(9, max(len(data) - 9, 10))
            data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    world.vars[f"corrupted_{which}"] = str(path)


@fault("snapshot")
def _snapshot(world: World, name: str) -> None:
    """Remember every key's type, value and TTL presence, for checks like `unchanged_since(name)`."""
    world.vars[f"snapshot:{name}"] = take_snapshot(world)


def take_snapshot(world: World, match: str = "*") -> dict[str, tuple[str, Any, bool]]:
    out: dict[str, tuple[str, Any, bool]] = {}
    with world.client() as client:
        for key in client.scan_iter(match=match, count=1000):
            kind = client.type(key)
            value: Any
            if kind == "string":
                value = client.get(key)
            elif kind == "hash":
                value = client.hgetall(key)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "set":
                value = sorted(client.smembers(key))
            elif kind == "zset":
                value = client.zrange(key, 0, -1, withscores=True)
            else:
                value = None
            out[key] = (kind, value, client.ttl(key) > 0)
    return out
