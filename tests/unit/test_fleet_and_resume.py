"""Pure parts of fleets and resume: target selection, plans and batches, reading a stopped run."""

from __future__ import annotations

import pytest

from engine.errors import UsageError
from engine.run.fleet import FleetPlan, worst
from engine.run.resume import StepKey, compatible, plan_from_events, what_changed
from engine.targets import is_pattern, select_targets

INVENTORY = {
    "file": "inv.yaml",
    "data": {
        "environments": {
            "production": {
                "targets": {
                    "cache": {"tags": ["canary"]},
                    "queue": {},
                    "sessions": {"tags": ["eu", "canary"]},
                }
            },
            "staging": {"targets": {"cache": {}, "queue": {"tags": ["eu"]}}},
        }
    },
}


def test_patterns_names_and_order():
    assert select_targets(INVENTORY, ["production/*"]) == [
        "production/cache",
        "production/queue",
        "production/sessions",
    ]
    assert select_targets(INVENTORY, ["cache"]) == ["production/cache", "staging/cache"]
    assert select_targets(INVENTORY, ["staging/queue", "production/c*", "staging/queue"]) == [
        "staging/queue",
        "production/cache",
    ]
    assert select_targets(INVENTORY, ["*/queue"]) == ["production/queue", "staging/queue"]


def test_limit_and_exclude_by_name_or_tag():
    every = ["*/*"]
    assert select_targets(INVENTORY, every, limit=["canary"]) == ["production/cache", "production/sessions"]
    assert select_targets(INVENTORY, every, limit=["tag:eu"], exclude=["staging/*"]) == ["production/sessions"]
    assert select_targets(INVENTORY, every, exclude=["tag:canary", "queue"]) == ["staging/cache"]


def test_a_pattern_that_matches_nothing_or_an_empty_selection_is_an_error():
    with pytest.raises(UsageError, match="matches no target"):
        select_targets(INVENTORY, ["prod/*"])
    with pytest.raises(UsageError, match="leave no target"):
        select_targets(INVENTORY, ["production/*"], exclude=["*"])


def test_is_pattern():
    assert is_pattern("production/*") and is_pattern("cache-[12]") and not is_pattern("production/cache")


def test_batches_and_worst():
    plan = FleetPlan("p", ("a", "b", "c", "d", "e"), rolling=True, batch=2)
    assert plan.batches() == [("a", "b"), ("c", "d"), ("e",)]
    assert FleetPlan("p", ("a", "b", "c"), rolling=False, batch=1).batches() == [("a", "b", "c")]
    assert worst([0, 1, 4, 0]) == 4 and worst([]) == 0


def _step(step_id, **extra):
    return {"id": step_id, "name": step_id, "call_depth": 0, "iteration": None, **extra}


def _events():
    return [
        {
            "type": "run.started",
            "run_id": "R1",
            "procedure": {"id": "p", "file": "p.yaml", "sha256": "a" * 64},
            "engine_version": "1.4.2",
            "argv": ["runbook", "run", "p"],
        },
        {"type": "target.identified", "redis_run_id": "abc"},
        {"type": "step.started", "step": _step("read"), "effect": "read", "command": "GET x"},
        {"type": "step.finished", "step": _step("read"), "outcome": "ok", "effect": "read", "result": "v"},
        {"type": "step.started", "step": _step("bad"), "effect": "read", "command": "GET y"},
        {"type": "step.finished", "step": _step("bad"), "outcome": "failed", "effect": "read"},
        {"type": "step.started", "step": _step("item", iteration=0), "effect": "write", "command": "SET a"},
        {"type": "step.finished", "step": _step("item", iteration=0), "outcome": "ok", "effect": "write"},
        {"type": "step.started", "step": _step("wipe"), "effect": "destructive", "command": "DEL k"},
        {"type": "approval.given", "step": _step("wipe"), "by": "alice", "method": "typed-target"},
    ]


def test_a_stopped_run_reads_as_done_steps_and_one_change_in_doubt():
    plan = plan_from_events(_events(), "t.jsonl")
    # a failed step is not done; a loop item is, as that item
    assert set(plan.done) == {StepKey((), "read"), StepKey((), "item", 0)}
    assert plan.done[StepKey((), "read")].result == "v"
    assert plan.in_doubt is not None
    assert (plan.in_doubt.step_id, plan.in_doubt.approved, plan.in_doubt.command) == ("wipe", True, "DEL k")
    assert plan.redis_run_id == "abc"


