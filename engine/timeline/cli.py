"""`runbook timeline`, `runbook note`, `runbook postmortem`: thin click commands over the pure core.

Loaded lazily by `engine.cli.main` (see LAZY_COMMANDS); the rendering modules are imported inside the
commands. Usage errors (no transcripts for the incident, a bad --tz or --at) exit 2 with a message.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from engine.cli.errors import fail
from engine.cli.options import transcripts_dir_option
from engine.errors import RunbookError, TranscriptUnwritable, UsageError
from engine.printable import printable

FORMATS = ("markdown", "html", "json")
EXTENSIONS = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html", ".json": "json"}
"""An --output name with one of these extensions says its format: Markdown is never written to x.html."""
MILESTONE_CHOICES = ("impact-start", "detected", "acknowledged", "declared", "mitigated", "resolved")
DETAILS = ("key", "full")


def tz_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--tz", "tz_name", metavar="ZONE", help="Also show local times in ZONE, e.g. Europe/Paris.")(
        func
    )


def output_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE instead of stdout."
    )(func)


def _zone(name: str | None) -> Any:
    if not name:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(f"--tz {name!r}: unknown time zone ({exc}); use an IANA name such as Europe/Paris") from None


def load_timeline(files: tuple[Path, ...], incident: str | None, directory: Path) -> Any:
    """The timeline of the given files plus, with --incident, the incident's runs and notes."""
    from engine.timeline.build import build_timeline
    from engine.timeline.incident import incident_files
    from engine.transcript.reader import read_transcript

    paths = list(files)
    if incident is not None:
        found = incident_files(directory, incident)
        if not found and not paths:
            raise UsageError(
                f"no transcripts for incident {incident} under {directory}: runs join an incident with "
                f"`runbook run ... --incident {incident}`, notes with `runbook note TEXT --incident {incident}`; "
                "use --transcripts-dir (or $RUNBOOK_TRANSCRIPTS) if they are elsewhere"
            )
        paths += found
    if not paths:
        raise UsageError("give transcript files, or --incident ID to find an incident's runs and notes")
    transcripts = []
    seen: set[str] = set()
    while paths:
        path = paths.pop(0)
        if str(Path(path).resolve()) in seen:
            continue
        seen.add(str(Path(path).resolve()))
        try:
            transcripts.append(read_transcript(path))
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
        paths += _children(transcripts[-1].events)  # a rollout's parent brings its targets' runs
    return build_timeline(transcripts, incident)


def _children(events: list[dict[str, Any]]) -> list[Path]:
    """The child transcripts a fleet run's parent transcript names (those still on disk)."""
    found = []
    for event in events:
        if event.get("type") in ("fleet.child.started", "fleet.child.finished") and event.get("transcript"):
            path = Path(str(event["transcript"]))
            if path.is_file() and path not in found:
                found.append(path)
    return found


def output_format(given: str | None, output: Path | None, allowed: tuple[str, ...] = FORMATS) -> str:
    """The format to write: --format if given, else the one --output's extension names, else Markdown.

    A known extension that disagrees with --format is a usage error (a Markdown file named .html
    would be opened by a browser as HTML), as is a format this command cannot write.
    """
    implied = EXTENSIONS.get(output.suffix.lower()) if output is not None else None
    chosen = given or implied or "markdown"
    if implied is not None and implied != chosen and output is not None:  # (an implied format has an output)
        raise UsageError(
            f"--output {output}: the name says {implied} but --format is {chosen}; "
            f"name the file for its format (e.g. {output.with_suffix(_SUFFIX[chosen]).name}) or drop --format"
        )
    if chosen not in allowed:
        raise UsageError(
            f"--output {output}: this command writes {' or '.join(allowed)} only; "
            f"name the file {output.with_suffix(_SUFFIX[allowed[0]]).name if output else '.md'}"
        )
    return chosen


_SUFFIX = {"markdown": ".md", "html": ".html", "json": ".json"}


def _emit(text: str, output: Path | None) -> None:
    if output is None:  # a terminal, perhaps: nothing from the records may reach it as a control sequence
        click.echo(printable(text, multiline=True), nl=not text.endswith("\n"))
        return
    from engine import fsutil

    output.parent.mkdir(parents=True, exist_ok=True)
    try:  # through a temp file and a rename: a symlink planted at the name is refused, never followed
        fsutil.write_file(output, text.encode("utf-8"), mode=0o644, replace=True)
    except OSError as exc:
        raise click.UsageError(f"-o {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {printable(output)}", err=True)


def _warn(timeline: Any) -> None:
    for notice in timeline.notices:
        click.echo(f"runbook: warning: {printable(notice.text)}", err=True)


