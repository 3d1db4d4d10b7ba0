"""Options several commands share, defined once so they cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def transcripts_dir_option(help_text: str = "Where transcripts go ($RUNBOOK_TRANSCRIPTS).") -> Callable[..., Any]:
    """--transcripts-dir, from RUNBOOK_TRANSCRIPTS, default ./transcripts: runs, notes and rehearsals agree."""
    return click.option(
        "--transcripts-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="RUNBOOK_TRANSCRIPTS",
        default="transcripts",
        show_default=True,
        help=help_text,
    )


def redis_url_option() -> Callable[..., Any]:
    """--redis URL: one server named on the command line (its password from REDISCLI_AUTH, never the URL)."""
    return click.option(
        "--redis", "redis_url", metavar="URL", help="redis://[user@]host[:port][/db] (password: REDISCLI_AUTH)."
    )


def inventory_option() -> Callable[..., Any]:
    """--inventory FILE: the targets file `--target` names one of."""
    return click.option("--inventory", type=click.Path(path_type=Path), help="Inventory file of targets.")
