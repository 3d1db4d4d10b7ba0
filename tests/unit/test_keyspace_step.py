"""The `keyspace` step kind without a server: effects, summaries, value checks, the pattern-delete guard, validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.errors import UsageError
from engine.spec.loader import check_file
from engine.spec.model import Effect
from engine.steps import get
from engine.steps.keyspace_step import _flag, _int, _seconds


@pytest.fixture
def kind():
    return get("keyspace")


@pytest.mark.parametrize(
    ("body", "effect"),
    [
        ({"audit_ttl": {"match": "*"}}, Effect.READ),
        ({"memory_report": {"match": "*"}}, Effect.READ),
        ({"list": {"match": "tenant:*:wm:*"}}, Effect.READ),
        ({"expire_matching": {"match": "x:*", "ttl": 60, "max_keys": 5}}, Effect.WRITE),
        ({"delete_matching": {"match": "x:*", "max_keys": 5}}, Effect.DESTRUCTIVE),
    ],
)
def test_static_effect(kind, body: dict[str, Any], effect: Effect) -> None:
    assert kind.static_effect(body) is effect


def test_summaries_name_the_scan_and_the_per_key_commands(kind) -> None:
    assert kind.summary({"audit_ttl": {"match": "*", "count": 50}}) == (
        "SCAN MATCH '*' COUNT 1000 | TTL per key, a pipeline per page: keys without TTL"
    )
    assert "EXPIRE key 3600 NX" in kind.summary({"expire_matching": {"match": "a:*", "ttl": 3600.0, "max_keys": 9}})
    assert "NX" not in kind.summary(
        {"expire_matching": {"match": "a:*", "ttl": 60, "max_keys": 9, "only_without_ttl": False}}
    )
    assert "COUNT 5000 | UNLINK" in kind.summary({"delete_matching": {"match": "a:*", "count": 5000, "max_keys": 1}})


@pytest.mark.parametrize(("value", "seconds"), [(3600, 3600), (3600.0, 3600), ("1h", 3600), ("90s", 90), ("5m", 300)])
def test_ttl_values(value: Any, seconds: int) -> None:
    assert _seconds(value) == seconds


@pytest.mark.parametrize("value", [0, "0s", "500ms", 1.5, "soon", None])
def test_bad_ttl_values(value: Any) -> None:
    with pytest.raises(UsageError, match="ttl"):
        _seconds(value)


def test_whole_numbers_and_flags() -> None:
    assert _int({"n": "42"}, "n") == 42 and _int({"n": 7.0}, "n") == 7 and _int({}, "n", 20) == 20
    for bad in ({"n": "x"}, {"n": 1.5}, {"n": True}, {"n": -1}, {}):
        with pytest.raises(UsageError):
            _int(bad, "n")
    assert _flag(None, True) is True and _flag("false", True) is False and _flag("yes", False) is True
    with pytest.raises(UsageError):
        _flag("maybe", True)


class _NoServer:
    """A context whose Redis must not be reached: the broad-pattern check comes before any connection."""

    class connections:
        @staticmethod
        def redis():
            raise AssertionError("connected before refusing the pattern")


@pytest.mark.parametrize("match", ["*", "tenant:*", "*:wm:*", "tenant:old*"])
def test_broad_delete_refused_before_connecting(kind, match: str) -> None:
    with pytest.raises(UsageError, match="delete_matching refused"):
        kind.plan({"delete_matching": {"match": match, "max_keys": 10}}, _NoServer())


def _write(tmp_path: Path, step: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        "id: test/p\ntitle: t\nsection: t\ndescription: t\nrequires: [redis]\nsteps:\n" + step, encoding="utf-8"
    )
    return path


def test_validate_wants_a_confirm_text_for_pattern_changes(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "  - id: d\n    name: d\n    keyspace:\n      delete_matching: {match: 'a:*', max_keys: 5}\n"
    )
    _, errors, _ = check_file(path)
    assert any("needs a 'confirm' text" in e.message for e in errors)
    path = _write(tmp_path, "  - id: d\n    name: d\n    keyspace:\n      audit_ttl: {match: '*'}\n")
    assert check_file(path)[1] == []


def test_schema_allows_exactly_one_operation(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "  - id: d\n    name: d\n    keyspace:\n      audit_ttl: {match: '*'}\n      memory_report: {match: '*'}\n",
    )
    assert any("exactly one of" in e.message for e in check_file(path)[1])
    path = _write(tmp_path, "  - id: d\n    name: d\n    keyspace:\n      audit_ttl: {match: '*', top: 3}\n")
    assert any("unknown option 'top'" in e.message for e in check_file(path)[1])
