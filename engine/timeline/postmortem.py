"""`runbook postmortem`: a post-mortem draft with every fact the transcripts know already written.

What the records can say (times, durations, procedures, outcomes, what changed, who approved or
refused what) is filled in; what only people know (impact on users, causes, actions) is left as a
`TODO (author)` prompt, so the draft is never mistaken for a finished document.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from engine.timeline import fmt
from engine.timeline.header import run_line, span, when
from engine.timeline.markdown import cell, code, render_markdown
from engine.timeline.model import Facts, Finding, Timeline

TODO = "✏️ **TODO (author):**"
OWN_KEYS = re.compile(r"keys removed: \d+ \((runbook:[^,()]*(, )?)+\)")
"""A change that removed only the engine's own keys (a probe it wrote): not data the incident lost."""


def _todo(text: str) -> list[str]:
    return [f"{TODO} {text}", ""]


def _t(facts: Facts, moment: datetime | None) -> str:
    if moment is None or facts.start is None:
        return ""
    return f" ({fmt.offset(moment - facts.start)})"


def _first(f: Facts) -> str:
    said = f": {cell(f.first_signal_text)}" if f.first_signal_text else ""
    return f"- First signal: {fmt.stamp(f.first_signal)}{said}"


def _touched(f: Facts) -> str:
    """The targets changed, as the inventory names them (environment included), with where they are."""
    changed = {c.ref.rsplit("#", 1)[0] for c in f.live_changes}
    names = sorted({r.target for r in f.runs if r.run_id in changed and r.target})
    return ", ".join(names) or ", ".join(sorted({c.where for c in f.live_changes})) or "no target"


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _summary(f: Facts, zone: ZoneInfo | None) -> list[str]:
    live = [r for r in f.runs if r.mode == "live"]
    touched = _touched(f)
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


def _figures(f: Facts) -> list[str]:
    """Each measured figure: its first, worst (largest) and last value, each with its source line."""
    out = []
    names = list(dict.fromkeys(x.name for x in f.figures))
    for name in names:
        seen = [x for x in f.figures if x.name == name]
        numeric = [x for x in seen if isinstance(x.value, int | float) and not isinstance(x.value, bool)]
        picks = {"first": seen[0]}
        if numeric:
            picks["peak"] = max(numeric, key=lambda x: x.value)
        picks["last"] = seen[-1]
        shown: list[str] = []
        done: set[str] = set()
        for label, x in picks.items():
            if x.ref in done:
                continue
            done.add(x.ref)
            dry = ", dry-run" if x.dry_run else ""
            shown.append(
                f"{label} {cell(_number(x.value))} {cell(x.unit)} at {fmt.clock(x.time)}{_t(f, x.time)} "
                f"({cell(x.procedure or '?')}{dry}, {code(x.ref)})"
            )
        out.append(f"- **{cell(name)}**: " + "; ".join(shown))
    return out


def _window(f: Facts) -> list[str]:
    """First failing check to the last passing one, from the steps that measure impact."""
    failing = [c for c in f.checks if not c.held]
    if not failing:
        return []
    first = failing[0]
    passing = [c for c in f.checks if c.held and c.time > failing[-1].time]
    line = f"- Checks failing from {fmt.stamp(first.time)}{_t(f, first.time)} ({cell(first.step)}, {code(first.ref)})"
    if passing:
        last = passing[-1]
        line += f" to passing again at {fmt.stamp(last.time)}{_t(f, last.time)} ({cell(last.step)}, {code(last.ref)})"
        line += f": {fmt.duration(last.time - first.time)} measured"
    else:
        line += f"; still failing at the last check ({code(failing[-1].ref)})"
    return [line]


