"""What the runs measured and asked for, read from their `step.finished` lines: the post-mortem's evidence.

A step's `impact:` figures become Impact, its failed expectations become findings (with the step's
`show` line as the values behind them), its `follow_up:` texts become action items, and a
`severity` on a note (or `SEV2` / `P1` in a `declared` note's text) the incident's severity. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from engine.timeline.model import Check, Entry, Figure, Finding, FollowUp, Source

SEVERITY_WORD = re.compile(r"\b(SEV[- ]?[0-5]|P[0-5])\b", re.IGNORECASE)
FOLLOW_UP_KINDS = ("prevent", "detect", "mitigate")


def _step(event: Mapping[str, Any]) -> Mapping[str, Any]:
    step = event.get("step")
    return step if isinstance(step, Mapping) else {}


def _step_name(event: Mapping[str, Any]) -> str:
    step = _step(event)
    return str(step.get("name") or step.get("id") or "step")


def _procedure(event: Mapping[str, Any], source: Source | None) -> str | None:
    step = _step(event)
    inner = step.get("procedure") if step.get("call_depth") else None
    return str(inner) if inner else (source.procedure if source else None)


def _finished(entries: Sequence[Entry]) -> list[Entry]:
    return [e for e in entries if e.type == "step.finished"]


def figures(entries: Sequence[Entry], sources: Mapping[str, Source]) -> tuple[Figure, ...]:
    """Every `impact` figure recorded, in timeline order."""
    out = []
    for entry in _finished(entries):
        items = entry.event.get("impact")
        source = sources.get(entry.run_id)
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, Mapping) or not item.get("name"):
                continue
            out.append(
                Figure(
                    time=entry.time,
                    ref=entry.ref,
                    procedure=_procedure(entry.event, source),
                    step=_step_name(entry.event),
                    name=str(item["name"]),
                    value=item.get("value"),
                    unit=str(item.get("unit") or ""),
                    dry_run=bool(source and source.dry_run),
                )
            )
    return tuple(out)


def _expectations(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = event.get("expectations")
    return [x for x in found if isinstance(x, Mapping)] if isinstance(found, list) else []


def findings(entries: Sequence[Entry], sources: Mapping[str, Source]) -> tuple[Finding, ...]:
    """Every expectation that did not hold (any severity), with the step's measured values as evidence."""
    out = []
    for entry in _finished(entries):
        impact = bool(entry.event.get("impact"))
        summary = entry.event.get("summary")
        for x in _expectations(entry.event):
            if x.get("held") is not False:
                continue
            out.append(
                Finding(
                    time=entry.time,
                    ref=entry.ref,
                    procedure=_procedure(entry.event, sources.get(entry.run_id)),
                    step=_step_name(entry.event),
                    severity=str(x.get("severity") or "critical"),
                    message=" ".join(str(x.get("message") or x.get("that") or "").split()),
                    evidence=str(summary) if summary else None,
                    impact=impact,
                )
            )
    return tuple(out)


def checks(entries: Sequence[Entry], sources: Mapping[str, Source]) -> tuple[Check, ...]:
    """The checked expectations of steps that measure impact: when the symptom was seen, when it was gone."""
    out = []
    for entry in _finished(entries):
        if not entry.event.get("impact"):
            continue
        judged = [x for x in _expectations(entry.event) if x.get("held") in (True, False)]
        if not judged or all(x.get("severity") == "info" for x in judged):
            continue
        held = all(x.get("held") is True for x in judged if x.get("severity") != "info")
        out.append(
            Check(
                entry.time, entry.ref, _procedure(entry.event, sources.get(entry.run_id)), _step_name(entry.event), held
            )
        )
    return tuple(out)


def follow_ups(entries: Sequence[Entry], sources: Mapping[str, Source]) -> tuple[FollowUp, ...]:
    """Declared follow-ups of the steps that ran, the same (kind, text) once with every source line."""
    found: dict[tuple[str, str], FollowUp] = {}
    for entry in _finished(entries):
        items = entry.event.get("follow_up")
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, Mapping) or not item.get("text"):
                continue
            kind = str(item.get("kind") or "")
            text = " ".join(str(item["text"]).split())
            key = (kind, text)
            if key in found:
                old = found[key]
                found[key] = FollowUp(old.kind, old.text, (*old.refs, entry.ref), old.procedure)
            else:
                found[key] = FollowUp(kind, text, (entry.ref,), _procedure(entry.event, sources.get(entry.run_id)))
    return tuple(found.values())


def severity(entries: Sequence[Entry]) -> tuple[str | None, str | None]:
    """(severity, source line): the latest note's `severity`, else `SEV2`/`P1` in the latest declared note."""
    notes = [e for e in entries if e.type == "note"]
    given = [e for e in notes if isinstance(e.event.get("severity"), str) and e.event["severity"].strip()]
    if given:
        last = given[-1]
        return str(last.event["severity"]).strip(), last.ref
    for entry in reversed(notes):
        if entry.event.get("milestone") != "declared":
            continue
        match = SEVERITY_WORD.search(str(entry.event.get("text") or ""))
        if match:
            return match[1].upper().replace(" ", ""), entry.ref
    return None, None
