"""Did the dry-run predict what the real run then did? Step by step, from the two transcripts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engine.outcome import Outcome
from engine.records import ChangeRecord

_VERBS = {  # kind -> (singular, plural)
    "keys_removed": ("key deleted", "keys deleted"),
    "ttl_set": ("TTL set", "TTLs set"),
    "keys_written": ("key written", "keys written"),
    "config": ("config value changed", "config values changed"),
    "file": ("file written", "files written"),
    "command": ("command run", "commands run"),
    "service": ("service action", "service actions"),
    "password_rotated": ("password rotated", "passwords rotated"),
    "clients_killed": ("client disconnected", "clients disconnected"),
}


@dataclass(frozen=True)
class StepComparison:
    step: str
    predicted: str
    actual: str
    matched: bool
    expected: str | None = None  # why the scenario expects this step to differ (its expected_differences)


def _key(event: dict[str, Any]) -> tuple[str, str, int | None, int]:
    step = event["step"]
    return step.get("procedure", ""), step["id"], step.get("iteration"), step.get("call_depth", 0)


def _tally(changes: Iterable[ChangeRecord]) -> dict[str, int]:
    out: dict[str, int] = {}
    for change in changes:
        kind = change.get("kind", "?")
        count = change.get("count")
        out[kind] = out.get(kind, 0) + (int(count) if isinstance(count, int) else 1)
    return out


def describe(tally: dict[str, int]) -> str:
    if not tally:
        return "no change"
    return "; ".join(f"{n:,} {_VERBS.get(kind, (kind, kind))[n != 1]}" for kind, n in sorted(tally.items()))


def compare(dry_events: list[dict[str, Any]], real_events: list[dict[str, Any]]) -> list[StepComparison]:
    """One row per step the dry-run predicted a change for, matched to the same step of the real run."""
    predicted = {
        _key(e): e for e in dry_events if e["type"] == "step.finished" and e.get("outcome") == Outcome.PREDICTED
    }
    actual = {_key(e): e for e in real_events if e["type"] == "step.finished"}
    rows = []
    for key, event in predicted.items():
        want = _tally(event.get("predicted_changes") or [])
        real = actual.get(key)
        if real is None:
            rows.append(StepComparison(key[1], describe(want), "step did not run", False))
            continue
        if real.get("outcome") != Outcome.OK:
            rows.append(StepComparison(key[1], describe(want), f"step {real.get('outcome')}", False))
            continue
        got = _tally(real.get("changes") or [])
        rows.append(StepComparison(key[1], describe(want), describe(got), want == got))
    for key, event in actual.items():  # a change the dry-run never saw coming
        if key not in predicted and event.get("changes") and event.get("outcome") == Outcome.OK:
            rows.append(StepComparison(key[1], "not predicted", describe(_tally(event["changes"])), False))
    return rows
