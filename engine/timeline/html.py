"""The timeline as one self-contained HTML page: no scripts, fonts or images from anywhere, so it can
be attached to a ticket, opened offline and printed. Outputs are folded in <details>; milestones are
bold, failures red, refusals and dry-runs marked in words as well as colour (it may be printed in
black and white).
"""

from __future__ import annotations

import html
from zoneinfo import ZoneInfo

from engine import __version__
from engine.printable import printable
from engine.timeline import fmt
from engine.timeline.changes import join
from engine.timeline.header import fact_lines
from engine.timeline.model import Row, Source, Timeline, by_day


def escape(value: object, quote: bool = True) -> str:
    """HTML-escaped, and controls and bidi overrides shown as escapes (`\\u202e`) as on a terminal:
    a browser would otherwise let them reorder or hide what an operator typed."""
    return html.escape(printable(value, multiline=True), quote)


_BADGES = {
    "milestone": "",
    "failed": "FAILED",
    "refused": "REFUSED",
    "predicted": "DRY-RUN",
    "warning": "WARNING",
    "cut-off": "CUT OFF",
    "approved": "APPROVED",
}
_NOTICE_LABEL = {
    "chain": "Hash chain broken",
    "problem": "Damaged transcript",
    "cut-off": "Cut off",
    "duplicate": "Conflicting copies",
}

CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d0d7de; --red:#b42318; --amber:#9a6700; --green:#1a7f37;
  --blue:#0b5cad; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--ink); margin: 24px 32px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.generated { color: var(--muted); margin: 0 0 16px; font-size: 12px; }
.notice { border: 2px solid var(--red); background: #fef3f2; color: #7a1c12; padding: 8px 12px; margin: 8px 0;
  border-radius: 6px; }
