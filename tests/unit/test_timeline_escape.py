"""Operators' names and notes in the Markdown timeline and post-mortem stay text: no live HTML, no link,
no image, no emphasis or code, no broken table; the HTML page has no tag or attribute they wrote."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from engine.printable import printable
from engine.timeline import build_timeline
from engine.timeline.html import render_html
from engine.timeline.incident import notes_path
from engine.timeline.markdown import code, inline, render_markdown
from engine.timeline.postmortem import render_postmortem
from engine.transcript import Redactor, TranscriptWriter, read_transcript
from tests.hostile_text import hostile_strings, raw_controls

T0 = datetime(2026, 11, 26, 1, 40, tzinfo=UTC)

MARKDOWN_ATTACKS = [
    "<svg onload=alert(1)>",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "![pixel](https://evil.example/p.png)",
    "[ref][x]\n\n[x]: javascript:alert(1)",
    "<javascript:alert(1)>",
    "<https://evil.example>",
    "`live code` and ``double`` and ```fence```",
    "*em* **strong** _em_ __strong__ ~~strike~~",
    "a | b | c",
    "cell\n| injected | row |\n|---|---|",
    "line one\n# Heading\n- item\n> quote\n<div>block</div>",
    "&lt;svg onload=alert(1)&gt; &#60;b&#62; &amp;",
    "\\[c\\](javascript:alert(1)) \\<svg\\>",
    "a\\",
    "tenant:acme_wm_active *1*",
]


def _notes(directory: Path, texts: list[str]) -> Path:
    path = notes_path(directory, "INC-7")
    with TranscriptWriter.append_to(path, Redactor(), run_id="notes-INC-7", clock=lambda: T0) as writer:
        for text in texts:
            writer.emit("note", text=text, operator=text, at="2026-11-26T01:40:00.000000Z")
    return path


def _timeline(tmp_path: Path, texts: list[str]):
    return build_timeline([read_transcript(_notes(tmp_path, texts))], "INC-7")


_SPECIAL = set("\\`*_[]!~|<&")


def live_markup(text: str) -> list[str]:
    """Characters in Markdown inline text that would act as markup: every special character must be
    backslash-escaped, or part of `&lt;`, `&amp;` or our own `<br>`."""
    live, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in _SPECIAL:
            i += 2
            continue
        for safe in ("&lt;", "&amp;", "<br>"):
            if text.startswith(safe, i):
                i += len(safe)
                break
        else:
            if ch in _SPECIAL:
                live.append(f"{ch!r} at {i} in {text!r}")
            i += 1
    return live


def unescape(text: str) -> str:
    text = re.sub(r"\\(.)", r"\1", text.replace("<br>", "\n"))
    return text.replace("&lt;", "<").replace("&amp;", "&")


@pytest.mark.parametrize("text", MARKDOWN_ATTACKS + hostile_strings())
def test_inline_text_has_no_live_markup_and_loses_nothing(text: str) -> None:
    shown = inline(text)
    assert live_markup(shown) == []
    assert "\n" not in shown and raw_controls(shown) == []
    expected = "\n".join(part.strip() for part in printable(text, multiline=True).split("\n"))
    assert unescape(shown) == expected  # what a reader sees is what was typed (controls made visible)


@pytest.mark.parametrize("text", [*MARKDOWN_ATTACKS, "```", "a`b", "``"])
def test_code_spans_cannot_be_closed_from_inside(text: str) -> None:
    span = code(text)
    fence = re.match(r"`+", span).group(0)
    inner = span[len(fence) : -len(fence)]
    assert span.endswith(fence) and fence not in inner  # a longer fence than any run inside
    assert "\n" not in span


def _table_rows(md: str) -> list[list[str]]:
    """Each table line split at unescaped pipes."""
    return [re.split(r"(?<!\\)\|", line) for line in md.splitlines() if line.startswith("|")]


def _check_markdown(md: str) -> None:
    assert "<" not in md.replace("<br>", ""), "raw HTML"
    assert not re.search(r"(?<!\\)\]\((?!\.\./|[\w./%-]*#L\d+\))", md), "a link the notes formed"
    assert not re.search(r"(?<!\\)!\[", md), "an image"
    assert not re.search(r"^\s*\[[^\]]*\]:", md, re.M), "a link reference definition"
    assert raw_controls(md) == []
    # every table keeps its header's column count
    widths: list[int] = []
    for line in md.splitlines():
        if line.startswith("|"):
            widths.append(len(re.split(r"(?<!\\)\|", line)))
        elif widths:
            assert len(set(widths)) == 1, f"a row broke its table: {widths}"
            widths = []


def test_markdown_timeline_of_hostile_notes_is_inert(tmp_path: Path) -> None:
    timeline = _timeline(tmp_path, MARKDOWN_ATTACKS + hostile_strings())
    md = render_markdown(timeline)
    _check_markdown(md)
    for text in MARKDOWN_ATTACKS:
        assert inline(text) in md


def test_postmortem_of_hostile_notes_is_inert(tmp_path: Path) -> None:
    timeline = _timeline(tmp_path, MARKDOWN_ATTACKS + hostile_strings())
    _check_markdown(render_postmortem(timeline))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.extend(attrs)


def test_html_timeline_of_hostile_notes_has_only_its_own_tags(tmp_path: Path) -> None:
    page = render_html(_timeline(tmp_path, MARKDOWN_ATTACKS))
    parser = _Tags()
    parser.feed(page)
    assert not parser.tags & {"svg", "script", "img", "iframe", "object", "embed"}
    assert not [name for name, _ in parser.attrs if name.startswith("on")]
    assert all(value.startswith("#") for name, value in parser.attrs if name == "href" and value)
