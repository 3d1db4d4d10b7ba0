"""engine.keyspace.aggregate: the pure accumulators and reply parsers behind the keyspace step kind."""

from __future__ import annotations

import random

import pytest

from engine.errors import ActionFailed
from engine.keyspace.aggregate import (
    NO_TENANT,
    MemoryReport,
    Tally,
    TenantListing,
    TopN,
    TtlAudit,
    check_calls,
    normalise_checks,
    parse_checks,
    parse_sizes,
    parse_ttls,
    parse_type_memory,
    tenant_of,
)


# -- tenants ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "tenant"),
    [
        ("tenant:acme:wm:active", "acme"),
        ("tenant:acme:cache:1", "acme"),
        ("tenant:a.b-c_1:x", "a.b-c_1"),
        ("tenant:acme:", "acme"),
        ("tenant:acme", NO_TENANT),  # nothing after the tenant field: not inside a tenant's namespace
        ("tenant::x", NO_TENANT),
        ("session:42", NO_TENANT),
        ("tenants:acme:x", NO_TENANT),
        ("", NO_TENANT),
        ("tenant:acme:wm:with:more:colons", "acme"),
    ],
)
def test_tenant_of(key: str, tenant: str) -> None:
    assert tenant_of(key) == tenant


# -- TTL audit -------------------------------------------------------------------------------------
def test_ttl_audit_counts_keys_without_ttl_per_tenant() -> None:
    audit = TtlAudit(sample_size=2)
    for key, ttl in [
        ("tenant:a:1", -1),
        ("tenant:a:2", 100),
        ("tenant:b:1", -1),
        ("tenant:a:3", -1),
        ("other", -1),
        ("tenant:b:2", 0),
    ]:
        audit.add(key, ttl)
    assert audit.result() == {
        "scanned": 6,
        "without_ttl": 4,
        "by_tenant": {"a": 2, NO_TENANT: 1, "b": 1},
        "sample": ["tenant:a:1", "tenant:b:1"],
    }
    assert list(audit.result()["by_tenant"]) == ["a", NO_TENANT, "b"]  # largest first, then by name


def test_ttl_audit_skips_vanished_keys() -> None:
    audit = TtlAudit()
    audit.add("tenant:a:gone", -2)
    audit.add("tenant:a:gone2", None)
    audit.add("tenant:a:here", -1)
    assert audit.result() == {"scanned": 1, "without_ttl": 1, "by_tenant": {"a": 1}, "sample": ["tenant:a:here"]}


def test_ttl_audit_result_has_exactly_the_documented_fields() -> None:
    assert set(TtlAudit().result()) == {"scanned", "without_ttl", "by_tenant", "sample"}


def test_ttl_audit_zero_sample() -> None:
    audit = TtlAudit(sample_size=0)
    audit.add("k", -1)
    assert audit.result()["sample"] == [] and audit.result()["without_ttl"] == 1


# -- top N / memory report ---------------------------------------------------------------------------
def test_top_n_keeps_the_largest() -> None:
    rng = random.Random(3)
    pairs = [(rng.randint(0, 10_000), f"k{i}") for i in range(2000)]
    top = TopN(7)
    for size, key in pairs:
        top.add(size, key)
    expected = sorted(pairs, key=lambda p: (-p[0], p[1]))[:7]
    assert [s for s, _ in top.items()] == [s for s, _ in expected]
    assert len(top.items()) == 7


def test_top_n_zero_keeps_nothing() -> None:
    top = TopN(0)
    top.add(5, "a")
    assert top.items() == []


def test_memory_report_groups_by_type_and_tenant() -> None:
    report = MemoryReport(top=2)
    rows = [
        ("tenant:a:1", "hash", 100),
        ("tenant:a:2", "string", 50),
        ("tenant:b:1", "hash", 300),
        ("tenant:b:2", "hash", 10),
        ("loose", "list", 70),
        ("tenant:a:gone", "none", None),
        ("tenant:a:gone2", "hash", None),
    ]
    for key, kind, size in rows:
        report.add(key, kind, size)
    result = report.result({"tenant:b:1": {"length": 4, "ttl": -1}})
    assert result["scanned"] == 5
    assert result["total_bytes"] == 530
    assert result["by_type"] == {
        "hash": {"keys": 3, "bytes": 410},
        "list": {"keys": 1, "bytes": 70},
        "string": {"keys": 1, "bytes": 50},
    }
    assert list(result["by_type"]) == ["hash", "list", "string"]  # most bytes first
    assert result["by_tenant"] == {
        "b": {"keys": 2, "bytes": 310},
        "a": {"keys": 2, "bytes": 150},
        NO_TENANT: {"keys": 1, "bytes": 70},
    }
    assert result["biggest"]["hash"] == [
        {"key": "tenant:b:1", "bytes": 300, "tenant": "b", "length": 4, "ttl": -1},
        {"key": "tenant:a:1", "bytes": 100, "tenant": "a"},
    ]
    assert result["biggest"]["list"] == [{"key": "loose", "bytes": 70, "tenant": NO_TENANT}]
    assert sum(v["bytes"] for v in result["by_type"].values()) == result["total_bytes"]
    assert sum(v["keys"] for v in result["by_tenant"].values()) == result["scanned"]


