"""Redis configuration values compared the way Redis means them, not as text.

`CONFIG GET maxmemory` says 2147483648 where a baseline says 2gb; `save` may be written `900 1 300 10`
or on several redis.conf lines; `client-output-buffer-limit` holds three classes of which a tuning step
sets one; Redis 7 renamed the ziplist settings to listpack and keeps the old names as aliases. These
pure functions resolve names and normalise values so that a comparison says "differs" only when the
server would behave differently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from engine.spec.params import parse_size

# Redis 7 names (listpack) for the pre-7 ziplist settings; CONFIG GET/SET accept both on 7.
ZIPLIST_ALIASES = {
    "hash-max-ziplist-entries": "hash-max-listpack-entries",
    "hash-max-ziplist-value": "hash-max-listpack-value",
    "zset-max-ziplist-entries": "zset-max-listpack-entries",
    "zset-max-ziplist-value": "zset-max-listpack-value",
    "list-max-ziplist-size": "list-max-listpack-size",
}
OTHER_ALIASES = {"slaveof": "replicaof", "slave-read-only": "replica-read-only", "slave-priority": "replica-priority"}

# Values that are credentials: compared, never shown.
CREDENTIALS = frozenset({"requirepass", "masterauth", "masteruser", "tls-key-file-pass", "tls-client-key-file-pass"})
MASK = "[SECRET:redis-credential]"

_SIZE_TOKEN = re.compile(r"^\d+(b|k|kb|m|mb|g|gb|t|tb)?$", re.IGNORECASE)


def canonical_name(param: str, available: Mapping[str, Any]) -> tuple[str, str | None]:
    """The name to read and set on this server, and a note when it is an alias of what was asked.

    `available` is the server's CONFIG GET * answer: on Redis 7 the listpack names are there and are the
    ones to use; on Redis 6 only the ziplist names exist.
    """
    name = param.lower()
    for aliases in (ZIPLIST_ALIASES, OTHER_ALIASES):
        modern = aliases.get(name)
        if modern and modern in available:
            return modern, f"{name} is an alias of {modern} on this server (Redis 7): read and set as {modern}"
    return name, None


def _token(value: str) -> str:
    """One value token: sizes to bytes ('32mb' -> '33554432'), words lower-cased."""
    text = value.strip().strip('"').strip("'")
    if _SIZE_TOKEN.match(text):
        return str(parse_size(text.lower()))
    return text.lower()


def normalise(param: str, value: Any) -> Any:
    """A comparable form of `value` for `param`: a tuple of tokens, or a mapping for per-class settings."""
    if value is None:
        return None
    if isinstance(value, bool):
        value = "yes" if value else "no"
    text = str(value).strip()
    if param == "client-output-buffer-limit":
        tokens = text.split()
        classes: dict[str, tuple[str, ...]] = {}
        for i in range(0, len(tokens) - 3, 4):
            cls = tokens[i].lower()
            cls = {"slave": "replica"}.get(cls, cls)
            classes[cls] = tuple(_token(t) for t in tokens[i + 1 : i + 4])
        return classes
    if text in ('""', "''"):
        text = ""
    return tuple(_token(t) for t in text.split())


def same(param: str, current: Any, desired: Any) -> bool:
    """Would the server behave the same with `desired` as with `current`?

    For client-output-buffer-limit only the classes named in `desired` are compared (CONFIG SET of
    'normal 32mb 8mb 60' leaves the replica and pubsub classes as they are).
    """
    a, b = normalise(param, current), normalise(param, desired)
    if isinstance(a, dict) and isinstance(b, dict):
        return all(a.get(cls) == limits for cls, limits in b.items())
    return a == b


def shown(param: str, value: Any) -> Any:
    """A value fit to display: credentials masked (when set), everything else as given."""
    if param in CREDENTIALS and value:
        return MASK
    return value


def compare(current: Mapping[str, Any], desired: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per desired setting: the name used on this server, current and desired values, same or not.

    `current` is the server's CONFIG GET * answer. A setting the server does not know is reported with
    `known: false` (and never counted as the same).
    """
    rows = []
    for asked, wanted in desired.items():
        name, note = canonical_name(str(asked), current)
        known = name in current
        value = current.get(name)
        wanted_text = _as_config_text(wanted)
        rows.append(
            {
                "param": name,
                "asked": str(asked),
                "known": known,
                "current": shown(name, value),
                "desired": shown(name, wanted_text),
                "same": known and same(name, value, wanted_text),
                "note": note,
            }
        )
    return rows


def _as_config_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return " ".join(_as_config_text(v) for v in value)
    return "" if value is None else str(value)


def parse_redis_conf(text: str) -> dict[str, str]:
    """redis.conf lines (a local file, or `cat` output over ssh) -> {directive: value}.

    Comments and blank lines are skipped; quotes around a value are removed; repeated directives that
    Redis accumulates (save, client-output-buffer-limit, rename-command) are joined with a space.
    """
    out: dict[str, str] = {}
    for raw in str(text).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        name = name.lower()
        if name in out and name in _ACCUMULATED:
            out[name] = f"{out[name]} {value}"
        else:
            out[name] = value
    return out


_ACCUMULATED = frozenset({"save", "client-output-buffer-limit", "rename-command", "loadmodule", "include"})
