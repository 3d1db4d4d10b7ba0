"""The timeline as Markdown: paste it into the post-mortem, the ticket or the wiki as it is.

Warnings first (a broken hash chain, a cut-off run), then the facts, then one table per UTC day.
Every row links to the line of the transcript it comes from, as `run-id#seq`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

from engine.printable import printable
from engine.timeline import fmt
from engine.timeline.changes import join
from engine.timeline.header import fact_lines
from engine.timeline.model import Row, Timeline, by_day

_NOTICE_LABEL = {
    "chain": "⚠ Hash chain broken",
    "problem": "⚠ Damaged transcript",
    "cut-off": "⚠ Cut off",
    "duplicate": "⚠ Conflicting copies",
}


_INLINE = str.maketrans(
    {
        **{c: "\\" + c for c in "\\`*_[]!~|"},  # emphasis, code, links and images, strike, table cells
        "<": "&lt;",  # no inline HTML, no autolink
        "&": "&amp;",  # no entity smuggles a character in
    }
)


def inline(text: object) -> str:
    """Any text as literal Markdown on one line: it can form no HTML, link, image, emphasis, code
    or table cell boundary, and controls (bidi, escapes) are shown escaped. Newlines become <br>."""
    shown = printable(text, multiline=True).translate(_INLINE)
    return "<br>".join(part.strip() for part in shown.splitlines()) if "\n" in shown else shown


def cell(text: str) -> str:
    """Plain text safe inside a table cell (and anywhere inline): see `inline`."""
    return inline(text)


def code(text: str) -> str:
    """Inline code inside a table cell: one line, a fence longer than any backtick run inside."""
    text = printable(" ".join(str(text).split())).replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def link(row: Row, paths: dict[str, str], base: Path | None) -> str:
    """`run-id#seq` linked to the transcript line (relative to where the Markdown is written)."""
    label = code(row.ref)
    path = paths.get(row.run_id)
    if not path:
        return label
    target = os.path.relpath(path, base) if base is not None else path
    return f"[{label}]({quote(Path(target).as_posix(), safe='/._-~')}#L{row.line})"


def what(row: Row) -> str:
    if row.milestone:
        text = f"**{row.milestone.upper()}: {cell(row.what)}**"
    elif row.status in ("failed", "cut-off"):
        text = f"**{cell(row.what)}**"
    else:
        text = cell(row.what)
    if row.command:
        text += "<br>" + code(row.command)
    if row.changes:
        label = "would change" if row.predicted else "**changed**"
        text += f"<br>{label}: {cell(join(row.changes))}"
    if row.detail:
        text += f"<br>*{cell(row.detail)}*"
    if row.recorded:
        text += f"<br>*(recorded {fmt.stamp(row.recorded)})*"
    if row.flag:
        text += f"<br>**⚠ integrity: {cell(row.flag)}**"
    return text


def result(row: Row) -> str:
    text = cell(row.result)
    if row.status in ("failed", "refused", "warning", "cut-off", "milestone"):
        mark = {"refused": "⊘ ", "warning": "⚠ ", "cut-off": "⚠ ", "failed": "✗ "}.get(row.status, "")
        return f"**{mark}{text}**"
    if row.status == "predicted":
        return f"*{text}*"
    if row.status == "approved":
        return f"✔ {text}"
    return text


def render_table(rows: list[Row], timeline: Timeline, zone: ZoneInfo | None, base: Path | None) -> list[str]:
    paths = {s.run_id: s.path for s in timeline.sources}
    head = ["UTC", *([zone.key] if zone else []), "T+", "Who", "What", "Where", "Result", "Source"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [
            fmt.clock(row.time),
            *([fmt.local(row.time, zone)] if zone else []),
            fmt.offset(row.offset),
            cell(row.who),
            what(row),
            cell(row.where),
            result(row),
            link(row, paths, base),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def render_notices(timeline: Timeline) -> list[str]:
    out = []
    for notice in timeline.notices:
        out.append(f"> **{_NOTICE_LABEL.get(notice.kind, '⚠')}**: {cell(notice.text)}")
        out.append(">")
    return [*out[:-1], ""] if out else []


def render_changes(timeline: Timeline) -> list[str]:
    changes = timeline.facts.changes
    if not changes:
        return []
    out = ["What changed (live runs; dry-run predictions marked *would*):", ""]
    for c in changes:
        by = f", approved by {cell(c.approved_by)}" if c.approved_by else ""
        label = "*would*: " if c.predicted else ""
        where = f" on {cell(c.where)}" if c.where else ""
        out.append(f"- {fmt.stamp(c.time)} ({code(c.ref)}){where}: {label}{cell(c.text)}{by}")
    return [*out, ""]


def render_markdown(
    timeline: Timeline,
    *,
    zone: ZoneInfo | None = None,
    base: Path | None = None,
    level: int = 1,
    detail: str = "full",
) -> str:
    """The whole timeline; `base` is the directory the Markdown is written to (for links), `level`
    the heading level of its title (2 inside a post-mortem), `detail` the view (`key` or `full`)."""
    h = "#" * level
    incident = timeline.facts.incident
    out = [f"{h} Timeline{f' of incident {cell(incident)}' if incident else ''}", ""]
    out.extend(render_notices(timeline))
    out.extend(["| Fact | |", "|---|---|"])
    out.extend(f"| {label} | {'<br>'.join(cell(v) for v in values)} |" for label, values in fact_lines(timeline, zone))
    out.append("")
    out.extend(render_changes(timeline))
    rows_shown = timeline.view(detail)
    if detail == "key" and rows_shown:
        out.extend(
            [
                f"*Key events: {len(rows_shown)} of {len(timeline.rows)} rows (each run is one row; its steps are "
                "in `runbook timeline --detail full`).*",
                "",
            ]
        )
    for day, rows in by_day(rows_shown):
        out.extend([f"{h}# {cell(day)}", ""])
        out.extend(render_table(rows, timeline, zone, base))
        out.append("")
    if not timeline.rows:
        out.extend(["*No events.*", ""])
    return "\n".join(out)
