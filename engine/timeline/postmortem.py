"""`runbook postmortem`: a post-mortem draft with every fact the transcripts know already written.

What the records can say (times, durations, procedures, outcomes, what changed, who approved or
refused what) is filled in; what only people know (impact on users, causes, actions) is left as a
`TODO (author)` prompt, so the draft is never mistaken for a finished document.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from engine.timeline import fmt
from engine.timeline.header import run_line, span, when
from engine.timeline.markdown import cell, code, render_markdown
from engine.timeline.model import Facts, Timeline

TODO = "✏️ **TODO (author):**"


def _todo(text: str) -> list[str]:
    return [f"{TODO} {text}", ""]


def _t(facts: Facts, moment: datetime | None) -> str:
    if moment is None or facts.start is None:
        return ""
    return f" ({fmt.offset(moment - facts.start)})"


def _first(f: Facts) -> str:
    said = f": {cell(f.first_signal_text)}" if f.first_signal_text else ""
    return f"- First signal: {fmt.stamp(f.first_signal)}{said}"


def _summary(f: Facts, zone: ZoneInfo | None) -> list[str]:
    live = [r for r in f.runs if r.mode == "live"]
    touched = ", ".join(sorted({c.where for c in f.live_changes})) or "no target"
    out = ["## Summary", ""]
    out += _todo("two or three sentences: what broke, who was affected, how it was fixed.")
    facts = [
        _first(f),
        f"- Declared: {cell(when(f.declared, f, zone, 'declared'))}",
        f"- Mitigated: {cell(when(f.mitigated, f, zone, 'mitigated'))}",
        f"- Resolved: {cell(when(f.resolved, f, zone, 'resolved'))}",
        f"- Duration: {span(f.duration, 'first signal to resolved', 'unknown (no resolved milestone)')}",
        f"- Procedures run: {len(f.runs)} ({len(live)} live, {len(f.runs) - len(live)} dry-run), "
        f"by {', '.join(cell(o) for o in dict.fromkeys(r.operator for r in f.runs)) or 'nobody'}",
        f"- Changes made: {len(f.live_changes)} on {cell(touched)}",
    ]
    return [*out, "Recorded facts:", "", *facts, ""]


def _impact(f: Facts) -> list[str]:
    out = ["## Impact", ""]
    out += _todo("who and what was affected (tenants, users, requests, data), for how long and how badly.")
    out.append(f"- Time from first signal to mitigated: {span(f.time_to_mitigate, 'recorded', 'not recorded')}")
    out.append(f"- Time from first signal to resolved: {span(f.duration, 'recorded', 'not recorded')}")
    removed = [c for c in f.live_changes if c.text.startswith("keys removed")]
    for c in removed:
        out.append(f"- Data removed by the response: {cell(c.text)} on {cell(c.where)} ({code(c.ref)})")
    return [*out, ""]


def _trigger(f: Facts) -> list[str]:
    out = ["## Trigger", ""]
    out += _todo("what set it off (a deploy, a traffic spike, a config change, a failing dependency).")
    if f.first_signal_text:
        out += [f"First recorded signal: {cell(f.first_signal_text)} at {fmt.stamp(f.first_signal)}.", ""]
    return out


def _detection(f: Facts, zone: ZoneInfo | None) -> list[str]:
    out = ["## Detection", ""]
    gap = span(f.detection_gap, "first signal to declared", "unknown (no declared milestone)")
    out.append(_first(f))
    out.append(f"- Declared: {cell(when(f.declared, f, zone, 'declared'))}")
    out.append(f"- Detection gap: {gap}")
    out.append("")
    return out + _todo("how was it detected (alert, dashboard, customer)? Could it have been detected sooner?")


def _resolution(f: Facts) -> list[str]:
    out = ["## Resolution", ""]
    out += _todo("which action fixed it, and why it worked.")
    out += ["### Procedures run", ""]
    if f.runs:
        out += ["| Started (UTC) | T+ | Run |", "|---|---|---|"]
        out += [f"| {fmt.stamp(r.started)} | {_t(f, r.started).strip(' ()')} | {cell(run_line(r))} |" for r in f.runs]
    else:
        out.append("No procedure was run by the engine.")
    out += ["", "### What changed", ""]
    if f.live_changes:
        for c in f.live_changes:
            by = f", approved by {cell(c.approved_by)}" if c.approved_by else ""
            out.append(f"- {fmt.stamp(c.time)}{_t(f, c.time)}: {cell(c.text)} on {cell(c.where)}{by} ({code(c.ref)})")
    else:
        out.append("Nothing was changed by the engine.")
    if f.predicted_changes:
        out += ["", "Rehearsed in dry-runs (not applied):", ""]
        out += [
            f"- {fmt.stamp(c.time)}: would: {cell(c.text)} on {cell(c.where)} ({code(c.ref)})"
            for c in f.predicted_changes
        ]
    out += ["", "### Approvals and refusals", ""]
    if f.approvals:
        out += ["| Time (UTC) | Step | By | Decision | Command | Source |", "|---|---|---|---|---|---|"]
        for a in f.approvals:
            decision = f"**refused**: {cell(a.reason or '')}" if a.refused else cell(a.method)
            cmd = code(a.command) if a.command else ""
            out.append(f"| {fmt.stamp(a.time)} | {cell(a.step)} | {cell(a.by)} | {decision} | {cmd} | {code(a.ref)} |")
    else:
        out.append("No step needed an approval.")
    return [*out, ""]


def _action_items(f: Facts) -> list[str]:
    out = ["## Action items", ""]
    out += _todo("one line per action: what, prevent/detect/mitigate, owner, due date, ticket.")
    out += ["| Action | Type | Owner | Due | Ticket |", "|---|---|---|---|---|"]
    for r in f.failures:
        what = f"Follow up: {r.what} — {r.result}" + (f" on {r.where}" if r.where else "")
        out.append(f"| {cell(what)} ({code(r.ref)}) | ✏️ | ✏️ | ✏️ | ✏️ |")
    for a in f.approvals:
        if a.refused:
            out.append(f"| {cell(f'Review the refused step: {a.step} ({a.reason})')} ({code(a.ref)}) | ✏️ | ✏️ | ✏️ | ✏️ |")
    out.append("| ✏️ | ✏️ prevent / detect / mitigate | ✏️ | ✏️ | ✏️ |")
    return [*out, ""]


def _lessons(f: Facts) -> list[str]:
    out = ["## Lessons learned", "", "### What went well", ""]
    out += _todo("what helped (a procedure that worked, a fast page, a good dashboard).")
    out += ["### What went wrong", ""]
    out += _todo("what slowed the response down or made it worse.")
    if f.failures:
        out += ["Recorded failures, warnings and cut-off runs:", ""]
        out += [f"- {fmt.stamp(r.time)}: {cell(r.what)}: {cell(r.result)} ({code(r.ref)})" for r in f.failures]
        out.append("")
    out += ["### Where we got lucky", ""]
    return out + _todo("what could have gone worse.")


def render_postmortem(timeline: Timeline, *, zone: ZoneInfo | None = None, base: Path | None = None) -> str:
    """The draft as Markdown; the full timeline is its last section."""
    f = timeline.facts
    incident = f.incident or "(no incident id)"
    out = [f"# Post-mortem: {cell(incident)}", ""]
    out += [
        f"*Draft written by `runbook postmortem` from {len(timeline.sources)} source(s). Facts come from the "
        "transcripts and the incident notes; every `TODO (author)` is for you.*",
        "",
        "| | |",
        "|---|---|",
        f"| Incident | {cell(incident)} |",
        "| Status | Draft ✏️ |",
        "| Authors | ✏️ |",
        "| Severity | ✏️ |",
        f"| Date | {fmt.stamp(f.first_signal)} |",
        "",
    ]
    for notice in timeline.notices:
        out += [f"> **⚠ {cell(notice.kind)}**: {cell(notice.text)}", ""]
    out += _summary(f, zone) + _impact(f) + _trigger(f) + _detection(f, zone) + _resolution(f)
    out += ["## Root causes", "", *_todo("the causes: keep asking why until the answer is something to act on.")]
    out += _action_items(f) + _lessons(f)
    out.append(render_markdown(timeline, zone=zone, base=base, level=2))
    return "\n".join(out)
