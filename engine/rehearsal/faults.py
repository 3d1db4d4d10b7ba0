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


# Faults of deployment worlds (replication, Sentinel, Cluster) live in their own module; importing it registers
# them (here, once `fault` exists: the module imports it).
from engine.rehearsal import topology_faults as _topology_faults  # noqa: E402,F401


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
    if keys == 0 or target.stat().st_size == 0:
        raise RuntimeError(f"backup {name}: the dataset is empty; a backup of nothing restores nothing")
    world.vars[name] = str(target)
    world.vars[f"{name}_keys"] = keys


@fault("flushall")
def _flushall(world: World, args: Any) -> None:
    with world.client() as client:
        if client.dbsize() == 0:
            raise RuntimeError("flushall: the dataset is already empty; nothing would be lost")
        client.flushall()


@fault("delete")
def _delete(world: World, match: str) -> None:
    """Lose every key matching a pattern (a tenant wiped by a bad deploy)."""
    with world.client() as client:
        keys = list(client.scan_iter(match=match, count=1000))
        if not keys:
            raise RuntimeError(f"delete: no key matches {match!r}; nothing was deleted")
        client.delete(*keys)
    world.vars["deleted_keys"] = len(keys)


@fault("fill_until_oom")
def _fill(world: World, args: dict[str, Any] | None) -> None:
    """Write values until Redis answers OOM (maxmemory reached with noeviction)."""
    args = args or {}
    size = int(args.get("value_size", 2048))
    prefix = args.get("prefix", "tenant:acme:cache:fill:")

    def fill(client: redis.Redis, value_size: int, start: int) -> int | None:
        for i in range(start, start + 1_000_000):
            try:
                client.set(f"{prefix}{i}", "x" * value_size)
            except redis.exceptions.OutOfMemoryError:  # redis-py strips the "OOM" prefix of the error
                return i
        return None

    with world.client() as client:
        filled = fill(client, size, 0)
    if filled is None:
        raise RuntimeError("fill_until_oom: Redis never refused a write (is maxmemory set with noeviction?)")
    # A connection's own buffers count in used_memory: once the filling client is gone, memory can fall back
    # under the limit by a few kB and the next small write succeeds. Held: top up with small values from fresh
    # connections until a fresh connection's write is refused too.
    for _ in range(100):
        with world.client() as client:
            try:
                client.set("rehearsal:fill-probe", "1", px=5000)
                client.delete("rehearsal:fill-probe")
            except redis.exceptions.OutOfMemoryError:
                world.vars["filled_keys"] = filled
                return
            filled = fill(client, 64, filled)
            if filled is None:
                break
    raise RuntimeError("fill_until_oom: memory keeps falling back under maxmemory; writes are not refused")


@fault("leak_keys")
def _leak(world: World, args: dict[str, Any]) -> None:
    """Keys written without a TTL by a buggy client: the memory leak the runbook hunts. `{prefix, count,
    value_size}`: values `leaked-<i>`, or `value_size` bytes each; on a cluster each key goes to its slot's
    owner, so a prefix with a hash tag (`tenant:{acme}:`) lands on one shard."""
    prefix, count = args["prefix"], int(args["count"])
    size = int(args.get("value_size", 0))
    if count < 1:
        raise RuntimeError("leak_keys: count must be at least 1; a leak of nothing is no incident")
    client = world.data_client()  # a cluster's keys go to their slot's owner (a hash tag: all to one shard)
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(count):
            pipe.set(f"{prefix}{i}", "x" * size if size > 0 else f"leaked-{i}")
        pipe.execute()
        written = sum(1 for _ in client.scan_iter(match=f"{prefix}*", count=1000))
    finally:
        client.close()
    if written < count:
        raise RuntimeError(f"leak_keys: {written} of {count} keys are there")
    world.vars["leaked"] = count


@fault("idle_connections")
def _idle(world: World, args: int | dict[str, Any]) -> None:
    """Connections opened and never closed, as a leaking connection pool leaves them.

    `idle_connections: 300` or `{count: 300, name: leaky-worker, idle_for: 2}`: each connection names
    itself (CLIENT SETNAME) so findings can point at it, then they all sit idle for `idle_for` seconds.
    `world.idle_clients` is how many were opened, `world.clients_before` the count before the leak.
    """
    spec = args if isinstance(args, dict) else {"count": args}
    count, name = int(spec["count"]), spec.get("name")
    _enough_file_descriptors(count + 256)
    with world.client() as probe:
        world.vars["clients_before"] = int(probe.info("clients")["connected_clients"]) - 1  # not the probe
    for _ in range(count):
        client = world.client(single_connection_client=True)
        if name:
            client.client_setname(str(name))
        else:
            client.ping()
        world.keep(client)
    world.vars["idle_clients"] = count
    with world.client() as probe:
        now = int(probe.info("clients")["connected_clients"]) - 1
    if now < world.vars["clients_before"] + count:
        raise RuntimeError(
            f"idle_connections: {now} connections, expected at least {world.vars['clients_before'] + count}"
        )
    time.sleep(float(spec.get("idle_for", 0)))