def test_secret_precondition_and_cut_down_reads_are_not_reused():
    plan = plan_from_events(_events(), "t.jsonl")

    class Step:
        def __init__(self, **kw):
            self.id, self.secret, self.precondition = "read", kw.get("secret", False), kw.get("precondition", False)

    read = StepKey((), "read")
    assert plan.reuse(read, Step()) is not None
    assert plan.reuse(read, Step(secret=True)) is None
    assert plan.reuse(read, Step(precondition=True)) is None
    cut = _events()
    cut[3] = {**cut[3], "result": ["x"] * 3 + ["... 5 more items"]}
    assert plan_from_events(cut, "t.jsonl").reuse(read, Step()) is None


def test_a_finished_change_is_not_in_doubt():
    events = [*_events(), {"type": "step.finished", "step": _step("wipe"), "outcome": "ok", "effect": "destructive"}]
    plan = plan_from_events(events, "t.jsonl")
    assert plan.in_doubt is None and StepKey((), "wipe") in plan.done


def test_what_changed_names_each_change():
    plan = plan_from_events(_events(), "t.jsonl")
    assert what_changed(plan, procedure_sha256="a" * 64, engine_version="1.4.9", redis_run_id="abc") == []
    changes = what_changed(plan, procedure_sha256="b" * 64, engine_version="2.0.0", redis_run_id="def")
    assert len(changes) == 3
    assert "procedure file p.yaml changed" in changes[0]
    assert "1.4.2 to 2.0.0" in changes[1]
    assert "run_id abc then, def now" in changes[2]
    assert compatible("1.4.2", "1.4.0") and not compatible("1.4.2", "1.5.0")


def test_not_a_run_transcript_is_a_usage_error():
    with pytest.raises(UsageError, match="not a run transcript"):
        plan_from_events([{"type": "note"}], "n.jsonl")


def test_a_change_refused_at_its_prompt_is_not_in_doubt():
    events = [*_events()[:-1], {"type": "approval.refused", "step": _step("wipe"), "by": "bob", "reason": "SIGINT"}]
    assert plan_from_events(events, "t.jsonl").in_doubt is None


def _inner(step_id, iteration=None, call_iteration=None, **extra):
    """A step of test/child, called by the step `nested` of test/p (at its foreach item `call_iteration`)."""
    path = [{"procedure": "p", "step": "nested", "iteration": call_iteration}]
    return {"id": step_id, "name": step_id, "call_depth": 1, "iteration": iteration, "call_path": path, **extra}


def test_steps_inside_a_call_and_loop_items_are_keyed_by_their_call_path_and_iteration():
    head = _events()[:2]
    events = [
        *head,
        {"type": "step.started", "step": _step("nested"), "effect": "read", "command": "call child"},
        {"type": "step.started", "step": _inner("each", 0), "effect": "write", "command": "INCR a"},
        {"type": "step.finished", "step": _inner("each", 0), "outcome": "ok", "effect": "write", "result": 1},
        {"type": "step.started", "step": _inner("each", 1), "effect": "write", "command": "INCR b"},
        {"type": "approval.given", "step": _inner("each", 1), "by": "alice", "method": "yes"},
    ]
    plan = plan_from_events(events, "t.jsonl")
    path = (("p", "nested", None),)
    assert set(plan.done) == {StepKey(path, "each", 0)}  # the call itself never finished: it runs again
    done = plan.done[StepKey(path, "each", 0)]
    assert (done.result, done.command) == (1, "INCR a")
    assert str(StepKey(path, "each", 0)) == "nested > each[0]"
    # the change in flight inside the call is in doubt, as that item of that call; the call (a read) is not
    assert plan.in_doubt is not None
    assert plan.in_doubt.key == StepKey(path, "each", 1) and plan.in_doubt.approved
    assert plan.in_doubt.command == "INCR b"
    # the same step of the same callee under another item of the calling loop is another step
    assert StepKey((("p", "nested", 0),), "each", 0) not in plan.done


def test_a_legacy_transcript_reuses_its_top_level_steps_only():
    """Written before `call_path`: a step inside a call cannot be told apart, so it is neither reused nor in doubt."""
    legacy = {"id": "each", "name": "each", "call_depth": 1, "iteration": 0}
    events = [
        *_events()[:4],
        {"type": "step.started", "step": legacy, "effect": "write", "command": "INCR a"},
        {"type": "step.finished", "step": legacy, "outcome": "ok", "effect": "write"},
        {"type": "step.started", "step": {**legacy, "iteration": 1}, "effect": "write", "command": "INCR b"},
    ]
    plan = plan_from_events(events, "t.jsonl")
    assert set(plan.done) == {StepKey((), "read")}
    assert plan.in_doubt is None
