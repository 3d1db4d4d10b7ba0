"""engine.keyspace.patterns: literal prefixes of SCAN globs and the pattern-delete scope rule."""

from __future__ import annotations

import pytest

from engine.keyspace.patterns import broad_pattern_reason, is_glob, literal_prefix


@pytest.mark.parametrize(
    ("match", "prefix", "glob"),
    [
        ("*", "", True),
        ("tenant:acme:*", "tenant:acme:", True),
        ("tenant:acme:wm:active", "tenant:acme:wm:active", False),
        ("tenant:?cme:*", "tenant:", True),
        ("tenant:[ab]*", "tenant:", True),
        (r"tenant:a\*b:*", "tenant:a*b:", True),
        (r"literal\*", "literal*", False),
        ("trailing\\", "trailing\\", False),
        ("", "", False),
    ],
)
def test_literal_prefix(match: str, prefix: str, glob: bool) -> None:
    assert literal_prefix(match) == prefix
    assert is_glob(match) is glob


@pytest.mark.parametrize(
    "match",
    [
        "*",
        "?*",
        "[a-z]*",
        "*:wm:*",
        "tenant:*",
        "tenant*",
        "t*",
        "tenant:old*",  # would also take tenant:older:...
        "tenant:old?tenant:*",
        "tenant:[ab]:*",
    ],
)
def test_broad_patterns_are_refused(match: str) -> None:
    assert broad_pattern_reason(match) is not None


@pytest.mark.parametrize(
    "match",
    [
        "tenant:old_tenant:*",
        "tenant:acme:cache:*",
        "tenant:acme:wm:active",
        "cache:*",
        "session:2024-*",
        "tenant:acme",  # one literal key
    ],
)
def test_scoped_patterns_are_allowed(match: str) -> None:
    assert broad_pattern_reason(match) is None


def test_reasons_say_why() -> None:
    assert "no literal prefix" in broad_pattern_reason("*")
    assert "every tenant" in broad_pattern_reason("tenant:*")
    assert "whole tenant" in broad_pattern_reason("tenant:old*")