@fault("slow_client")
def _slow(world: World, args: dict[str, Any]) -> None:
    """A client issuing a slow command in a loop until the rehearsal ends."""
    name = args.get("name", "slow-reporter")
    argv = [str(a) for a in args.get("command", ["DEBUG", "SLEEP", "0.05"])]
    if [a.upper() for a in argv[:2]] == ["DEBUG", "POPULATE"]:
        world.background_writes.append(f"{argv[3] if len(argv) > 3 else 'key'}:*")
    client = world.client(single_connection_client=True)
    client.client_setname(name)
    sent = [0]

    def loop() -> None:
        while not world.stopping.is_set():
            try:
                client.execute_command(*argv)
                sent[0] += 1
            except redis.RedisError:
                time.sleep(0.05)
            time.sleep(float(args.get("pause", 0.01)))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    world.keep(client)
    world.keep(thread)
    time.sleep(float(args.get("warmup", 0.3)))
    deadline = time.monotonic() + 10
    while sent[0] == 0 and time.monotonic() < deadline:  # held until the client has really run its command
        time.sleep(0.05)
    if sent[0] == 0:
        raise RuntimeError(f"slow_client: {' '.join(argv)} never succeeded")


@fault("blocked_client")
def _blocked(world: World, args: dict[str, Any]) -> None:
    """Workers blocked on a queue for the whole rehearsal: `{name: queue-worker, command: [BLPOP, queue:jobs, 0],
    count: 1}`.

    Each sends the command and never reads the reply, so its connection stays blocked until teardown; held
    until CLIENT LIST shows `count` of them with flag b. `world.blocked_clients` is how many are blocked then."""
    name = str(args.get("name", "queue-worker"))
    argv = [str(a) for a in args.get("command", ["BLPOP", "queue:jobs", 0])]
    count = int(args.get("count", 1))
    _enough_file_descriptors(count + 256)
    for _ in range(count):
        client = world.keep(world.client(single_connection_client=True))
        client.client_setname(name)
        assert client.connection is not None
        client.connection.send_command(*argv)
    deadline = time.monotonic() + 10
    with world.client() as probe:
        while time.monotonic() < deadline:
            blocked = [c for c in probe.client_list() if "b" in c.get("flags", "")]
            if sum(c.get("name") == name for c in blocked) >= count:
                world.vars["blocked_clients"] = len(blocked)
                return
            time.sleep(0.05)
    raise RuntimeError(f"blocked_client: {' '.join(argv)} did not block {count} client(s) (is the key empty?)")


@fault("stalled_reader")
def _stalled_reader(world: World, args: dict[str, Any]) -> None:
    """A consumer that asked for more than it reads (a pipeline whose reader stalled): `{name: stalled-reader,
    command: [KEYS, "*"], bytes: 24mb}`.

    The command is sent again and again without a reply being read until Redis holds `bytes` of replies in
    the client's output buffer (CLIENT LIST omem); the connection is kept until teardown. That memory counts
    in used_memory and no eviction or flush frees it (only replicas' buffers are not counted).
    `world.output_buffer_bytes` is the client's omem then."""
    from engine.spec.params import parse_size

    name = str(args.get("name", "stalled-reader"))
    argv = [str(a) for a in args.get("command", ["KEYS", "*"])]
    wanted = parse_size(args.get("bytes", "24mb"))
    client = world.keep(world.client(single_connection_client=True))
    client.client_setname(name)
    connection = client.connection
    assert connection is not None
    batch = connection.pack_commands([argv] * 20)
    deadline = time.monotonic() + 30
    with world.client() as probe:
        while time.monotonic() < deadline:
            omem = max((int(c.get("omem", 0)) for c in probe.client_list() if c.get("name") == name), default=0)
            if omem >= wanted:
                world.vars["output_buffer_bytes"] = omem
                return
            connection.send_packed_command(batch, check_health=False)
            time.sleep(0.02)
    raise RuntimeError(f"stalled_reader: the output buffer of {name} did not reach {wanted} bytes in 30 s")


