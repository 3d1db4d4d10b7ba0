"""What a Redis command does to the server, read from the server's own COMMAND INFO.

The server's flags decide wherever they can: `write` commands write, and the ones whose key specs
remove keys (RM/delete) or that Redis files under @dangerous are destructive; `readonly` commands
read. Redis flags its introspection and its control commands alike as `admin` (CONFIG GET and CONFIG
SET carry the same flags), so for those the flags cannot tell reading from changing: a short
allow-list names the admin commands that only read. Anything the server does not know, and any
non-write command not known to read, is treated as changing something. The lists fail safe: a new
Redis command is never taken for a read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from engine.spec.model import Effect

# Commands (or command|subcommand) that only read, though Redis does not flag them `readonly`.
READ_ONLY = frozenset(
    {
        "ping",
        "echo",
        "time",
        "role",
        "lastsave",
        "dbsize",
        "info",
        "select",
        "auth",
        "hello",
        "quit",
        "command",
        "command|count",
        "command|docs",
        "command|getkeys",
        "command|getkeysandflags",
        "command|info",
        "command|list",
        "command|help",
        "config|get",
        "config|help",
        "client|list",
        "client|info",
        "client|getname",
        "client|id",
        "client|getredir",
        "client|help",
        "client|trackinginfo",
        "client|setinfo",
        "client|setname",
        "slowlog|get",
        "slowlog|len",
        "slowlog|help",
        "latency|latest",
        "latency|history",
        "latency|doctor",
        "latency|graph",
        "latency|histogram",
        "latency|help",
        "memory|stats",
        "memory|doctor",
        "memory|usage",
        "memory|malloc-stats",
        "memory|help",
        "acl|log",
        "acl|list",
        "acl|whoami",
        "acl|getuser",
        "acl|cat",
        "acl|users",
        "acl|dryrun",
        "acl|help",
        "acl|genpass",
        "cluster|info",
        "cluster|nodes",
        "cluster|slots",
        "cluster|shards",
        "cluster|myid",
        "cluster|keyslot",
        "cluster|countkeysinslot",
        "cluster|getkeysinslot",
        "cluster|links",
        "cluster|help",
        "cluster|replicas",
        "cluster|slaves",
        "module|list",
        "module|help",
        "object|encoding",
        "object|freq",
        "object|idletime",
        "object|refcount",
        "object|help",
        "script|exists",
        "script|help",
        "function|list",
        "function|stats",
        "function|dump",
        "function|help",
        "pubsub|channels",
        "pubsub|numpat",
        "pubsub|numsub",
        "pubsub|shardchannels",
        "pubsub|shardnumsub",
        "pubsub|help",
        "monitor",
        "readonly",
        "readwrite",
        "reset",
        "asking",  # only lets the next command reach an importing slot (a cluster's ASK redirect)
        # Sentinel's own table (a Sentinel may not answer COMMAND): what it knows, never what it changes
        "sentinel|masters",
        "sentinel|master",
        "sentinel|replicas",
        "sentinel|slaves",
        "sentinel|sentinels",
        "sentinel|get-master-addr-by-name",
        "sentinel|ckquorum",
        "sentinel|info-cache",
        "sentinel|myid",
        "sentinel|pending-scripts",
        "sentinel|simulate-failure|help",
        "sentinel|help",
    }
)

# Commands whose purpose is to lose data, availability or credentials, whatever their flags say.
DESTRUCTIVE = frozenset(
    {
        "shutdown",
        "flushall",
        "flushdb",
        "swapdb",
        "debug",
        "replicaof",
        "slaveof",
        "failover",
        "cluster|reset",
        "cluster|failover",
        "cluster|forget",
        "cluster|flushslots",
        "cluster|delslots",
        "cluster|delslotsrange",
        "cluster|setslot",
        "cluster|addslots",
        "cluster|addslotsrange",
        "cluster|meet",
        "cluster|replicate",
        "sentinel|failover",
        "sentinel|set",
        "sentinel|reset",
        "sentinel|remove",
        "sentinel|monitor",
        "sentinel|flushconfig",
        "sentinel|config",
        "sentinel|simulate-failure",
        "sentinel|is-master-down-by-addr",  # a vote in a failover election
        "acl|deluser",
        "acl|setuser",
        "acl|load",
        "script|flush",
        "function|flush",
        "function|delete",
        "function|restore",
        "client|kill",
        "client|pause",
        "migrate",
        "module|unload",
        # a script or function can do anything, FLUSHALL included; EVAL_RO / FCALL_RO are flagged readonly
        "eval",
        "evalsha",
        "fcall",
    }
)

# CONFIG SET of these parameters changes credentials or where data lives: destructive.
DESTRUCTIVE_CONFIG = frozenset(
    {
        "requirepass",
        "masterauth",
        "masteruser",
        "dir",
        "dbfilename",
        "appendonly",
        "appenddirname",
        "save",
        "aclfile",
        "tls-key-file-pass",
        "tls-client-key-file-pass",
    }
)

# Sent by the client library itself while connecting; never data.
HANDSHAKE = frozenset({"auth", "hello", "select", "client|setinfo", "client|setname", "ping", "readonly"})

# Commands that change the connection itself: its database, identity, protocol, reply mode, transaction or
# subscription state, or that move data between databases. The engine owns the connection (the target's
# URL names its database); a step never sends these. `call` refuses all of them, the socket guard refuses
# them outside the library's own handshake (MULTI ... EXEC only as one closed transaction in one write,
# MONITOR only on the monitor step's own connection, which `call` never reaches).
CONNECTION_STATE = frozenset(
    {
        "select",
        "swapdb",
        "move",
        "reset",
        "hello",
        "auth",
        "quit",
        "client|setname",
        "client|setinfo",
        "client|reply",
        "client|tracking",
        "client|caching",
        "client|no-evict",
        "client|no-touch",
        "readonly",
        "readwrite",
        "asking",
        "multi",
        "exec",
        "discard",
        "watch",
        "unwatch",
        "subscribe",
        "unsubscribe",
        "psubscribe",
        "punsubscribe",
        "ssubscribe",
        "sunsubscribe",
        "monitor",
        "sync",
        "psync",
        "replconf",
    }
)
STATE_FIRST_WORDS = frozenset(name.split("|")[0] for name in CONNECTION_STATE)
# First words of CONNECTION_STATE commands as RESP bulk strings: a packet holding none of them is passed
# without decoding (keyspace pipelines of thousands of commands in a real run).
_STATE_MARKERS = tuple(
    sorted({b"\r\n" + name.split("|")[0].encode() + b"\r\n" for name in CONNECTION_STATE - {"monitor"}})
)


def connection_state_command(argv: Sequence[str | bytes]) -> str | None:
    """'SELECT', 'CLIENT REPLY', ... when `argv` would change the connection's state; None otherwise."""
    if not argv:
        return None
    name = _text(argv[0]).lower()
    if name in CONNECTION_STATE:
        return name.upper()
    if name == "client" and len(argv) > 1:
        full = f"client|{_text(argv[1]).lower()}"
        if full in CONNECTION_STATE:
            return full.replace("|", " ").upper()
    return None