.notice.cut-off { border-color: var(--amber); background: #fff8e5; color: #5c3d00; }
.notice strong { text-transform: uppercase; letter-spacing: .02em; margin-right: 6px; }
table { border-collapse: collapse; }
table.facts th { text-align: left; vertical-align: top; padding: 3px 16px 3px 0; color: var(--muted);
  font-weight: 600; white-space: nowrap; }
table.facts td { padding: 3px 0; }
ul.changes { margin: 4px 0; padding-left: 20px; }
ul.changes .would { color: var(--muted); font-style: italic; }
table.timeline { width: 100%; font-size: 13px; }
table.timeline th { text-align: left; background: #f6f8fa; border-bottom: 2px solid var(--line); padding: 6px 8px;
  position: sticky; top: 0; }
table.timeline td { border-bottom: 1px solid var(--line); padding: 6px 8px; vertical-align: top; }
td.time, td.tplus { white-space: nowrap; font-variant-numeric: tabular-nums; }
td.tplus { color: var(--muted); }
td.where { color: var(--muted); overflow-wrap: break-word; min-width: 10em; max-width: 14em; }
td.result { min-width: 14em; max-width: 22em; overflow-wrap: anywhere; }
td.result .more, td.what .more { color: var(--muted); }
td.who { white-space: nowrap; }
td.src { white-space: nowrap; font-size: 11px; }
td.src a { color: var(--blue); text-decoration: none; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
td.what { min-width: 24em; overflow-wrap: anywhere; }
ol.steps { margin: 4px 0 0; padding-left: 18px; font-size: 12px; font-weight: 400; font-style: normal; }
ol.steps li { margin: 2px 0; }
ol.steps .t { color: var(--muted); font-variant-numeric: tabular-nums; }
ol.steps .r { color: var(--muted); }
ol.steps .ref { color: var(--muted); font-size: 10px; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
ol.steps li.status-failed .r, ol.steps li.status-warning .r { color: var(--red); font-weight: 600; }
ol.steps li.status-skipped { color: var(--muted); }
code.cmd { display: block; margin-top: 3px; font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: #f3f4f6; border-radius: 4px; padding: 2px 6px; white-space: pre-wrap; overflow-wrap: anywhere; }
.changed { margin-top: 3px; color: var(--blue); font-weight: 600; }
.changed.would { color: var(--muted); font-weight: 400; font-style: italic; }
.detail { margin-top: 3px; color: var(--muted); font-size: 12px; white-space: pre-wrap; }
.flag { margin-top: 3px; color: var(--red); font-weight: 700; }
details { margin-top: 4px; }
details summary { cursor: pointer; color: var(--blue); font-size: 12px; }
details pre { max-height: 24em; overflow: auto; background: #f6f8fa; border: 1px solid var(--line); padding: 6px;
  font-size: 11px; white-space: pre-wrap; word-break: break-all; margin: 4px 0 0; }
.badge { display: inline-block; font-size: 10px; font-weight: 700; letter-spacing: .04em; padding: 1px 6px;
  border-radius: 10px; margin-right: 6px; vertical-align: 1px; color: #fff; background: var(--muted); }
tr.status-milestone td { background: #fff8c5; font-weight: 700; }
tr.status-milestone .badge { background: #7d4e00; }
tr.status-failed td { background: #fff1f0; }
tr.status-failed td.result, tr.status-failed td.what .title { color: var(--red); font-weight: 700; }
tr.status-failed .badge { background: var(--red); }
tr.status-refused td { background: #fff4e5; }
tr.status-refused td.result { color: #b54708; font-weight: 700; }
tr.status-refused .badge { background: #b54708; }
tr.status-warning td.result { color: var(--amber); font-weight: 700; }
tr.status-warning .badge { background: var(--amber); }
tr.status-predicted td { color: #4b5563; font-style: italic; }
tr.status-predicted .badge { background: #6e40c9; font-style: normal; }
tr.status-cut-off td { background: #fef3f2; border-top: 2px dashed var(--red); border-bottom: 2px dashed var(--red); }
tr.status-cut-off td.result, tr.status-cut-off td.what .title { color: var(--red); font-weight: 700; }
tr.status-cut-off .badge { background: var(--red); }
tr.status-approved td.result { color: var(--green); font-weight: 600; }
tr.status-approved .badge { background: var(--green); }
tr.status-started td { border-top: 2px solid #afb8c1; }
tr.status-skipped td { color: var(--muted); }
table.sources td, table.sources th { text-align: left; padding: 3px 10px 3px 0; font-size: 12px; vertical-align: top; }
.bad { color: var(--red); font-weight: 700; }
@media print {
  body { margin: 0; font-size: 11px; }
  table.timeline { font-size: 10px; }
  table.timeline th { position: static; }
  tr { break-inside: avoid; }
  details pre { display: none; }
  details.steps::details-content, details.more::details-content { content-visibility: visible; display: block; }
  td.what { min-width: 14em; } td.result { min-width: 9em; } td.where { min-width: 7em; max-width: 10em; }
  td.src { white-space: normal; overflow-wrap: anywhere; font-size: 8px; max-width: 9em; }
  td.who { white-space: normal; }
  .detail, code.cmd, ol.steps { font-size: 9px; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  a { color: inherit; }
}
"""


def _text(value: str) -> str:
    return escape(value).replace("\n", "<br>")


def _what(row: Row) -> str:
    badge = _BADGES.get(row.status, "")
    if row.milestone:
        badge = row.milestone.upper()
    parts = [f'<div class="title">{f"<span class=badge>{badge}</span>" if badge else ""}{_text(row.what)}</div>']
    if row.command:
        parts.append(f'<code class="cmd">{escape(row.command)}</code>')
    if row.changes:
        label = "would change" if row.predicted else "changed"
        css = "changed would" if row.predicted else "changed"
        parts.append(f'<div class="{css}">{label}: {escape(join(row.changes))}</div>')
    if row.detail:
        parts.append(f'<div class="detail">{escape(row.detail)}</div>')
    if row.recorded:
        parts.append(f'<div class="detail">recorded {escape(fmt.stamp(row.recorded))}</div>')
    if row.flag:
        parts.append(f'<div class="flag">⚠ integrity: {escape(row.flag)}</div>')
    if row.steps:
        parts.append(_folded(row))
    if row.output:
        lines = row.output.count("\n") + 1
        parts.append(
            f"<details><summary>output ({lines} line{'s' if lines != 1 else ''})</summary>"
            f"<pre>{escape(row.output)}</pre></details>"
        )
    return "".join(parts)


LONG = 90
"""Characters of a result shown before the rest is folded away."""


def _long(text: str) -> str:
    """A short text as it is; a long one (a warning message) cut at a word, the rest in <details>."""
    if len(text) <= LONG:
        return _text(text)
    cut = text.rfind(" ", 0, LONG)
    cut = cut if cut > LONG // 2 else LONG
    return f"{_text(text[:cut])}… <details class='more'><summary>more</summary>{_text(text[cut:].strip())}</details>"


def _folded(row: Row) -> str:
    """A run's rows, folded under its one row: time, step, result, and what it ran or changed."""
    items = []
    for r in row.steps:
        extra = ""
        if r.command:
            extra += f'<code class="cmd">{escape(r.command)}</code>'
        if r.changes:
            css, label = ("changed would", "would change") if r.predicted else ("changed", "changed")
            extra += f'<div class="{css}">{label}: {escape(join(r.changes))}</div>'
        items.append(
            f'<li class="status-{escape(r.status)}"><span class="t">{fmt.clock(r.time)}</span> '
            f'<span class="s">{escape(r.what)}</span> <span class="r">{escape(r.result)}</span>'
            f' <span class="ref">{escape(r.ref)}</span>{extra}</li>'
        )
    return (
        f"<details class='steps'><summary>{len(row.steps)} rows of this run</summary>"
        f"<ol class='steps'>{''.join(items)}</ol></details>"
    )


def _row(index: int, row: Row, zone: ZoneInfo | None, paths: dict[str, str]) -> str:
    where = paths.get(row.run_id, "")
    title = escape(f"{where}, line {row.line}" if where else row.ref, quote=True)
    cells = [
        f'<td class="time">{fmt.clock(row.time)}</td>',
        *([f'<td class="time local">{escape(fmt.local(row.time, zone))}</td>'] if zone else []),
        f'<td class="tplus">{escape(fmt.offset(row.offset))}</td>',
        f'<td class="who">{_text(row.who)}</td>',
        f'<td class="what">{_what(row)}</td>',
        f'<td class="where">{_text(row.where.replace(" (", chr(10) + "(", 1))}</td>',
        f'<td class="result">{_long(row.result)}</td>',
        f'<td class="src"><a href="#src-{escape(row.run_id, quote=True)}" title="{title}">{escape(row.ref)}</a></td>',
    ]
    attrs = f'id="row-{index}" class="row status-{row.status}" data-source="{escape(row.ref, quote=True)}"'
    return f"<tr {attrs}>{''.join(cells)}</tr>"


def _notices(timeline: Timeline) -> str:
    return "".join(
        f'<div class="notice {escape(n.kind)}"><strong>⚠ {escape(_NOTICE_LABEL.get(n.kind, n.kind))}</strong>'
        f"{escape(n.text)}</div>"
        for n in timeline.notices
    )


def _facts(timeline: Timeline, zone: ZoneInfo | None) -> str:
    rows = "".join(
        f"<tr><th>{escape(label)}</th><td>{'<br>'.join(escape(v) for v in values)}</td></tr>"
        for label, values in fact_lines(timeline, zone)
    )
    return f'<table class="facts">{rows}</table>'


def _changes(timeline: Timeline) -> str:
    items = []
    for c in timeline.facts.changes:
        by = f", approved by {c.approved_by}" if c.approved_by else ""
        where = f" on {c.where}" if c.where else ""
        text = f"{fmt.stamp(c.time)}{where}: {'would: ' if c.predicted else ''}{c.text}{by} ({c.ref})"
        items.append(f'<li class="{"would" if c.predicted else "did"}">{escape(text)}</li>')
    return f'<h2>What changed</h2><ul class="changes">{"".join(items)}</ul>' if items else ""


def _source_row(s: Source) -> str:
    chain = "intact" if s.chain_ok else '<span class="bad">BROKEN</span>'
    ended = "yes" if s.ended else ('<span class="bad">no: cut off</span>' if s.kind == "run" else "n/a (notes)")
    return (
        f'<tr id="src-{escape(s.run_id, quote=True)}"><td>{escape(s.run_id)}</td><td>{escape(s.procedure or s.kind)}'
        f"</td><td>{escape(s.mode or '')}</td><td>{len(s.events)}</td><td>{ended}</td><td>{chain}</td>"
        f"<td>{escape(s.path)}</td></tr>"
    )


def render_html(timeline: Timeline, *, zone: ZoneInfo | None = None, detail: str = "full") -> str:
    """The whole page as a string; `detail` is the view: `key` (key events, runs fold their steps) or `full`."""
    incident = timeline.facts.incident
    title = f"Timeline of incident {incident}" if incident else "Timeline"
    paths = {s.run_id: s.path for s in timeline.sources}
    head = ["UTC", *([zone.key] if zone else []), "T+", "Who", "What", "Where", "Result", "Source"]
    thead = "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead>"
    shown = timeline.view(detail)
    index = {id(r): i for i, r in enumerate(shown)}
    days = "".join(
        f"<section class='day'><h2>{escape(day)}</h2><table class='timeline'>{thead}<tbody>"
        + "".join(_row(index[id(r)], r, zone, paths) for r in rows)
        + "</tbody></table></section>"
        for day, rows in by_day(shown)
    )
    sources = "".join(_source_row(s) for s in timeline.sources)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f'<p class="generated">{len(shown)} {"key events" if detail == "key" else "rows"} from '
        f"{len(timeline.sources)} source(s); "
        f"generated by runbook {escape(__version__)}. Times in UTC.</p>"
        f"{_notices(timeline)}{_facts(timeline, zone)}{_changes(timeline)}{days or '<p>No events.</p>'}"
        "<h2>Sources</h2><table class='sources'><thead><tr><th>Run</th><th>Procedure</th><th>Mode</th>"
        f"<th>Events</th><th>Ended</th><th>Hash chain</th><th>File</th></tr></thead><tbody>{sources}</tbody></table>"
        "</body></html>\n"
    )