@fault("fill_clients")
def _fill_clients(world: World, args: dict[str, Any] | None) -> None:
    """A server full to the last connection: connections opened until Redis refuses the next one ("max number
    of clients reached"), each named `name`, held until teardown. Nothing can connect then, the rehearsal's
    own checks neither: check the run (`result`, `findings`) and `world.*`. `world.filled_clients` is how many
    were opened, `world.maxclients` the limit."""
    name = str((args or {}).get("name", "leaky-pool"))
    with world.client() as probe:
        maxclients = int(probe.config_get("maxclients")["maxclients"])
    _enough_file_descriptors(maxclients + 256)
    opened = 0
    for _ in range(maxclients + 1):
        try:  # a single-connection client connects (and is refused) as it is made
            client = world.client(single_connection_client=True)
            client.client_setname(name)
        except redis.ConnectionError:  # "max number of clients reached": full
            world.vars["filled_clients"], world.vars["maxclients"] = opened, maxclients
            return
        world.keep(client)
        opened += 1
    raise RuntimeError(f"fill_clients: {opened} connections and Redis refused none (maxclients {maxclients})")


@fault("client_burst")
def _burst(world: World, args: int | dict[str, Any]) -> None:
    """A burst of `count` clients connecting at once past maxclients: the ones above it are refused, then all
    close (a deploy restarting every worker). `world.rejected_connections` is INFO's count afterwards."""
    spec = args if isinstance(args, dict) else {"count": args}
    count = int(spec["count"])
    _enough_file_descriptors(count + 256)
    opened: list[redis.Redis] = []
    refused = 0
    try:
        for _ in range(count):
            try:  # a single-connection client connects (and is refused) as it is made
                opened.append(world.client(single_connection_client=True))
            except redis.ConnectionError:  # "max number of clients reached"
                refused += 1
    finally:
        for client in opened:
            client.close()
    with world.client() as probe:
        rejected = int(probe.info("stats")["rejected_connections"])
    if refused == 0 or rejected == 0:
        raise RuntimeError(f"client_burst: no client of {count} was refused (is maxclients below {count}?)")
    world.vars["rejected_connections"] = rejected


@fault("host_command")
def _host_command(world: World, args: dict[str, Any]) -> None:
    """What a command prints on the SSH host: `{name: df, stdout: "...", exit: 0}` (a full disk, a firewall rule).

    A script of that name is put first on the PATH of every later SSH session (the world's key gets a forced
    command that prepends the shims directory and runs the original command), so the procedure reads the
    symptom through its usual command. `stdout` may use `{{ world.* }}` and `{{ port }}` (Redis' port)."""
    import shlex

    from engine.spec import template

    assert world.ssh is not None, "host_command needs a world with ssh"
    assert world.redis is not None
    name = str(args["name"])
    if "/" in name or not name:
        raise ValueError(f"host_command: {name!r} is not a command name")
    shims = world.ssh.directory / "shims"
    shims.mkdir(exist_ok=True)
    text = str(
        template.render(str(args.get("stdout", "")), {"world": world.template_values(), "port": world.redis.port})
    )
    script = shims / name
    script.write_text(f"#!/bin/sh\nprintf '%s' {shlex.quote(text)}\nexit {int(args.get('exit', 0))}\n")
    script.chmod(0o755)
    keys = world.ssh.authorized_keys
    forced = f'command="PATH={shims}:$PATH; export PATH; eval \\"$SSH_ORIGINAL_COMMAND\\"" '
    lines = [line for line in keys.read_text().splitlines() if line.strip()]
    keys.write_text("".join((line if line.startswith("command=") else forced + line) + "\n" for line in lines))
    world.vars.setdefault("host_commands", []).append(name)


