"""What the world looks like, to prove a dry-run left it as it was and a real run changed it only through the gate.

Two depths. A **state** (`capture`) is everything a change could touch: every key's type, value digest
and absolute expiry (Redis' own DEBUG DIGEST-VALUE and PEXPIRETIME, so a TTL running down is no change
and an EXPIRE is), the dataset digest, CONFIG GET *, the server's run id (a restart), the service's
status, and every file of the data directory and of the world's directory (size, mode, sha256). A
**fingerprint** (`fingerprint`) is the cheap version taken after every step of the real run: the
server's own count of changes since the last save, its saves, run id, configuration and the files'
size and mtime.

A deployment world is captured node by node: every data node's state as above (plus its role, the
primary it follows, and a cluster node's own flags and slots), and what each Sentinel says (the primary
it names, its epoch and settings). Sentinels' own directories and a cluster's nodes.conf are the
servers' bookkeeping, rewritten by themselves; what they record is captured through the servers instead.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from engine.rehearsal.world import World

# Keys listed one by one up to this many; above it only the dataset digest is compared (a bulk-seeded world).
KEY_LIMIT = 20_000
# Parameters a server changes by itself, never a step: none in Redis 7 so far; kept as the one place to add one.
VOLATILE_CONFIG: frozenset[str] = frozenset()
# Files the world writes by itself: Redis' log (every start and save adds lines) and its pid file.
VOLATILE_FILES = ("redis.log", "redis.pid", "nodes.conf")
# What Sentinel says about its master that only a failover or a SENTINEL SET changes.
SENTINEL_FIELDS = (
    "ip",
    "port",
    "config-epoch",
    "quorum",
    "down-after-milliseconds",
    "failover-timeout",
    "parallel-syncs",
)


@dataclass(frozen=True)
class State:
    redis: dict[
        str, Any
    ]  # {"up": bool, "run_id", "digest", "dbsize", "config": {..}, "keys": {key: (type, digest, expiry)} | None}
    files: dict[str, tuple[int, str, str]]  # path -> (size, mode, sha256)
    service: str | None  # the service script's status line
    notes: tuple[str, ...] = field(default_factory=tuple)
    # a deployment: every other data node ("HOST:PORT" -> as `redis`) and Sentinel ("sentinel HOST:PORT" -> fields)
    others: dict[str, dict[str, Any]] = field(default_factory=dict)


def _roots(world: World) -> list[Path]:
    roots = [world.directory]
    for server in world.nodes or ([world.redis] if world.redis is not None else []):
        roots.append(server.directory)
    return roots


def _files(world: World, *, digest: bool) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for root in _roots(world):
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                if name in VOLATILE_FILES:
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                    if digest:
                        sha = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "-"
                        out[str(path)] = (st.st_size, oct(st.st_mode & 0o7777), sha)
                    else:
                        out[str(path)] = (st.st_size, oct(st.st_mode & 0o7777), st.st_mtime_ns, st.st_ino)
                except OSError:
                    continue
    return out


def _keys(client: redis.Redis) -> dict[str, tuple[str, str, int]]:
    keys = list(client.scan_iter(count=1000))
    out: dict[str, tuple[str, str, int]] = {}
    for start in range(0, len(keys), 500):
        batch = keys[start : start + 500]
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.type(key)
            pipe.execute_command("DEBUG", "DIGEST-VALUE", key)
            pipe.execute_command("PEXPIRETIME", key)
        replies = pipe.execute(raise_on_error=False)
        for i, key in enumerate(batch):
            kind, digest, expiry = replies[3 * i : 3 * i + 3]
            digest = digest[0] if isinstance(digest, list) and digest else digest
            out[key] = (str(kind), str(digest), int(expiry) if isinstance(expiry, int) else -3)
    return out


GONE = {"up": False, "error": "process gone"}  # told without asking (World.gone), as no retry would change it


def _redis(world: World, *, full: bool, node: Any = None) -> dict[str, Any]:
    """One node's state. A connection cut under the question (Sentinel reconfiguring a node sends it
    CLIENT KILL TYPE normal) is asked again; a node is down when it refuses three times in a row."""
    if world.gone(node):
        return dict(GONE)
    for _attempt in range(2):
        try:
            return _redis_once(world, full=full, node=node)
        except redis.ConnectionError:
            time.sleep(0.1)
    return _redis_once(world, full=full, node=node, last=True)


def _redis_once(world: World, *, full: bool, node: Any = None, last: bool = False) -> dict[str, Any]:
    try:
        with world.client(node=node) as client:
            info = client.info()
            config = {k: v for k, v in client.config_get("*").items() if k not in VOLATILE_CONFIG}
            state: dict[str, Any] = {
                "up": True,
                "run_id": info.get("run_id"),
                "config": config,
                "saves": (info.get("rdb_saves"), info.get("rdb_last_save_time")),
                "dirty": info.get("rdb_changes_since_last_save"),
                "background": bool(info.get("rdb_bgsave_in_progress") or info.get("aof_rewrite_in_progress")),
                "evicted": int(info.get("evicted_keys", 0)) + int(info.get("expired_keys", 0)),
            }
            if world.spec.topology != "standalone":
                state["role"] = _role(info)
                if str(info.get("cluster_enabled", "0")) == "1":
                    state["cluster"] = _myself(client)
            if full:
                state["dbsize"] = client.dbsize()
                state["digest"] = client.execute_command("DEBUG", "DIGEST")
                state["keys"] = _keys(client) if state["dbsize"] <= KEY_LIMIT else None
            return state
    except redis.AuthenticationError:
        return {"up": True, "error": "authentication refused with the current password"}
    except redis.ConnectionError as exc:
        if not last:
            raise
        return {"up": False, "error": type(exc).__name__}
    except redis.RedisError as exc:
        return {"up": False, "error": type(exc).__name__}


def _role(info: dict[str, Any]) -> str:
    if info.get("role") == "slave":
        return f"replica of {info.get('master_host')}:{info.get('master_port')}"
    return "primary"


def _myself(client: redis.Redis) -> str:
    """A cluster node's own line of CLUSTER NODES without its gossip times: flags, primary, epoch, slots."""
    for line in str(client.execute_command("CLUSTER", "NODES")).splitlines():
        fields = line.split()
        if len(fields) >= 8 and "myself" in fields[2]:
            return " ".join([fields[2], fields[3], fields[6], *fields[8:]])
    return "?"


