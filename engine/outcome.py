"""The vocabulary of how a step and a run end, shared by runner, session, consoles, timeline and rehearsal.

StrEnum, so a member is the very string the transcript holds ("ok", "failed", ...) and reading an old
transcript needs no conversion; comparing against a member instead of a bare string lets mypy catch typos.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """How one step execution ended."""

    OK = "ok"
    FAILED = "failed"  # ran, and an expectation did not hold (a finding)
    ERROR = "error"  # could not run: the target refused or failed
    SKIPPED = "skipped"  # `when` was false, or a resumed run reused it
    PREDICTED = "predicted"  # dry-run: a change that was not made
    REFUSED = "refused"  # the operator (or the lack of one) said no at the gate
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM, SIGHUP


class RunOutcome(StrEnum):
    """How a whole run ended (`run.ended` outcome); each maps to one exit code."""

    OK = "ok"
    FINDINGS = "findings"  # an expectation did not hold and the procedure went on
    FAILED = "failed"  # a failed expectation aborted the run
    ERROR = "error"
    REFUSED = "refused"
    INTERRUPTED = "interrupted"
    STOPPED = "stopped"
    USAGE = "usage"