def test_memory_report_empty() -> None:
    assert MemoryReport().result() == {
        "scanned": 0,
        "total_bytes": 0,
        "by_type": {},
        "by_tenant": {},
        "biggest": {},
    }


# -- listings --------------------------------------------------------------------------------------
def test_listing_groups_sorts_and_truncates() -> None:
    listing = TenantListing(limit=3)
    assert listing.add({"key": "tenant:b:wm:2", "ttl": 5})
    assert listing.add({"key": "tenant:a:wm:1", "ttl": -1})
    assert listing.add({"key": "tenant:b:wm:1", "ttl": 7})
    assert listing.full and not listing.truncated
    assert not listing.add({"key": "tenant:c:wm:1"})
    result = listing.result()
    assert result == {
        "tenants": {
            "a": [{"key": "tenant:a:wm:1", "ttl": -1}],
            "b": [{"key": "tenant:b:wm:1", "ttl": 7}, {"key": "tenant:b:wm:2", "ttl": 5}],
        },
        "count": 3,
        "truncated": True,
    }


def test_listing_exactly_at_limit_is_not_truncated() -> None:
    listing = TenantListing(limit=1)
    listing.add({"key": "x"})
    assert listing.result() == {"tenants": {NO_TENANT: [{"key": "x"}]}, "count": 1, "truncated": False}


def test_tally_bounds_its_sample() -> None:
    tally = Tally(sample_size=2)
    for i in range(5):
        tally.add(f"k{i}", 10)
    assert (tally.count, tally.bytes, tally.sample) == (5, 50, ["k0", "k1"])


# -- reply parsing ----------------------------------------------------------------------------------
def test_parse_ttls_drops_gone_and_raises_on_errors() -> None:
    assert parse_ttls(["a", "b", "c", "d"], [-1, -2, 30, None]) == [("a", -1), ("c", 30)]
    with pytest.raises(ActionFailed, match="TTL b: NOPERM"):
        parse_ttls(["a", "b"], [-1, Exception("NOPERM no permission")])


def test_parse_sizes() -> None:
    assert parse_sizes(["a", "b"], [None, 72]) == [("b", 72)]
    with pytest.raises(ActionFailed, match="MEMORY USAGE a"):
        parse_sizes(["a"], [RuntimeError("boom")])


def test_parse_type_memory_pairs_replies() -> None:
    replies = ["hash", 100, "none", None, "string", None, "list", 40]
    assert parse_type_memory(["a", "b", "c", "d"], replies) == [("a", "hash", 100), ("d", "list", 40)]
    with pytest.raises(ValueError, match="expected 4 replies"):
        parse_type_memory(["a", "b"], ["hash", 1])
    with pytest.raises(ActionFailed, match="TYPE a"):
        parse_type_memory(["a"], [Exception("x"), 1])


def test_check_calls_and_parse_checks_round_trip() -> None:
    checks = ["type", "ttl", "memory"]
    assert check_calls("k", checks) == [["TYPE", "k"], ["TTL", "k"], ["MEMORY", "USAGE", "k"]]
    replies = ["hash", -1, 200, "none", -2, None, "string", 10, 50, "set", -2, 60]
    rows = parse_checks(["a", "gone", "s", "expired-between"], checks, replies)
    assert rows == [
        {"key": "a", "type": "hash", "ttl": -1, "memory": 200},
        {"key": "s", "type": "string", "ttl": 10, "memory": 50},
    ]
    assert parse_checks(["a"], ["ttl"], [5]) == [{"key": "a", "ttl": 5}]
    with pytest.raises(ActionFailed, match="MEMORY a"):
        parse_checks(["a"], ["ttl", "memory"], [5, Exception("denied")])


def test_a_lone_memory_check_is_preceded_by_exists() -> None:
    """MEMORY USAGE sizes keys whose TTL ran out but are not reclaimed yet: EXISTS decides whether they are gone."""
    assert check_calls("k", ["memory"]) == [["EXISTS", "k"], ["MEMORY", "USAGE", "k"]]
    assert check_calls("k", ["ttl", "memory"]) == [["TTL", "k"], ["MEMORY", "USAGE", "k"]]
    rows = parse_checks(["a", "expired", "gone"], ["memory"], [1, 50, 0, 40, 0, None])
    assert rows == [{"key": "a", "memory": 50}]
    with pytest.raises(ValueError, match="expected 2 replies"):
        parse_checks(["a"], ["memory"], [50])


def test_normalise_checks() -> None:
    assert normalise_checks(None) == ["type", "ttl", "memory"]
    assert normalise_checks(["memory", "type"]) == ["type", "memory"]
    with pytest.raises(ValueError, match="unknown check"):
        normalise_checks(["size"])