def _sentinel(world: World, sentinel: Any) -> dict[str, Any]:
    if world.gone(sentinel):
        return dict(GONE)
    try:
        with world.client(password=False, node=sentinel) as client:
            reply = client.execute_command("SENTINEL", "MASTER", world.master_name)
    except redis.RedisError as exc:
        return {"up": False, "error": type(exc).__name__}
    fields = dict(zip(reply[::2], reply[1::2], strict=False)) if isinstance(reply, list) else dict(reply)
    return {"up": True, **{k: fields.get(k) for k in SENTINEL_FIELDS}}


def _others(world: World, *, full: bool) -> dict[str, dict[str, Any]]:
    """Every data node but the one the target names, and every Sentinel."""
    from engine.rehearsal.world import address

    out = {address(n): _redis(world, full=full, node=n) for n in world.nodes if n is not world.redis}
    out.update({f"sentinel {address(s)}": _sentinel(world, s) for s in world.sentinels})
    return out


def _service(world: World) -> str | None:
    if world.service is None:
        return None
    done = subprocess.run(world.service.status, shell=True, capture_output=True, text=True, timeout=30)
    return f"exit {done.returncode}: {done.stdout.strip()}"


def capture(world: World) -> State:
    """The whole state a procedure could change (before and after a dry-run)."""
    # every node is asked before the files are read: a save a node reports finished has written its file by
    # then, and one that ends after the question is one the state says is running (see `changed`)
    redis, others = _redis(world, full=True), _others(world, full=True)
    return State(redis=redis, files=_files(world, digest=True), service=_service(world), others=others)


def fingerprint(world: World) -> dict[str, Any]:
    """Cheap: enough to tell that something changed (after every step of the real run)."""
    state, others = _redis(world, full=False), _others(world, full=False)  # nodes before files: as `capture`
    return {"redis": state, "files": _files(world, digest=False), "others": others}


# -- differences -------------------------------------------------------------------------------------------
def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dict_diff(label: str, before: dict[str, Any], after: dict[str, Any], limit: int = 5) -> list[str]:
    out = []
    for name in sorted(set(before) | set(after)):
        if name not in after:
            out.append(f"{label} {name} removed")
        elif name not in before:
            out.append(f"{label} {name} appeared")
        elif before[name] != after[name]:
            out.append(f"{label} {name}: {_show(before[name])} -> {_show(after[name])}")
    return out[:limit] + ([f"... and {len(out) - limit} more {label} differences"] if len(out) > limit else [])