def _impact(f: Facts) -> list[str]:
    out = ["## Impact", ""]
    out += _todo("who was affected (tenants, users, requests) and how badly; the measured figures are below.")
    if f.figures:
        out += ["Measured by the runs (first, worst and last value, with the transcript line):", ""]
        out += _figures(f)
        out.append("")
    out += _window(f)
    symptoms = [x for x in f.findings if x.impact]
    for x in _distinct(symptoms):
        out.append(f"- Failed check: {cell(x.message)} ({cell(x.procedure or '?')}, {code(x.ref)})")
    out.append(f"- Impact start: {fmt.stamp(f.impact_start) if f.impact_start else 'not recorded'}")
    out.append(f"- Time to detect: {span(f.time_to_detect, 'impact start to detected', 'not recorded')}")
    out.append(f"- Time to acknowledge: {span(f.time_to_acknowledge, 'detected to acknowledged', 'not recorded')}")
    out.append(f"- Time to mitigate: {span(f.time_to_mitigate, 'impact start to mitigated', 'not recorded')}")
    out.append(f"- Time to resolve: {span(f.time_to_resolve, 'impact start to resolved', 'not recorded')}")
    removed = [c for c in f.live_changes if c.text.startswith("keys removed") and not OWN_KEYS.fullmatch(c.text)]
    for c in removed:
        out.append(f"- Data removed by the response: {cell(c.text)} on {cell(c.where)} ({code(c.ref)})")
    return [*out, ""]


def _distinct(findings: list[Finding]) -> list[Finding]:
    """One finding per message: the first one seen."""
    seen: dict[str, Finding] = {}
    for x in findings:
        seen.setdefault(x.message, x)
    return list(seen.values())


def _causes(f: Facts) -> list[str]:
    out = ["## Contributing causes", ""]
    causes = _distinct([x for x in f.findings if not x.impact])
    if causes:
        out += ["Findings of the runs, with the values measured:", ""]
        for x in causes:
            evidence = f"<br>  Evidence: {cell(x.evidence)}" if x.evidence else ""
            out.append(
                f"- **{cell(x.message)}** ({cell(x.severity)}; {cell(x.step)} in {cell(x.procedure or '?')}, "
                f"{code(x.ref)}){evidence}"
            )
        out.append("")
    else:
        out += ["No run recorded a finding outside the impact checks.", ""]
    return out + _todo("the root cause: keep asking why until the answer is something to act on.")


def _trigger(f: Facts) -> list[str]:
    out = ["## Trigger", ""]
    out += _todo("what set it off (a deploy, a traffic spike, a config change, a failing dependency).")
    if f.first_signal_text:
        out += [f"First recorded signal: {cell(f.first_signal_text)} at {fmt.stamp(f.first_signal)}.", ""]
    return out


def _severity(f: Facts) -> str:
    if not f.severity:
        return "✏️ (record it: runbook note ... --milestone declared --severity SEV2)"
    return f"{cell(f.severity)} ({code(f.severity_ref or '')})"


def _detection(f: Facts, zone: ZoneInfo | None) -> list[str]:
    out = ["## Detection", ""]
    gap = span(f.detection_gap, "first signal to declared", "unknown (no declared milestone)")
    if f.impact_start:
        out.append(f"- Impact started: {fmt.stamp(f.impact_start)}")
    out.append(_first(f))
    out.append(f"- Time to detect: {span(f.time_to_detect, 'impact start to detected', 'not recorded')}")
    out.append(f"- Acknowledged: {cell(when(f.acknowledged, f, zone, 'acknowledged'))}")
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
    out += _todo("an owner, a due date and a ticket for each; add what the procedures could not know.")
    out += ["| Action | Type | Owner | Due | Ticket |", "|---|---|---|---|---|"]
    for item in f.follow_ups:
        refs = ", ".join(code(r) for r in item.refs)
        out.append(f"| {cell(item.text)} ({cell(item.procedure or '?')}, {refs}) | {cell(item.kind)} | ✏️ | ✏️ | ✏️ |")
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
        f"| Severity | {_severity(f)} |",
        f"| Date | {fmt.stamp(f.first_signal)} |",
        "",
    ]
    for notice in timeline.notices:
        out += [f"> **⚠ {cell(notice.kind)}**: {cell(notice.text)}", ""]
    out += _summary(f, zone) + _impact(f) + _trigger(f) + _detection(f, zone) + _resolution(f)
    out += _causes(f)
    out += _action_items(f) + _lessons(f)
    out.append(render_markdown(timeline, zone=zone, base=base, level=2, detail="key"))
    return "\n".join(out)
