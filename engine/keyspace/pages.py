"""The client-side path: SCAN pages, and one pipeline per page for each kind of per-key check.

`scan_pages` is the only place that walks the keyspace; every check function takes one page of keys
and costs one round trip (two for the EXPIRE fallback on servers without EXPIRE NX). A server-side
(Lua) path would yield the same observations per page and feed the same accumulators.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from engine.errors import ActionFailed
from engine.keyspace.aggregate import check_calls, parse_checks, parse_sizes, parse_ttls, parse_type_memory

if TYPE_CHECKING:
    from engine.adapters.redis import RedisAdapter

MIN_COUNT = 1000  # SCAN COUNT: fewer round trips; never below this whatever a procedure asks
_LENGTH = {"string": "STRLEN", "hash": "HLEN", "list": "LLEN", "set": "SCARD", "zset": "ZCARD", "stream": "XLEN"}


def scan_pages(adapter: RedisAdapter, match: str, count: int = MIN_COUNT) -> Iterator[list[str]]:
    """Pages of key names matching `match`, as SCAN returns them (COUNT at least 1000); empty pages skipped.

    SCAN guarantees every key present for the whole scan is returned; a key may come twice when the
    table is resized mid-scan, and keys created or removed meanwhile may or may not appear.
    """
    yield from adapter.scan(match, max(int(count), MIN_COUNT))


def ttl_page(adapter: RedisAdapter, keys: Sequence[str]) -> list[tuple[str, int]]:
    """(key, TTL in seconds) for the keys of one page that still exist."""
    if not keys:
        return []
    return parse_ttls(keys, adapter.pipeline_calls([["TTL", k] for k in keys]))


def size_page(adapter: RedisAdapter, keys: Sequence[str]) -> list[tuple[str, int]]:
    """(key, MEMORY USAGE bytes) for the keys of one page that still exist.

    MEMORY USAGE alone still sizes a key whose TTL has run out but which Redis has not reclaimed yet
    (it looks the key up without the expiry check); an EXISTS before it in the same pipeline does the
    check, so such a key is skipped as gone.
    """
    if not keys:
        return []
    replies = adapter.pipeline_calls([c for k in keys for c in (["EXISTS", k], ["MEMORY", "USAGE", k])])
    sizes = []
    for key, exists, size in zip(keys, replies[0::2], replies[1::2], strict=True):
        if isinstance(exists, BaseException):
            raise ActionFailed(f"EXISTS {key}: {exists}")
        sizes.append(None if exists == 0 else size)  # a replica answers 0 yet still sizes an expired key
    return parse_sizes(keys, sizes)


def type_memory_page(adapter: RedisAdapter, keys: Sequence[str]) -> list[tuple[str, str, int]]:
    """(key, type, bytes) for the keys of one page that still exist: TYPE and MEMORY USAGE, one pipeline."""
    if not keys:
        return []
    calls = [c for k in keys for c in (["TYPE", k], ["MEMORY", "USAGE", k])]
    return parse_type_memory(keys, adapter.pipeline_calls(calls))


def checks_page(adapter: RedisAdapter, keys: Sequence[str], checks: Sequence[str]) -> list[dict[str, Any]]:
    """Rows {key, type?, ttl?, memory?} for the keys of one page that still exist."""
    if not keys:
        return []
    if not checks:
        return [{"key": k} for k in keys]
    calls = [c for k in keys for c in check_calls(k, checks)]
    return parse_checks(keys, checks, adapter.pipeline_calls(calls))


def details(adapter: RedisAdapter, keys_by_type: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Length (elements, or bytes for strings) and TTL of a few named keys, one pipeline: for the biggest keys."""
    pairs = [(kind, key) for kind, keys in keys_by_type.items() for key in keys]
    calls = []
    for kind, key in pairs:
        calls.append([_LENGTH[kind], key] if kind in _LENGTH else ["EXISTS", key])
        calls.append(["TTL", key])
    if not calls:
        return {}
    replies = adapter.pipeline_calls(calls)
    out = {}
    for i, (kind, key) in enumerate(pairs):
        length, ttl = replies[2 * i], replies[2 * i + 1]
        out[key] = {
            "length": length if kind in _LENGTH and isinstance(length, int) else None,
            "ttl": ttl if isinstance(ttl, int) and ttl != -2 else None,
        }
    return out


def expire_page(
    adapter: RedisAdapter, keys: Sequence[str], ttl: int, *, only_without_ttl: bool, nx: bool = True
) -> tuple[list[str], int]:
    """Set `ttl` seconds on `keys`; returns (keys changed, keys skipped because they had a TTL).

    With `only_without_ttl`, EXPIRE ... NX (Redis >= 7.0) leaves keys that have a TTL alone, atomically
    per key; each EXPIRE is followed by a TTL in the same pipeline, so a 0 reply is told apart: the key
    had a TTL (skipped) or was gone (neither). Without NX (older servers) the TTLs are read first and
    only keys without one get EXPIRE: two round trips, and a key given a TTL in between is overwritten.
    """
    if not keys:
        return [], 0
    if only_without_ttl and not nx:
        present = ttl_page(adapter, keys)
        bare = [k for k, t in present if t == -1]
        changed, _ = expire_page(adapter, bare, ttl, only_without_ttl=False)
        return changed, len(present) - len(bare)
    flags = ["NX"] if only_without_ttl else []
    calls = [c for k in keys for c in (["EXPIRE", k, str(ttl), *flags], ["TTL", k])]
    replies = adapter.pipeline_calls(calls)
    changed, skipped = [], 0
    for i, key in enumerate(keys):
        reply, after = replies[2 * i], replies[2 * i + 1]
        for command, value in (("EXPIRE", reply), ("TTL", after)):
            if isinstance(value, BaseException):
                raise ActionFailed(f"{command} {key}: {value}")
        if reply == 1:
            changed.append(key)
        elif after != -2:
            skipped += 1
    return changed, skipped


def unlink_page(adapter: RedisAdapter, keys: Sequence[str]) -> list[str]:
    """UNLINK each key of the page (one pipeline); returns the keys that were there and are now gone."""
    if not keys:
        return []
    replies = adapter.pipeline_calls([["UNLINK", k] for k in keys])
    removed = []
    for key, reply in zip(keys, replies, strict=True):
        if isinstance(reply, BaseException):
            raise ActionFailed(f"UNLINK {key}: {reply}")
        if reply == 1:
            removed.append(key)
    return removed