def state_changes_in_packet(packed: bytes) -> str | None:
    """The first connection-state command in bytes about to be written, or None (the socket guard).

    MULTI ... EXEC (or DISCARD) pass when they open and close in the same write: that is how the
    library sends a transaction; a MULTI left open would queue every later command on the connection.
    """
    lowered = packed.lower()
    if not any(marker in lowered for marker in _STATE_MARKERS):
        return None
    in_multi = False
    for argv in decode_resp_commands(packed):
        found = connection_state_command(argv)
        if found is None:
            continue
        name = found.lower()
        if name == "monitor":
            continue
        if name == "multi" and not in_multi:
            in_multi = True
            continue
        if name in ("exec", "discard") and in_multi:
            in_multi = False
            continue
        return found
    return "MULTI (left open)" if in_multi else None


@dataclass(frozen=True)
class CommandInfo:
    name: str
    flags: frozenset[str]
    categories: frozenset[str]
    key_flags: frozenset[str]
    subcommands: Mapping[str, CommandInfo]


def parse_command_table(reply: Mapping[str, object]) -> dict[str, CommandInfo]:
    """COMMAND / COMMAND INFO as parsed by redis-py (dicts on top, raw lists for subcommands)."""
    return {name.lower(): _entry(value) for name, value in reply.items() if value}