def differences(before: State, after: State, background: Sequence[str] = ()) -> list[str]:
    """Every way `after` differs from `before`, one line each (empty: the world is as it was).

    `background`: globs of keys the scenario's own background client writes. Those keys, and keys Redis
    itself evicted or expired meanwhile, changed without the procedure: they are not held against it.
    A deployment's other nodes are compared the same way, each line starting with the node's address.
    """
    out = _node_differences(before.redis, after.redis, background)
    for name in sorted(set(before.others) | set(after.others)):
        a, b = before.others.get(name, {}), after.others.get(name, {})
        lines = _sentinel_differences(a, b) if name.startswith("sentinel ") else _node_differences(a, b, background)
        out.extend(f"{name}: {line}" for line in lines)
    # a save already running before the dry run writes its dump by itself
    files = _not_saved_by(_saving(before), _dict_diff("file", before.files, after.files, limit=1000))
    out.extend(files[:5] + ([f"... and {len(files) - 5} more file differences"] if len(files) > 5 else []))
    if before.service != after.service:
        out.append(f"service status: {before.service} -> {after.service}")
    return out


def _saving(state: State) -> list[str | None]:
    """The data directories of the nodes where a BGSAVE or AOF rewrite was in progress when `state` was captured."""
    nodes = [state.redis, *(v for k, v in state.others.items() if not k.startswith("sentinel "))]
    return [_data_dir(node) for node in nodes if node.get("background")]


def _data_dir(*states: dict[str, Any]) -> str | None:
    """A node's data directory, from its CONFIG (None: unknown, so any directory)."""
    for state in states:
        directory = (state.get("config") or {}).get("dir")
        if directory:
            return str(directory)
    return None


def _not_saved_by(saving: list[str | None], files: list[str]) -> list[str]:
    """`files` without the lines a save running in one of the `saving` directories writes by itself."""
    if not saving:
        return files
    return [line for line in files if not (_written_by_a_save(line) and any(_under(line, d) for d in saving))]


def _under(line: str, directory: str | None) -> bool:
    """The line's file is in `directory` (CONFIG GET dir is the server's resolved cwd: both sides resolved)."""
    if directory is None:
        return True
    return os.path.realpath(_named(line)).startswith(os.path.realpath(directory).rstrip("/") + "/")


def _named(line: str) -> str:
    """What a difference line is about: the file or config name after its kind (`file /x/dump.rdb: ...`)."""
    return line.split(" ", 2)[1].rstrip(":") if line.count(" ") >= 1 else ""


def _sentinel_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    if a.get("up") != b.get("up"):
        return [f"sentinel: {a.get('error') or 'up'} -> {b.get('error') or 'up'}"]
    return _dict_diff("sentinel", a, b)


def _node_differences(a: dict[str, Any], b: dict[str, Any], background: Sequence[str]) -> list[str]:
    out: list[str] = []
    if a.get("up") != b.get("up") or a.get("error") != b.get("error"):
        out.append(f"redis: {a.get('error') or 'up'} -> {b.get('error') or 'up'}")
    if a.get("up") and b.get("up") and not a.get("error") and not b.get("error"):
        if a["run_id"] != b["run_id"]:
            out.append("redis restarted (run_id changed)")
        for part in ("role", "cluster"):
            if a.get(part) != b.get(part):
                out.append(f"{part}: {a.get(part)} -> {b.get(part)}")
        out.extend(_dict_diff("config", a["config"], b["config"]))
        if a["keys"] is not None and b["keys"] is not None:
            keys_a, keys_b = a["keys"], b["keys"]
            if background:
                evicted = b.get("evicted", 0) > a.get("evicted", 0)
                ours = [k for k in set(keys_a) | set(keys_b) if not any(fnmatch.fnmatchcase(k, g) for g in background)]
                keys_a = {k: keys_a[k] for k in ours if k in keys_a and (k in keys_b or not evicted)}
                keys_b = {k: keys_b[k] for k in ours if k in keys_b}
            out.extend(_dict_diff("key", keys_a, keys_b))
        if a["digest"] != b["digest"] and not background and not any(line.startswith("key ") for line in out):
            out.append(f"dataset digest changed ({a['dbsize']} -> {b['dbsize']} keys)")
    return out