def _enough_file_descriptors(needed: int) -> None:
    """Raise this process's open-files limit towards `needed` (one descriptor per leaked connection)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            raise RuntimeError(f"idle_connections needs {needed} open files; the hard limit is {hard} (ulimit -Hn)")


@fault("wait")
def _wait(world: World, seconds: float) -> None:
    """Let time pass (idle clients age, TTLs run down)."""
    time.sleep(float(seconds))


@fault("service")
def _service(world: World, args: str | dict[str, Any]) -> None:
    """Run the host's service command: `service: start`, or `{action: start, may_fail: true}` for a start
    that is expected to fail (a corrupt data file): its failure lands in the Redis log, as in production.
    `world.service_<action>_exit` is the exit status."""
    import subprocess

    assert world.service is not None, "the service fault needs a world with ssh (the service script)"
    spec = args if isinstance(args, dict) else {"action": args}
    action = spec["action"]
    if action not in ("start", "stop", "restart", "status"):
        raise ValueError(f"service: unknown action '{action}' (start, stop, restart, status)")
    done = subprocess.run(getattr(world.service, action), shell=True, capture_output=True, text=True, timeout=60)
    world.vars[f"service_{action}_exit"] = done.returncode
    if done.returncode != 0 and not spec.get("may_fail"):
        raise RuntimeError(f"service {action} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}")


@fault("start_fails")
def _start_fails(world: World, args: Any) -> None:
    """Try to start redis-server on its own config, as the service would, and require that it fails.

    The failure (a damaged AOF, a corrupt dump) is written to the Redis log, where the procedure reads
    it. Faster than `service: start`, whose script waits 10 s for a PING that never comes.
    `{replica: 0 | HOST:PORT}` (a deployment): that replica's config, while it runs; the attempt listens
    on no port (`--port 0`), so its config alone can make it fail (`config_file_line`)."""
    import subprocess

    from engine.sandbox import find_binary

    assert world.redis is not None
    server, extra = world.redis, []
    if isinstance(args, dict) and args.get("replica") is not None:
        from engine.rehearsal.topology_faults import replica_address

        server = world.node(replica_address(world, args["replica"], "start_fails"))
        extra = ["--port", "0", "--pidfile", str(world.directory / "start-attempt.pid")]
    try:
        done = subprocess.run(
            [find_binary("redis-server"), str(server.config_path), "--daemonize", "no", *extra],
            cwd=server.directory,
            capture_output=True,
            timeout=float(args.get("timeout", 10)) if isinstance(args, dict) else 10,
        )
    except subprocess.TimeoutExpired:
        if not extra:
            world.redis.kill()
        raise RuntimeError("start_fails: redis-server started fine; the fault did not break it") from None
    if done.returncode == 0:
        raise RuntimeError("start_fails: redis-server exited 0; the fault did not break it")
    world.vars["start_exit"] = done.returncode


@fault("somabrain_health")
def _somabrain_health(world: World, args: dict[str, Any]) -> None:
    """What SomaBrain's /health answers from now on, whatever Redis does: `{status: 200, body: {status:
    degraded, redis: down}}` (SomaBrain lost its own connection to Redis: an old password, an old address),
    `{status: 401, body: {error: unauthorized}}` (the route put behind authentication). Checked: the
    endpoint answers that. `world.health_status`."""
    import json
    import urllib.error
    import urllib.request

    assert world.http is not None, "somabrain_health needs a world with http (the /health endpoint)"
    status, body = int(args.get("status", 200)), dict(args.get("body") or {})
    world.http.answer(status, body)
    try:
        with urllib.request.urlopen(world.http.base_url + "/health", timeout=5) as reply:
            got, text = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        got, text = exc.code, exc.read()
    if got != status or json.loads(text) != body:
        raise RuntimeError(f"somabrain_health: /health answers {got} {text!r}, not {status} {body}")
    world.vars["health_status"] = status


@fault("kill_redis")
def _kill(world: World, args: Any) -> None:
    """SIGKILL the Redis the target names (a deployment's primary as built): no shutdown, no final save.

    `{replica: 0 | HOST:PORT}` (a deployment): that replica instead, a node that died while the primary and
    Sentinel still know it; checked: it no longer answers. `world.killed_replica` is its address."""
    assert world.redis is not None
    if isinstance(args, dict) and args.get("replica") is not None:
        from engine.rehearsal import nodes
        from engine.rehearsal.topology_faults import replica_address

        target = replica_address(world, args["replica"], "kill_redis")
        world.node(target).kill()
        if nodes.replication(world, target) is not None:
            raise RuntimeError(f"kill_redis: {target} still answers")
        world.vars["killed_replica"] = target
        return
    world.redis.kill()
    if world.ping():
        raise RuntimeError("kill_redis: Redis still answers PING")


@fault("stop_redis")
def _stop(world: World, args: Any) -> None:
    import subprocess

    assert world.service is not None
    subprocess.run(world.service.stop, shell=True, check=True, capture_output=True, timeout=30)
    if world.ping():
        raise RuntimeError("stop_redis: Redis still answers PING")


@fault("corrupt")
def _corrupt(world: World, args: dict[str, Any]) -> None:
    """Damage a data file: `file: rdb|aof|<backup name>`, `how: truncate|flip|zero` (zero: every byte 0, the
    size kept, as a crash leaves a file whose blocks were allocated and never written)."""
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
    how = args.get("how", "truncate")
    if how not in ("truncate", "flip", "zero"):
        raise ValueError(f"corrupt: unknown how '{how}' (truncate, flip, zero)")
    if how == "truncate":
        cut = int(len(data) * float(args.get("keep", 0.6)))
        data = data[:cut]
    elif how == "zero":
        data = bytearray(len(data))
    else:
        rng = random.Random(7)
        for _ in range(int(args.get("bytes", 8))):
            i = rng.randrange(9, max(len(data) - 9, 10))
            data[i] ^= 0xFF
    if bytes(data) == path.read_bytes():
        raise RuntimeError(f"corrupt: {path.name} is unchanged (keep: 1.0, or nothing to flip)")
    path.write_bytes(bytes(data))
    world.vars[f"corrupted_{which}"] = str(path)


@fault("age_file")
def _age_file(world: World, args: dict[str, Any]) -> None:
    """A file left untouched for a while (a backup job that stopped running): its modification time set
    `age` back from now. `{file: rdb|<backup name>, age: 27h}`; `world.aged_<file>` is the age in seconds."""
    import os

    from engine.spec.params import parse_duration

    which = str(args["file"])
    if which == "rdb":
        assert world.redis is not None
        path = world.redis.directory / "dump.rdb"
    else:
        path = Path(world.vars.get(which, ""))
    if not path.is_file():
        raise RuntimeError(f"age_file: {which} is not a file of this world (rdb, or a backup's name)")
    age = parse_duration(args["age"])
    if age <= 0:
        raise ValueError("age_file: age must be more than 0 (a duration like 27h)")
    when = time.time() - age
    os.utime(path, (when, when))
    world.vars[f"aged_{which}"] = age


@fault("truncate_aof")
def _truncate_aof(world: World, args: dict[str, Any] | None) -> None:
    """Cut the newest AOF file in the middle of its last record (a crash during a write, a full disk).

    Redis must be stopped first (`stop_redis`): a running server would keep appending. `keep` is the
    fraction of the last record left in place (default 0.5). Records `world.aof_cut_bytes` (bytes lost)
    and `world.aof_records` (complete records left in the file)."""
    assert world.redis is not None
    args = args or {}
    aof_dir = world.redis.directory / "appendonlydir"
    files = sorted(aof_dir.glob("*.incr.aof"), key=lambda p: (p.stat().st_mtime, p.name))
    if not files:
        raise RuntimeError("truncate_aof: no INCR AOF file (is appendonly on and has anything been written?)")
    path = files[-1]
    data = path.read_bytes()
    try:
        cut, complete = cut_inside_last_record(data, float(args.get("keep", 0.5)))
    except ValueError as exc:
        raise RuntimeError(f"truncate_aof: {path.name}: {exc}") from None
    path.write_bytes(data[:cut])
    world.vars["aof_cut_bytes"] = len(data) - cut
    world.vars["aof_records"] = complete
    world.vars["corrupted_aof"] = str(path)


def cut_inside_last_record(data: bytes, keep: float) -> tuple[int, int]:
    """Where to cut an AOF so that its last command is left half-written: (offset, complete commands left)."""
    starts = record_starts(data)
    if len(starts) < 2:
        raise ValueError(f"{len(starts)} command(s) in the file; write something first")
    last = starts[-1]
    size = len(data) - last
    return last + max(1, min(size - 1, int(size * keep))), len(starts) - 1


def record_starts(data: bytes) -> list[int]:
    """Offsets where each command of an AOF (a RESP array: `*<argc>`, then `$<len>` + bytes per argument) starts."""

    def line_end(at: int) -> int:
        end = data.find(b"\r\n", at)
        if end < 0:
            raise ValueError(f"cut off at byte {at}")
        return end

    starts, i = [], 0
    while i < len(data):
        if data[i : i + 1] == b"#":  # an annotation (aof-timestamp-enabled): not a command
            i = line_end(i) + 2
            continue
        if data[i : i + 1] != b"*":
            raise ValueError(f"not an AOF record at byte {i}")
        starts.append(i)
        end = line_end(i)
        argc, i = int(data[i + 1 : end]), end + 2
        for _ in range(argc):
            if data[i : i + 1] != b"$":
                raise ValueError(f"not a RESP bulk string at byte {i}")
            end = line_end(i)
            i = end + 2 + int(data[i + 1 : end]) + 2
    return starts


@fault("run_procedure")
def _run_procedure(world: World, args: dict[str, Any]) -> None:
    """Run another procedure against the world as setup (e.g. the backup a restore needs), approved with --yes.

    `{procedure: redis/backup-tenant, params: {...}, as: tenant_backup}`: params may use `{{ world.* }}`;
    the run must exit 0 (or one of `exit: [..]`). `world.<as>` is its registered results by step id and
    `world.<as>_transcript` its transcript (kept under the world's directory, removed at teardown).
    """
    from engine.run.session import RunRequest, execute
    from engine.spec import template

    values = {"world": world.template_values()}
    params = {
        k: str(template.render(v, values)) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in (args.get("params") or {}).items()
    }
    name = args.get("as") or args["procedure"].rsplit("/", 1)[-1].replace("-", "_")
    transcripts = world.directory / "setup-transcripts"
    transcripts.mkdir(exist_ok=True)
    result = execute(
        RunRequest(
            procedure=args["procedure"],
            variables=params,
            inventory=str(world.inventory_path),
            target="rehearsal",
            operator="rehearsal-setup",
            assume_yes=True,
            transcript=transcripts / f"{name}.jsonl",
            transcripts_dir=transcripts,  # a lease taken as a file stays in this world
        )
    )
    allowed = tuple(args.get("exit") or (0,))
    if result.exit_code not in allowed:
        raise RuntimeError(
            f"setup procedure {args['procedure']} exited {result.exit_code} ({result.outcome}: {result.error})"
        )
    world.vars[name] = {step.id: step.result for step in result.steps}
    world.vars[f"{name}_transcript"] = result.transcript


@fault("snapshot")
def _snapshot(world: World, name: str) -> None:
    """Remember every key's type, value and TTL presence, for checks like `unchanged_since(name)`."""
    world.vars[f"snapshot:{name}"] = take_snapshot(world)
    _remember_run_id(world, name)


@fault("config_snapshot")
def _config_snapshot(world: World, name: str) -> None:
    """Remember every CONFIG GET * value, for `config_changed_since(name)`."""
    with world.client() as client:
        world.vars[f"config:{name}"] = client.config_get("*")
    _remember_run_id(world, name)


def _remember_run_id(world: World, name: str) -> None:
    """The server's run id at a snapshot: `restarted_since(name)` tells a restart from a server left running."""
    try:
        with world.client() as client:
            world.vars[f"run_id:{name}"] = client.info("server")["run_id"]
    except redis.RedisError:
        world.vars[f"run_id:{name}"] = None


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


@fault("file_size_limit")
def _file_size_limit(world: World, args: dict[str, Any]) -> None:
    """A disk that takes no more data, as a full disk or an exhausted quota: `{bytes: 65536}` becomes the
    running redis-server's RLIMIT_FSIZE (prlimit), so no file it or a child it forks writes can grow past
    `bytes`. A BGSAVE of a dataset bigger than that dies writing the dump (SIGXFSZ): rdb_last_bgsave_status
    err, the old dump untouched. Checked: the limit is set and Redis's log is well below it (a log line past
    it would kill the server itself). `world.file_size_limit` is `bytes`."""
    import resource

    assert world.redis is not None
    limit = int(args["bytes"])
    pid = world.redis.pid
    if pid is None:
        raise RuntimeError("file_size_limit: Redis is not running")
    log = world.redis.log_path.stat().st_size if world.redis.log_path.exists() else 0
    if log > limit // 2:
        raise ValueError(f"file_size_limit: {limit} bytes leaves no room for Redis's log ({log} bytes)")
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, limit))
    if resource.prlimit(pid, resource.RLIMIT_FSIZE)[0] != limit:
        raise RuntimeError("file_size_limit: the limit did not take")
    world.vars["file_size_limit"] = limit


@fault("failed_logins")
def _failed_logins(world: World, args: int | dict[str, Any]) -> None:
    """A credential-stuffing attack: `failed_logins: 1100` or `{count: 1100}` AUTH attempts, each as another
    user name (`stuffed-<n>`) with a wrong password, so that each is its own ACL LOG entry (Redis merges
    repeats of one user name). Keeps `acllog-max-len` entries at most: raise it in the world's `config` to
    keep more than the default 128. Checked: ACL LOG holds min(count, acllog-max-len) entries or more.
    `world.failed_logins` is `count`, `world.acl_log_entries` ACL LOG's length afterwards."""
    spec = args if isinstance(args, dict) else {"count": args}
    count = int(spec["count"])
    if count < 1:
        raise ValueError("failed_logins: count must be at least 1")
    import socket

    assert world.redis is not None
    refused = 0
    # a raw socket, as the attacker's client (redis-py drops a connection on its first refused AUTH), sending
    # 50 attempts at a time: Redis closes an unauthenticated client whose replies pile up past 16 KiB
    with socket.create_connection((world.redis.host, world.redis.port), timeout=10) as attacker:
        for start in range(0, count, 50):
            users = [f"stuffed-{i}".encode() for i in range(start, min(start + 50, count))]
            attacker.sendall(
                b"".join(b"*3\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n$16\r\nnot-the-password\r\n" % (len(u), u) for u in users)
            )
            replies = b""
            while replies.count(b"\r\n") < len(users):
                chunk = attacker.recv(65536)
                if not chunk:
                    raise RuntimeError("failed_logins: Redis closed the connection")
                replies += chunk
            refused += replies.count(b"-WRONGPASS")
    if refused != count:
        raise RuntimeError(f"failed_logins: {count - refused} of {count} AUTH attempts were not refused")
    with world.client() as client:
        keep = int(client.config_get("acllog-max-len")["acllog-max-len"])
        entries = len(client.execute_command("ACL", "LOG", count + 1))
    if entries < min(count, keep):
        raise RuntimeError(f"failed_logins: ACL LOG holds {entries} entries after {count} failed logins")
    world.vars["failed_logins"] = count
    world.vars["acl_log_entries"] = entries


@fault("acl_file")
def _acl_file(world: World, args: dict[str, Any] | None) -> None:
    """Redis restarted on an ACL file (`aclfile` in redis.conf), with other users besides `default`.

    `{users: ["app on >secret ~tenant:* +@read"]}`: each is a `user` line besides the default user's (which
    keeps the current password). The dataset is saved first and comes back with the restart. Records
    `world.aclfile` (its path) and `world.aclfile_default` (the default user's line as Redis wrote it: with
    the old password's hash), so a check can tell whether ACL SAVE persisted a new password."""
    assert world.redis is not None
    args = args or {}
    path = world.directory / "users.acl"
    password = world.current_password
    default = f"user default on {'>' + password if password else 'nopass'} ~* &* +@all"
    path.write_text("\n".join([default, *(f"user {u}" for u in args.get("users") or [])]) + "\n")
    path.chmod(0o600)
    with world.client() as client:
        client.save()
    with world.redis.config_path.open("a") as conf:
        conf.write(f'aclfile "{path}"\n')
    world.redis.restart()
    with world.client() as client:
        if client.config_get("aclfile").get("aclfile") != str(path):
            raise RuntimeError("acl_file: Redis did not start on the ACL file")
        client.execute_command("ACL", "SAVE")  # the file as Redis writes it (hashed passwords)
    lines = path.read_text().splitlines()
    world.vars["aclfile"] = str(path)
    world.vars["aclfile_default"] = next(line for line in lines if line.startswith("user default "))
    world.vars["acl_users"] = len(lines)


@fault("no_config_file")
def _no_config_file(world: World, args: Any) -> None:
    """Redis restarted without a config file (its settings piped on stdin, as `redis-server -` reads them):
    INFO's config_file is empty and CONFIG REWRITE fails, as on a server started from a command line.

    The dataset is saved first and comes back. The service script still starts it from redis.conf."""
    server = world.redis
    assert server is not None
    with world.client() as client:
        client.save()
    settings = server.config_path.read_text()
    if world.spec.password:  # a rotation before this fault is not the incident: keep the current password
        settings += f'requirepass "{world.current_password}"\n'
    server.restart_from_stdin(settings)
    with world.client() as client:
        if client.info("server").get("config_file"):
            raise RuntimeError("no_config_file: Redis still reports a config file")


@fault("acl_user")
def _acl_user(world: World, args: dict[str, Any]) -> None:
    """Another ACL user, `{name: ops, rules: "on ~* &* +@all", password: current, run_as: false}`.

    `password: current` gives it the server's current password (so it matters which user a run authenticates
    as); `run_as: true` makes the inventory connect as that user (`redis://ops@host:port/0`), as a team
    whose operators have their own ACL user would. `world.acl_user` is its name."""
    import yaml

    name = str(args["name"])
    rules = str(args.get("rules", "on ~* &* +@all")).split()
    if args.get("password") == "current":
        current = world.current_password
        if not current:
            raise RuntimeError("acl_user: password: current needs a world with a password")
        rules.append(">" + current)
    with world.client() as client:
        client.execute_command("ACL", "SETUSER", name, *rules)
    if args.get("run_as"):
        data = yaml.safe_load(world.inventory_path.read_text())
        facet = data["environments"]["sandbox"]["targets"]["rehearsal"]["redis"]
        facet["url"] = facet["url"].replace("redis://", f"redis://{name}@", 1)
        world.inventory_path.write_text(yaml.safe_dump(data, sort_keys=False))
    world.vars["acl_user"] = name


@fault("host_script")
def _host_script(world: World, args: dict[str, Any]) -> None:
    """A command on the SSH host that behaves differently for some arguments: `{name, script}`, a sh body.

    Like `host_command`, a script of that name is put first on the PATH of every later SSH session, but its
    body is the scenario's: `$REAL` is the real program's path (found on this PATH), so a script can pass
    most calls through (`exec "$REAL" "$@"`) and lie about one (a `--fix` that prints success and fixes
    nothing). `world.host_commands` lists it."""
    import shlex

    from engine.sandbox import find_binary

    name = str(args["name"])
    if "/" in name or not name:
        raise ValueError(f"host_script: {name!r} is not a command name")
    _host_command(world, {"name": name})  # the shims directory and the forced command, once
    assert world.ssh is not None
    script = world.ssh.directory / "shims" / name
    real = find_binary(name)
    script.write_text(f"#!/bin/sh\nREAL={shlex.quote(str(real))}\n{args['script']}\n")
    script.chmod(0o755)


@fault("inventory")
def _inventory(world: World, args: dict[str, Any]) -> None:
    """An inventory that is wrong about the host: `{set: {ssh.paths.rdb: "..."}, unset: [ssh.paths.service_user]}`.

    Dotted paths under the world's target (`redis.url`, `ssh.service.status`, ...); values may use
    `{{ world.* }}`. The world itself is unchanged: only what the procedure is told about it."""
    import yaml

    from engine.spec import template

    data = yaml.safe_load(world.inventory_path.read_text())
    target = data["environments"]["sandbox"]["targets"]["rehearsal"]

    def parent(path: str) -> tuple[dict[str, Any], str]:
        *parts, last = path.split(".")
        node = target
        for part in parts:
            node = node[part]
        return node, last

    for path, value in (args.get("set") or {}).items():
        node, last = parent(path)
        node[last] = template.render(value, {"world": world.template_values()}) if isinstance(value, str) else value
    for path in args.get("unset") or []:
        node, last = parent(path)
        if last not in node:
            raise RuntimeError(f"inventory: {path} is not in the inventory; nothing to remove")
        del node[last]
    world.inventory_path.write_text(yaml.safe_dump(data, sort_keys=False))


@fault("append_to_file")
def _append_to_file(world: World, args: dict[str, Any]) -> None:
    """A file changed after it was written (an export edited by hand, a copy cut short and padded):
    `{path: "{{ world.directory }}/acme.keys.jsonl", text: "...", times: 1}` appends `text` `times` times (a
    log grown past what a procedure reads); the path may use `world.*`."""
    from engine.spec import template

    path = Path(str(template.render(str(args["path"]), {"world": world.template_values()})))
    if not path.is_file():
        raise RuntimeError(f"append_to_file: {path} is not a file")
    with path.open("a", encoding="utf-8") as out:
        out.write(str(args.get("text", "\n")) * int(args.get("times", 1)))


@fault("write_file")
def _write_file(world: World, args: dict[str, Any]) -> None:
    """A file the operator keeps and hands to the procedure (a config baseline from config management):
    `{path: "{{ world.directory }}/baseline.yaml", text: "maxmemory: 64mb\\n"}`; the path and the text may use
    `world.*`. It must be new (a fault never overwrites what the world or an earlier fault put there) and its
    directory must exist; `world.written_files` lists the paths written."""
    from engine.spec import template

    values = {"world": world.template_values()}
    path = Path(str(template.render(str(args["path"]), values)))
    if path.exists():
        raise RuntimeError(f"write_file: {path} exists already")
    if not path.parent.is_dir():
        raise RuntimeError(f"write_file: {path.parent} is not a directory")
    text = str(args.get("text", ""))
    rendered = str(template.render(text, values))
    if text.endswith("\n") and not rendered.endswith("\n"):  # the renderer drops a final newline
        rendered += "\n"
    path.write_text(rendered, encoding="utf-8")
    world.vars.setdefault("written_files", []).append(str(path))
