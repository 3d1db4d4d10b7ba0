"""Where an incident's records are: its runs (by the `incident` in their header) and its notes file.

Runs are found by reading only the first line of each transcript under the transcripts directory,
so a directory of thousands of runs is scanned quickly. The notes file lives at
`<dir>/incidents/<ID>/notes.jsonl`, which is why an incident id must be a safe file name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine.errors import UsageError

NOTES_DIR = "incidents"
NOTES_FILE = "notes.jsonl"
HEADER_LIMIT = 1 << 20
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_incident_id(incident: str) -> str:
    """The id itself, or UsageError: it names a directory, so no slashes, no `..`, no spaces."""
    if not _ID.fullmatch(incident or ""):
        raise UsageError(
            f"incident id {incident!r} is not usable: letters, digits, '.', '_' and '-' only, "
            "starting with a letter or digit (e.g. INC-2041)"
        )
    return incident


def notes_path(directory: Path, incident: str) -> Path:
    """The incident's notes file (it may not exist yet)."""
    return Path(directory) / NOTES_DIR / check_incident_id(incident) / NOTES_FILE


def notes_run_id(incident: str) -> str:
    """The run_id every line of an incident's notes file carries."""
    return f"notes-{incident}"


def header_incident(path: Path) -> str | None:
    """The `incident` of a transcript's run.started line; None if it has none or is not a transcript."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(HEADER_LIMIT)
        event = json.loads(first)
    except (OSError, ValueError, RecursionError):  # RecursionError: a line of 100k nested '['
        return None
    if not isinstance(event, dict) or event.get("type") != "run.started":
        return None
    incident = event.get("incident")
    return incident if isinstance(incident, str) else None


def run_transcripts(directory: Path, incident: str) -> list[Path]:
    """Every run transcript under `directory` whose header says it belongs to `incident`, sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    notes_root = directory / NOTES_DIR
    found = [
        path
        for path in directory.rglob("*.jsonl")
        if notes_root not in path.parents and path.is_file() and header_incident(path) == incident
    ]
    return sorted(found)


def incident_files(directory: Path, incident: str) -> list[Path]:
    """The incident's run transcripts and, if it exists, its notes file."""
    check_incident_id(incident)
    files = run_transcripts(directory, incident)
    notes = notes_path(directory, incident)
    if notes.is_file():
        files.append(notes)
    return files
