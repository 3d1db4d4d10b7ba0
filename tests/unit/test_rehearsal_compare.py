"""Predicted-vs-actual comparison of a dry-run and a real run, from their step.finished events."""

from __future__ import annotations

from engine.rehearsal.compare import compare, describe


def finished(step_id: str, outcome: str, *, predicted=None, changes=None, iteration=None) -> dict:
    event = {
        "type": "step.finished",
        "outcome": outcome,
        "step": {"id": step_id, "procedure": "redis/x", "iteration": iteration, "call_depth": 0},
    }
    if predicted is not None:
        event["predicted_changes"] = predicted
    if changes is not None:
        event["changes"] = changes
    return event


def test_matching_prediction():
    dry = [finished("delete", "predicted", predicted=[{"kind": "keys_removed", "count": 1234, "keys": []}])]
    real = [finished("delete", "ok", changes=[{"kind": "keys_removed", "count": 1234, "keys": []}])]
    (row,) = compare(dry, real)
    assert row.matched and row.predicted == "1,234 keys deleted" and row.actual == "1,234 keys deleted"


def test_count_mismatch_is_flagged():
    dry = [finished("delete", "predicted", predicted=[{"kind": "keys_removed", "count": 10}])]
    real = [finished("delete", "ok", changes=[{"kind": "keys_removed", "count": 9}])]
    (row,) = compare(dry, real)
    assert not row.matched and row.actual == "9 keys deleted"


def test_step_that_did_not_run_or_failed_is_flagged():
    dry = [
        finished("a", "predicted", predicted=[{"kind": "config", "name": "maxmemory"}]),
        finished("b", "predicted", predicted=[{"kind": "ttl_set", "count": 1}]),
    ]
    real = [finished("b", "error")]
    rows = {r.step: r for r in compare(dry, real)}
    assert rows["a"].actual == "step did not run" and not rows["a"].matched
    assert rows["b"].actual == "step error" and not rows["b"].matched


def test_unpredicted_change_is_flagged_and_iterations_are_told_apart():
    dry = [finished("each", "predicted", predicted=[{"kind": "ttl_set", "count": 1}], iteration=0)]
    real = [
        finished("each", "ok", changes=[{"kind": "ttl_set", "count": 1}], iteration=0),
        finished("each", "ok", changes=[{"kind": "ttl_set", "count": 1}], iteration=1),
    ]
    rows = compare(dry, real)
    assert [r.matched for r in rows] == [True, False]
    assert rows[1].predicted == "not predicted"


def test_describe_singular_and_plural():
    assert describe({}) == "no change"
    assert describe({"keys_removed": 1, "config": 2}) == "2 config values changed; 1 key deleted"
