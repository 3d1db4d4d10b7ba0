"""The shapes of what a step records: blast radius, expectation results, changes, and the `--json` summary.

They travel as JSON (transcript lines, `--json` output) and are read back from old transcripts, so they
are TypedDicts (plain dicts at run time, nothing to convert) rather than classes: the type checker knows
their keys, the files on disk stay as they are. `total=False` where a kind records only some keys.
"""

from __future__ import annotations

from typing import Any, NotRequired, Required, TypedDict


class KeyMeasure(TypedDict, total=False):
    """One key a Redis command touches, measured before it runs (`exists` None: could not be measured)."""

    key: Required[str]
    exists: bool | None
    type: str | None
    ttl: float | None  # seconds; -1: no TTL
    memory: int | None  # MEMORY USAGE, bytes
    length: int | None
    error: str  # why it could not be measured (MOVED, NOPERM, ...)


class ConfigChange(TypedDict):
    """One CONFIG SET parameter: its value now, and the one the step sets."""

    current: Any
    new: Any


class BlastRadius(TypedDict, total=False):
    """What a change will touch, measured just before the gate asks (empty for a read).

    The keys a kind records depend on the kind: a single Redis command measures `config` or `keys`;
    FLUSHDB counts `keys` (an int) and memory; a keyspace scan counts matches against `max_keys`.
    A kind may add keys of its own; the gate shows those as JSON.
    """

    config: dict[str, ConfigChange]  # CONFIG SET
    keys: list[KeyMeasure] | int  # the keys a command names, or how many a FLUSH* removes
    key_count: int  # every key named (`keys` may hold only the first ones)
    used_memory: int
    used_memory_human: str
    keyspace: dict[str, Any]  # INFO keyspace, per db
    command: str  # a command whose keys were not measured (none, or a credential among its arguments)
    ttl_new: str | float | None  # EXPIRE and friends (the argument as given), and keyspace `expire`
    match: str  # keyspace scans: the pattern,
    count: int  # how many keys match it,
    matched: int
    had_ttl: int
    only_without_ttl: bool
    sample: list[str]  # the first few,
    bytes: int  # their memory,
    max_keys: int  # and the cap that refuses the step when
    over_cap: bool  # count > max_keys


class ExpectationResult(TypedDict):
    """One `expect:` of a step, evaluated on its result. `held` None: not judged (a dry-run's prediction)."""

    that: str
    severity: str  # critical | warning | info
    held: bool | None
    message: str
    reason: NotRequired[str]  # why it was not judged


class ChangeRecord(TypedDict, total=False):
    """One change a step made (`changes`) or would make (`predicted_changes`), in words timelines print."""

    kind: Required[str]  # config | keys_removed | ttl_set | keys_written | password_rotated | clients_killed
    # | service | file | command
    name: str  # config: the parameter; password_rotated: the setting (never the value)
    before: Any
    after: Any
    keys: list[str]  # a sample of the keys touched
    count: int | None  # how many in all
    scope: str  # FLUSHDB / FLUSHALL: no key list
    ttl_before: list[float | None]
    ttl_after: float | None
    command: str
    host: str
    action: str  # service: restarted, ...; file: written
    path: str
    ids: list[Any]  # clients_killed: the first client ids
    by_name: dict[str, int]


class RunCounts(TypedDict):
    """`run.ended` summary: how the steps ended and what the gate was asked."""

    steps: int
    ok: int
    failed: int  # failed or error
    skipped: int
    predicted: int
    approvals: int
    refusals: int
    findings: int


class StepSummary(TypedDict):
    """One step in `runbook run --json`; a dry-run's prediction also says where, what and how much."""

    id: str
    name: str
    outcome: str  # an engine.outcome.Outcome value
    effect: str
    result: Any
    summary: str | None
    duration_ms: float
    procedure: str
    expectations: list[ExpectationResult]
    message: str | None
    where: NotRequired[str]
    command: NotRequired[str]
    blast_radius: NotRequired[BlastRadius]
    predicted_changes: NotRequired[list[ChangeRecord]]
    follow_up: NotRequired[list[dict[str, Any]]]


class RunSummary(TypedDict):
    """`runbook run --json`: the run and each step it executed or skipped."""

    run_id: str
    procedure: str
    outcome: str  # an engine.outcome.RunOutcome value
    exit_code: int
    transcript: str | None
    error: str | None
    steps: list[StepSummary]