@click.command()
@click.argument("transcripts", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--incident", help="Include every run and the notes of this incident.")
@click.option(
    "--format",
    "out_format",
    type=click.Choice(FORMATS),
    help="markdown (default), html or json; with -o, the file's extension decides (.md, .html, .json).",
)
@click.option(
    "--detail",
    type=click.Choice(DETAILS),
    default="key",
    show_default=True,
    help="key: milestones, notes, findings, approvals, changes and one row per run; full: every step.",
)
@output_option
@tz_option
@transcripts_dir_option("Where runs and incident notes are ($RUNBOOK_TRANSCRIPTS).")
def timeline(
    transcripts: tuple[Path, ...],
    incident: str | None,
    out_format: str | None,
    detail: str,
    output: Path | None,
    tz_name: str | None,
    transcripts_dir: Path,
) -> None:
    """Merge transcripts and incident notes into one timeline (Markdown, HTML or JSON).

    Each transcript is ordered by seq, transcripts are merged by time, the same run given twice is
    kept once. A cut-off run is marked where it ends; a broken hash chain is flagged at the top.
    """
    try:
        out_format = output_format(out_format, output)
        zone = _zone(tz_name)
        built = load_timeline(transcripts, incident, transcripts_dir)
    except RunbookError as exc:
        fail(exc)
    if out_format == "json":
        from engine.timeline.json_out import render_json

        text = render_json(built, zone)
    elif out_format == "html":
        from engine.timeline.html import render_html

        text = render_html(built, zone=zone, detail=detail)
    else:
        from engine.timeline.markdown import render_markdown

        text = render_markdown(
            built, zone=zone, base=(output.parent if output else Path.cwd()).resolve(), detail=detail
        )
    _warn(built)
    _emit(text, output)


@click.command()
@click.argument("text")
@click.option("--incident", required=True, help="Incident id, e.g. INC-2041.")
@click.option("--milestone", type=click.Choice(MILESTONE_CHOICES), help="This note marks a milestone.")
@click.option(
    "--at", "at_text", metavar="TIME", help="When it happened, if earlier: 2026-11-26T01:40:00Z, 01:40 (UTC), 15m."
)
@click.option("--severity", metavar="LEVEL", help="The incident's severity as declared, e.g. SEV2 or P1.")
@click.option("--operator", help="Who is writing this (default: the OS user).")
@transcripts_dir_option("Where runs and incident notes are ($RUNBOOK_TRANSCRIPTS).")
def note(
    text: str,
    incident: str,
    milestone: str | None,
    at_text: str | None,
    severity: str | None,
    operator: str | None,
    transcripts_dir: Path,
) -> None:
    """Record something that happened outside the engine in the incident's notes.

    An alert that fired, the incident declared, customers told: with --milestone it sets the
    incident's impact start, first signal (detected), acknowledged, declared, mitigated or resolved
    time on the timeline; --severity records the severity (the latest one given counts).
    """
    from datetime import UTC, datetime

    from engine.run.operator import current_user
    from engine.timeline.notes import add_note, parse_at

    try:
        at = parse_at(at_text, datetime.now(UTC)) if at_text else None
        path, event = add_note(
            transcripts_dir,
            incident,
            text,
            operator=operator or current_user(),
            milestone=milestone,
            at=at,
            severity=severity,
        )
    except RunbookError as exc:
        fail(exc)
    except OSError as exc:
        message = f"cannot write the notes of {incident} under {transcripts_dir}: {exc.strerror or exc}"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS):
            fail(TranscriptUnwritable(message))  # the disk, not the input: exit 4 as for a run
        fail(UsageError(message))
    label = f" ({milestone})" if milestone else ""
    when = event.get("at") or event.get("time")
    click.echo(printable(f"noted{label} at {when} in {path} ({event['run_id']}#{event['seq']})"))


@click.command()
@click.argument("transcripts", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--incident", required=True, help="Incident id, e.g. INC-2041.")
@output_option
@tz_option
@transcripts_dir_option("Where runs and incident notes are ($RUNBOOK_TRANSCRIPTS).")
def postmortem(
    transcripts: tuple[Path, ...], incident: str, output: Path | None, tz_name: str | None, transcripts_dir: Path
) -> None:
    """Write a post-mortem draft: every recorded fact filled in, prompts for the rest, the timeline."""
    from engine.timeline.postmortem import render_postmortem

    try:
        output_format(None, output, allowed=("markdown",))
        zone = _zone(tz_name)
        built = load_timeline(transcripts, incident, transcripts_dir)
    except RunbookError as exc:
        fail(exc)
    _warn(built)
    _emit(render_postmortem(built, zone=zone, base=(output.parent if output else Path.cwd()).resolve()), output)
