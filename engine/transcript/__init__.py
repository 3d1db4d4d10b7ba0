"""The run's transcript: one append-only, redacted, hash-chained JSON Lines file per run.

`TranscriptWriter` writes it (the only writer), `read_transcript` reads it back tolerantly, and
`verify_transcript` checks it against `schemas/transcript-event.schema.json` and its hash chain.
`Redactor` keeps secrets out of every line. docs/transcript.md is the contract for tool writers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.transcript.reader import Problem, Transcript, read_transcript
    from engine.transcript.redact import CREDENTIAL, Redactor
    from engine.transcript.verify import VerifyReport, verify_transcript
    from engine.transcript.writer import (
        DURABLE_TYPES,
        EVENT_TYPES,
        OUTPUT_LIMIT,
        TranscriptWriter,
        default_transcript_path,
        format_time,
        new_run_id,
        sha256_text,
        to_jsonable,
        truncate_output,
    )

_HOME = {  # name -> the module that defines it, imported on first use: a run needs the writer, not the verifier
    **dict.fromkeys(("Problem", "Transcript", "read_transcript"), "reader"),
    **dict.fromkeys(("CREDENTIAL", "Redactor"), "redact"),
    **dict.fromkeys(("VerifyReport", "verify_transcript"), "verify"),
    **dict.fromkeys(
        (
            "DURABLE_TYPES",
            "EVENT_TYPES",
            "OUTPUT_LIMIT",
            "TranscriptWriter",
            "default_transcript_path",
            "format_time",
            "new_run_id",
            "sha256_text",
            "to_jsonable",
            "truncate_output",
        ),
        "writer",
    ),
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


__all__ = [
    "CREDENTIAL",
    "DURABLE_TYPES",
    "EVENT_TYPES",
    "OUTPUT_LIMIT",
    "Problem",
    "Redactor",
    "Transcript",
    "TranscriptWriter",
    "VerifyReport",
    "default_transcript_path",
    "format_time",
    "new_run_id",
    "read_transcript",
    "sha256_text",
    "to_jsonable",
    "truncate_output",
    "verify_transcript",
]
