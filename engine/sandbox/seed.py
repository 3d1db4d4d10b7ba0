"""Deterministic SomaBrain-shaped keyspaces, so scans and reports have something realistic to find.

Everything comes from a seeded `random.Random`: the same arguments give the same keys, values and
TTLs, which lets tests assert exact counts and compare runs. Writes go through non-transactional
pipelines flushed every ~1000 commands to keep round trips (and memory) small.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

BATCH = 1000
BIG_KEY_FIELDS = 5000
# A fixed epoch instead of time.time(): timestamps are part of the deterministic payload.
_EPOCH = 1_700_000_000
_GOALS = ("summarise ticket", "draft reply", "plan migration", "triage alert", "answer question")


@dataclass(frozen=True)
class SeedSummary:
    """What seed_somabrain wrote: enough for tests to assert counts without rescanning."""

    keys_total: int
    per_tenant: dict[str, int]
    no_ttl_keys: tuple[str, ...]
    big_keys: tuple[str, ...]
    seed: int


@dataclass(frozen=True)
class BulkSummary:
    """What seed_bulk wrote, by type and TTL."""

    keys: int
    by_type: dict[str, int]
    with_ttl: int
    without_ttl: int
    per_tenant: dict[str, int] = field(default_factory=dict)


class _Batcher:
    """A pipeline that flushes itself every BATCH queued commands."""

    def __init__(self, client: redis.Redis | redis.RedisCluster):
        self._pipe = client.pipeline(transaction=False)
        self._queued = 0

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> None:
        getattr(self._pipe, method)(*args, **kwargs)
        self._queued += 1
        if self._queued >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self._queued:
            self._pipe.execute()
            self._queued = 0


def _text(rng: random.Random, size: int) -> str:
    """`size` hex characters: randbytes is ~20x faster than choices() and just as deterministic."""
    return rng.randbytes(size // 2 + 1).hex()[:size]


def seed_somabrain(
    client: redis.Redis | redis.RedisCluster,  # a cluster: the keys spread across the shards by slot
    *,
    tenants: Sequence[str] = ("acme", "globex", "initech"),
    wm_per_tenant: int = 5,
    cache_per_tenant: int = 20,
    no_ttl_per_tenant: int = 2,
    big_keys: int = 1,
    seed: int = 7,
) -> SeedSummary:
    """Write working-memory hashes, cache strings, a history list, a tag set, TTL-less leaks and big keys.

    Every key has a TTL except `tenant:<t>:cache:leak:<n>`, the leak a cleanup procedure should find.
    Big keys (`tenant:<first tenant>:cache:big:<n>`, ~5000 fields) count towards the first tenant.
    """
    rng = random.Random(seed)
    put = _Batcher(client)
    per_tenant: dict[str, int] = {}
    no_ttl: list[str] = []
    big: list[str] = []

    for tenant in tenants:
        prefix = f"tenant:{tenant}"
        count = 0

        active = f"{prefix}:wm:active"
        put("delete", active)
        put("hset", active, mapping=_wm_fields(rng))
        put("expire", active, 3600)
        count += 1

        for n in range(wm_per_tenant):
            key = f"{prefix}:wm:{n}"
            put("delete", key)
            put("hset", key, mapping=_wm_fields(rng))
            put("expire", key, rng.randint(600, 7200))
            count += 1

        for n in range(cache_per_tenant):
            put("set", f"{prefix}:cache:{n}", _text(rng, rng.randint(50, 2000)), ex=rng.randint(60, 86400))
            count += 1

        history = f"{prefix}:wm:history"
        put("delete", history)
        put("rpush", history, *(f"turn {i}: {_text(rng, 40)}" for i in range(rng.randint(5, 30))))
        put("expire", history, 86400)
        count += 1

        tags = f"{prefix}:cache:tags"
        put("delete", tags)
        put("sadd", tags, *rng.sample(("faq", "billing", "onboarding", "api", "bug", "sales", "ops"), 4))
        put("expire", tags, 86400)
        count += 1

        for n in range(no_ttl_per_tenant):
            key = f"{prefix}:cache:leak:{n}"
            put("set", key, _text(rng, rng.randint(50, 500)))
            no_ttl.append(key)
            count += 1

        per_tenant[tenant] = count

    if tenants:
        first = tenants[0]
        for n in range(big_keys):
            key = f"tenant:{first}:cache:big:{n}"
            put("delete", key)
            fields = {f"f{i:05d}": _text(rng, rng.randint(8, 64)) for i in range(BIG_KEY_FIELDS)}
            items = list(fields.items())
            for start in range(0, len(items), BATCH):
                put("hset", key, mapping=dict(items[start : start + BATCH]))
            put("expire", key, 86400)
            big.append(key)
        per_tenant[first] += len(big)

    put.flush()
    return SeedSummary(
        keys_total=sum(per_tenant.values()),
        per_tenant=per_tenant,
        no_ttl_keys=tuple(no_ttl),
        big_keys=tuple(big),
        seed=seed,
    )


def _wm_fields(rng: random.Random) -> dict[str, str]:
    return {
        "context": _text(rng, rng.randint(100, 600)),
        "goal": rng.choice(_GOALS),
        "turns": str(rng.randint(1, 40)),
        "updated_at": str(_EPOCH + rng.randint(0, 86400 * 30)),
    }


_TYPES = ("string", "hash", "list", "set")
_SHARES = (0.40, 0.30, 0.15, 0.15)


def seed_bulk(client: redis.Redis, keys: int, tenants: int, seed: int = 7) -> BulkSummary:
    """Write `keys` keys spread round-robin over `tenants` tenants (`t0`, `t1`, ...).

    Type shares are exact (40% strings, 30% hashes, 15% lists, 15% sets, shuffled); about 70% get a
    TTL. Hashes and lists are working memory (`tenant:<t>:wm:<id>`), strings and sets cache
    (`tenant:<t>:cache:<id>`). Returns the counts actually written.
    """
    if tenants < 1:
        raise ValueError("tenants must be >= 1")
    rng = random.Random(seed)
    counts = [int(keys * share) for share in _SHARES]
    counts[0] += keys - sum(counts)
    kinds = bytearray()
    for index, count in enumerate(counts):
        kinds += bytes([index]) * count
    rng.shuffle(kinds)

    put = _Batcher(client)
    by_type = dict.fromkeys(_TYPES, 0)
    per_tenant: dict[str, int] = {}
    with_ttl = 0
    for i, kind_index in enumerate(kinds):
        kind = _TYPES[kind_index]
        tenant = f"t{i % tenants}"
        area = "wm" if kind in ("hash", "list") else "cache"
        key = f"tenant:{tenant}:{area}:{i}"
        ttl = rng.randint(60, 86400) if rng.random() < 0.7 else None
        if kind == "string":
            put("set", key, _text(rng, rng.randint(20, 200)), ex=ttl)
        else:
            put("delete", key)
            if kind == "hash":
                put("hset", key, mapping={f"f{j}": _text(rng, 16) for j in range(rng.randint(3, 8))})
            elif kind == "list":
                put("rpush", key, *(_text(rng, 16) for _ in range(rng.randint(3, 10))))
            else:
                put("sadd", key, *(f"m{j}" for j in range(rng.randint(3, 10))))
            if ttl is not None:
                put("expire", key, ttl)
        by_type[kind] += 1
        per_tenant[tenant] = per_tenant.get(tenant, 0) + 1
        with_ttl += ttl is not None
    put.flush()
    return BulkSummary(
        keys=keys,
        by_type=by_type,
        with_ttl=with_ttl,
        without_ttl=keys - with_ttl,
        per_tenant=per_tenant,
    )