def _entry(value: object) -> CommandInfo:
    if isinstance(value, Mapping):
        name = value["name"]
        flags, cats = value.get("flags", []), value.get("acl_categories", [])
        specs, subs = value.get("key_specifications", []), value.get("subcommands", [])
    else:  # [name, arity, flags, first, last, step, categories, tips, key_specs, subcommands]
        seq = list(cast("Iterable[Any]", value))
        name, flags = seq[0], seq[2]
        cats = seq[6] if len(seq) > 6 else []
        specs = seq[8] if len(seq) > 8 else []
        subs = seq[9] if len(seq) > 9 else []
    sub_entries = {}
    for sub in subs or []:
        entry = _entry(sub)
        sub_entries[entry.name.split("|", 1)[-1].lower()] = entry
    return CommandInfo(
        name=_text(name).lower(),
        flags=frozenset(_text(f).lower() for f in flags or []),
        categories=frozenset(_text(c).lower() for c in cats or []),
        key_flags=frozenset(_spec_flags(specs)),
        subcommands=sub_entries,
    )


def _spec_flags(specs: object) -> list[str]:
    out: list[str] = []
    for spec in specs or []:  # type: ignore[attr-defined]
        if isinstance(spec, Mapping):
            out.extend(_text(f).lower() for f in spec.get("flags", []))
        elif isinstance(spec, list | tuple):  # raw: [b"notes", ..., b"flags", [..], ...]
            items = list(spec)
            for key, val in zip(items[::2], items[1::2], strict=False):
                if _text(key).lower() == "flags":
                    out.extend(_text(f).lower() for f in val)
    return out


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def command_name(argv: Sequence[str | bytes], table: Mapping[str, CommandInfo] | None) -> str:
    """'config|set' for a command with subcommands, 'del' otherwise."""
    name = _text(argv[0]).lower()
    info = table.get(name) if table else None
    has_subs = (
        bool(info.subcommands)
        if info
        else name in {"config", "client", "acl", "cluster", "memory", "slowlog", "latency", "object", "sentinel"}
    )
    if has_subs and len(argv) > 1:
        return f"{name}|{_text(argv[1]).lower()}"
    return name


def classify(argv: Sequence[str | bytes], table: Mapping[str, CommandInfo] | None) -> Effect:
    """The effect of sending `argv` to a server whose command table is `table`."""
    if not argv:
        return Effect.DESTRUCTIVE
    full = command_name(argv, table)
    if full == "config|set":
        params = {_text(a).lower() for a in argv[2::2]}
        return Effect.DESTRUCTIVE if params & DESTRUCTIVE_CONFIG else Effect.WRITE
    if full in DESTRUCTIVE:
        return Effect.DESTRUCTIVE
    if full == "restore" and any(_text(a).lower() == "replace" for a in argv[4:]):
        return Effect.DESTRUCTIVE  # RESTORE ... REPLACE overwrites whatever the key held
    if full in ("expire", "pexpire") and len(argv) > 2 and _deletes_now(argv[2]):
        return Effect.DESTRUCTIVE  # a TTL of zero or less deletes the key on the spot
    if full == "acl|log" and len(argv) > 2 and _text(argv[2]).lower() == "reset":
        return Effect.WRITE
    if full in READ_ONLY:
        return Effect.READ
    if full.startswith("sentinel|") or full == "sentinel":
        return Effect.DESTRUCTIVE  # Sentinel's own commands: a new one is never taken for a read
    name, _, sub = full.partition("|")
    info = table.get(name) if table else None
    if info is not None and sub:
        info = info.subcommands.get(sub)
    if info is None:
        return Effect.DESTRUCTIVE  # unknown to the server (or no table yet): assume the worst
    if "write" in info.flags:
        if info.key_flags & {"rm", "delete"} or "@dangerous" in info.categories:
            return Effect.DESTRUCTIVE
        return Effect.WRITE
    if "readonly" in info.flags and "admin" not in info.flags:
        return Effect.READ
    return Effect.WRITE