def changed(before: dict[str, Any], after: dict[str, Any], background: Sequence[str] = ()) -> list[str]:
    """What two fingerprints say changed between them (empty: nothing).

    With a background writer (`background` globs), Redis counts writes all the time: the data is not
    compared, only what the writer cannot change (config, restarts, files, the service). A replica's
    writes are its primary's (counted there): only its role, configuration and restarts are compared.
    """
    out, finishing = _node_changed(before["redis"], after["redis"], background)
    saving = [_data_dir(before["redis"], after["redis"])] if finishing else []
    for name in sorted(set(before.get("others", {})) | set(after.get("others", {}))):
        a, b = before["others"].get(name, {}), after["others"].get(name, {})
        if name.startswith("sentinel "):
            lines = _sentinel_differences(a, b)
        else:
            lines, finishing = _node_changed(a, b, background)
            saving += [_data_dir(a, b)] if finishing else []
        out.extend(f"{name}: {line}" for line in lines)
    files = _not_saved_by(saving, _dict_diff("file", before["files"], after["files"], limit=1000))
    return out + files[:5] + ([f"... and {len(files) - 5} more file differences"] if len(files) > 5 else [])


def _node_changed(a: dict[str, Any], b: dict[str, Any], background: Sequence[str]) -> tuple[list[str], bool]:
    out: list[str] = []
    if a.get("up") != b.get("up") or a.get("error") != b.get("error"):
        out.append(f"redis: {a.get('error') or 'up'} -> {b.get('error') or 'up'}")
    finishing = False  # a BGSAVE / AOF rewrite an approved step started, ending during a later step
    if a.get("up") and b.get("up") and not a.get("error") and not b.get("error"):
        if a["run_id"] != b["run_id"]:
            out.append("redis restarted (run_id changed)")
        else:
            finishing = a["background"] or b["background"]
            saved = a["saves"] != b["saves"]
            reset_by_save = saved and finishing and b["dirty"] <= a["dirty"]
            replica = str(a.get("role", "")).startswith("replica") and str(b.get("role", "")).startswith("replica")
            quiet = background or replica or a.get("role") != b.get("role")  # a role change: its own line
            if not quiet and ((saved and not finishing) or (a["dirty"] != b["dirty"] and not reset_by_save)):
                out.append("the dataset changed (Redis counted writes or a save)")
            for part in ("role", "cluster"):
                if a.get(part) != b.get(part):
                    out.append(f"{part}: {a.get(part)} -> {b.get(part)}")
            out.extend(_dict_diff("config", a["config"], b["config"]))
    return out, finishing


FOLLOW_ON_CONFIG = ("replicaof", "slaveof")
_NODE_PREFIX = re.compile(r"^\S+:\d+: ")
_CONFIG_FILE = re.compile(r"/redis\.conf(\.[A-Za-z0-9]{6})?$")


def follow_on(line: str) -> bool:
    """A change a failover makes by itself after it was approved: a node's role and the primary it follows
    (and its config file, which Sentinel rewrites), what the Sentinels name, a replica resyncing."""
    if line.startswith("sentinel "):
        return True
    body = _NODE_PREFIX.sub("", line, count=1)
    if body.startswith(("role: ", "cluster: ")):
        return True
    if body.startswith("config ") and _named(body) in FOLLOW_ON_CONFIG:
        return True
    # CONFIG REWRITE writes redis.conf.XXXXXX (mkostemp) and renames it over redis.conf: a step may see it
    return body.startswith("file ") and _CONFIG_FILE.search(_named(body)) is not None


def restart_follow_on(line: str, node: str | None, directory: str) -> bool:
    """A change a node's approved restart makes by itself afterwards: it is down, loading, then up as a new
    process (a new run id), and the dump it reads or a full sync writes lands in its data directory.
    `node` is the line's HOST:PORT prefix (None: the node the target names, whose lines have none)."""
    if line.startswith("file "):
        return _written_by_a_save(line) and _under(line, directory)
    if node is None:
        if _NODE_PREFIX.match(line) or line.startswith("sentinel "):
            return False
        body = line
    elif line.startswith(f"{node}: "):
        body = line[len(node) + 2 :]
    else:
        return False
    return body == "redis restarted (run_id changed)" or body.startswith("redis: ")


def _written_by_a_save(line: str) -> bool:
    name = _named(line)
    base = Path(name).name
    return base == "dump.rdb" or base.startswith("temp-") or "/appendonlydir/" in name


def summarize(lines: Iterable[str], limit: int = 6) -> str:
    lines = list(lines)
    return "; ".join(lines[:limit]) + (f"; ... ({len(lines) - limit} more)" if len(lines) > limit else "")
