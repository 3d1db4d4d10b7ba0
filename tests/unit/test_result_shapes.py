"""Every kind declares what it registers; docs/procedure-format.md lists it; a drifting result is caught."""

from __future__ import annotations

import pytest

from engine.steps import kinds
from engine.steps.results import RESULTS, check_result, docs_path, render_markdown, updated_docs


def test_every_kind_declares_its_result_shape() -> None:
    assert set(kinds()) <= set(RESULTS), f"kinds without a declared result: {set(kinds()) - set(RESULTS)}"


def test_every_operation_of_a_multi_operation_kind_is_declared() -> None:
    for name, kind in kinds().items():
        options = kind.schema.get("properties") if kind.schema.get("maxProperties") == 1 else None
        options = kind.schema.get("operations", options)
        if options and "" not in RESULTS[name]:
            assert set(options) <= set(RESULTS[name]), name


def test_docs_list_every_shape_and_are_up_to_date() -> None:
    text = docs_path().read_text(encoding="utf-8")
    assert text == updated_docs(text), "run `python -m engine.steps.results --write`"
    for name in kinds():
        assert f"- `{name}`" in render_markdown()
    assert "`biggest` object" in text  # the example of issue 13: memory_report.biggest is a mapping by type


@pytest.mark.parametrize(
    ("kind", "body", "result"),
    [
        ("latency", {"count": 3}, {"pings": 3, "min_ms": 1}),  # fields missing
        ("tcp", {}, {"connected": "yes", "error": None, "elapsed_ms": 1, "host": "h", "port": 1, "reply": None}),
        ("redis", {"scan": {"match": "*"}}, {"k": 1}),  # a list promised
        ("keyspace", {"memory_report": {}}, {"scanned": 1, "total_bytes": 1, "biggest": []}),
        ("wait", "1s", {"waited": 1}),
    ],
)
def test_a_result_that_drifts_from_its_shape_is_named(kind, body, result) -> None:
    assert check_result(kind, body, result) is not None


def test_matching_results_pass_and_series_are_checked_per_sample() -> None:
    assert check_result("wait", "1s", {"waited_s": 1.0}) is None
    assert check_result("redis", {"command": ["GET", "k"]}, None) is None
    series = {
        "samples": [{"t": 0.0, "at": "x", "value": {"waited_s": 1}}, {"t": 1.0, "at": "x", "value": {"no": 1}}],
        "readings": [],
        "count": 2,
        "errors": 0,
        "interrupted": False,
        "every_s": 1.0,
        "elapsed_s": 1.0,
    }
    assert "sample" in (check_result("wait", "1s", series, sampled=True) or "")
