"""engine/backup/scope.py: Redis glob semantics and the by-tenant count a restore is checked with."""

from __future__ import annotations

import pytest

from engine.backup.scope import check, redis_glob, tenant_pattern


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("tenant:acme:*", b"tenant:acme:wm:active", True),
        ("tenant:acme:*", b"tenant:acme:", True),
        ("tenant:acme:*", b"tenant:acmex:wm", False),
        ("tenant:acme:*", b"tenant:globex:wm:active", False),
        ("tenant:acme:*", b"somabrain:global:config", False),
        ("tenant:acme:*", b"xtenant:acme:k", False),  # anchored at both ends
        ("tenant:acme:*", b"tenant:acme:\n\xff", True),  # any bytes, newlines included
        ("k?", b"k1", True),
        ("k?", b"k12", False),
        ("k[0-2]", b"k1", True),
        ("k[2-0]", b"k1", True),  # a reversed range is swapped, as Redis does
        ("k[^0-2]", b"k1", False),
        ("k[^0-2]", b"k7", True),
        ("k[abc", b"kb", True),  # an unclosed class ends with the pattern
        ("k\\*", b"k*", True),
        ("k\\*", b"kx", False),
        ("k[\\]]", b"k]", True),
        ("a.b", b"axb", False),  # regex characters are literal
        ("k[]", b"k]", False),  # an empty class matches nothing
    ],
)
def test_redis_glob(pattern, key, matches):
    assert bool(redis_glob(pattern).fullmatch(key)) is matches


def test_tenant_pattern_escapes_glob_characters():
    assert tenant_pattern("acme") == "tenant:acme:*"
    assert tenant_pattern("a*") == "tenant:a\\*:*"
    assert redis_glob(tenant_pattern("a*")).fullmatch(b"tenant:a*:k")
    assert not redis_glob(tenant_pattern("a*")).fullmatch(b"tenant:ab:k")


def test_check_counts_every_key_by_tenant_and_finds_those_outside():
    keys = [f"tenant:acme:k{i}".encode() for i in range(30)]
    keys += [b"tenant:globex:wm:active", b"somabrain:global:config"]
    report = check(keys, ["tenant:acme:*", tenant_pattern("acme")])
    assert report.patterns == ("tenant:acme:*",)  # the same pattern twice is checked once
    assert report.keys == 32 and report.by_tenant == {"acme": 30, "globex": 1, "(none)": 1}
    assert report.outside == 2 and report.outside_by_tenant == {"globex": 1, "(none)": 1}
    assert report.outside_sample == ["tenant:globex:wm:active", "somabrain:global:config"]
    assert "2 of its 32 keys lie outside tenant:acme:*" in report.describe_outside()


def test_both_patterns_must_match():
    report = check([b"tenant:globex:k"], ["tenant:globex:*", tenant_pattern("acme")])
    assert report.outside == 1
    assert "outside tenant:globex:* and tenant:acme:*" in report.describe_outside()