# Commands whose effect depends on their arguments: never answered from the name alone.
_ARGUMENT_DEPENDENT = frozenset({"expire", "pexpire", "restore", "config", "acl", "client", "slowlog"})


def always_read(table: Mapping[str, CommandInfo]) -> frozenset[bytes]:
    """Lower-case names (as bytes) of commands that read whatever their arguments: the guard's fast path."""
    names = set()
    for name, info in table.items():
        if info.subcommands or name in _ARGUMENT_DEPENDENT:
            continue
        if classify([name], table) is Effect.READ:
            names.add(name.encode())
    return frozenset(names)


def _deletes_now(ttl: str | bytes) -> bool:
    try:
        return int(_text(ttl)) <= 0
    except ValueError:
        return False


def decode_resp_commands(packed: bytes) -> list[list[bytes]]:
    """Split what redis-py is about to put on the wire back into argument lists.

    Used by the dry-run guard at the socket: whatever path built a command (a call, a pipeline, a
    transaction, a library helper), this is where it is seen before it leaves the process.
    """
    commands: list[list[bytes]] = []
    pos, end = 0, len(packed)
    while pos < end:
        if packed[pos : pos + 1] != b"*":
            raise ValueError(f"unexpected RESP request byte at {pos}")
        eol = packed.index(b"\r\n", pos)
        count = int(packed[pos + 1 : eol])
        pos = eol + 2
        argv: list[bytes] = []
        for _ in range(count):
            if packed[pos : pos + 1] != b"$":
                raise ValueError(f"unexpected RESP bulk byte at {pos}")
            eol = packed.index(b"\r\n", pos)
            size = int(packed[pos + 1 : eol])
            start = eol + 2
            if start + size + 2 > end or packed[start + size : start + size + 2] != b"\r\n":
                raise ValueError(f"truncated RESP bulk at {start}")
            argv.append(packed[start : start + size])
            pos = start + size + 2
        commands.append(argv)
    return commands


def snapshot(table: Mapping[str, CommandInfo]) -> dict[str, object]:
    """A JSON-able copy of a command table: what `validate` uses when no server is at hand."""

    def dump(info: CommandInfo) -> dict[str, object]:
        out: dict[str, object] = {
            "flags": sorted(info.flags),
            "categories": sorted(info.categories),
            "key_flags": sorted(info.key_flags),
        }
        if info.subcommands:
            out["subcommands"] = {name: dump(sub) for name, sub in sorted(info.subcommands.items())}
        return out

    return {name: dump(info) for name, info in sorted(table.items())}


def from_snapshot(data: Mapping[str, Any]) -> dict[str, CommandInfo]:
    def load(name: str, raw: Mapping[str, Any]) -> CommandInfo:
        subs: Mapping[str, Any] = raw.get("subcommands") or {}
        return CommandInfo(
            name=name,
            flags=frozenset(raw["flags"]),
            categories=frozenset(raw["categories"]),
            key_flags=frozenset(raw["key_flags"]),
            subcommands={k: load(f"{name}|{k}", v) for k, v in subs.items()},
        )

    return {name: load(name, raw) for name, raw in data.items() if not name.startswith("_")}


def bundled_table() -> dict[str, CommandInfo]:
    """Redis 7.0's command table, shipped for static checks.

    Regenerate with: python -m engine.adapters.redis_effects redis://HOST:PORT > engine/data/redis-commands.json
    """
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "data" / "redis-commands.json"
    return from_snapshot(json.loads(path.read_text(encoding="utf-8")))


if __name__ == "__main__":  # pragma: no cover - maintenance tool
    import json
    import sys

    import redis

    client = redis.Redis.from_url(sys.argv[1], decode_responses=True)
    version = client.info("server")["redis_version"]
    data = snapshot(parse_command_table(client.execute_command("COMMAND")))
    json.dump({"_redis_version": version, **data}, sys.stdout, indent=None, separators=(",", ":"), sort_keys=True)
