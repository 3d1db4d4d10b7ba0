"""The typed vocabulary (engine.outcome, engine.records) says what the transcript schema allows, no less."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.outcome import Outcome, RunOutcome
from engine.records import ChangeRecord, ExpectationResult, RunCounts

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "transcript-event.schema.json").read_text())


def _event(type_: str) -> dict[str, Any]:
    for rule in SCHEMA["allOf"]:
        if rule.get("if", {}).get("properties", {}).get("type", {}).get("const") == type_:
            return rule["then"]["properties"]
    raise AssertionError(f"no rule for {type_}")


def test_run_outcomes_are_exactly_the_ones_run_ended_may_hold() -> None:
    assert {str(o) for o in RunOutcome} == set(_event("run.ended")["outcome"]["enum"])


def test_every_step_outcome_the_schema_allows_is_an_outcome() -> None:
    assert set(_event("step.finished")["outcome"]["enum"]) <= {str(o) for o in Outcome}


def test_a_member_is_the_string_on_disk() -> None:
    assert Outcome.PREDICTED == "predicted"
    assert json.dumps({"outcome": RunOutcome.FINDINGS}) == '{"outcome": "findings"}'
    assert f"{RunOutcome.INTERRUPTED}" == "interrupted"


def test_run_counts_name_every_summary_field_of_run_ended() -> None:
    assert set(_event("run.ended")["summary"]["properties"]) <= set(RunCounts.__annotations__)


def test_expectation_results_name_every_field_the_schema_allows() -> None:
    assert set(SCHEMA["$defs"]["expectation"]["properties"]) <= set(ExpectationResult.__annotations__)


def test_change_records_name_every_field_of_every_kind_the_schema_allows() -> None:
    change = SCHEMA["$defs"]["change"]
    fields = set(change["properties"])
    for rule in change.get("allOf", []):
        fields |= set(rule["then"].get("properties", {}))
    assert {"name", "before", "after", "keys", "count", "action", "path"} <= fields  # the rules were read
    assert fields <= set(ChangeRecord.__annotations__)
