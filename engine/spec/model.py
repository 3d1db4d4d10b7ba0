"""The validated procedure as frozen data: what the runner walks and `runbook show` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Effect(IntEnum):
    """Ordered so that max() gives the stronger effect."""

    READ = 0
    WRITE = 1
    DESTRUCTIVE = 2

    def __bool__(self) -> bool:
        # An IntEnum whose READ is 0 would be falsy, and `declared or DESTRUCTIVE` would silently
        # turn a declared read into a destructive step (or a GET into a write). Every effect is truthy.
        return True

    @classmethod
    def parse(cls, text: str) -> Effect:
        return cls[text.upper()]

    def __str__(self) -> str:
        return self.name.lower()

    @property
    def marker(self) -> str:
        """What `show` and the run output print beside a step: easy to scan for danger."""
        return {Effect.READ: "[read]", Effect.WRITE: "[WRITE]", Effect.DESTRUCTIVE: "[DESTRUCTIVE]"}[self]


@dataclass(frozen=True)
class Location:
    file: str
    line: int | None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Param:
    name: str
    type: str = "string"
    description: str = ""
    default: Any = None
    required: bool = False
    pattern: str | None = None
    enum: tuple[Any, ...] | None = None
    secret: bool = False
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Expectation:
    that: str
    message: str
    severity: str = "critical"


@dataclass(frozen=True)
class Impact:
    """A figure a step measures as the incident's impact (`value` is an expression over its result)."""

    name: str
    value: str
    unit: str
    when: str | None = None


@dataclass(frozen=True)
class FollowUp:
    """What the operator must do after the step ran: prevent, detect or mitigate (`text` a template)."""

    kind: str
    text: str
    when: str | None = None


@dataclass(frozen=True)
class Retry:
    """Poll a step until `until` holds, bounded both by attempts and by wall time.

    attempts/interval/timeout are numbers, or templates rendered when the step runs (a param-driven wait).
    """

    until: str | None
    attempts: int | str = 10
    interval: float | str = 1.0
    timeout: float | str = 60.0


@dataclass(frozen=True)
class Sample:
    """Run a read step `every` D, `for` T or `count` N times: the registered value is the series."""

    every: float | str = 1.0
    duration: float | str | None = None  # `for:` in YAML
    count: int | str | None = None


@dataclass(frozen=True)
class OnFailure:
    action: str = "abort"  # abort | continue | goto
    goto: str | None = None


@dataclass(frozen=True)
class Step:
    id: str
    name: str
    kind: str
    action: Any  # the kind's body, plain data straight from the YAML (templates not yet rendered)
    location: Location
    index: int
    when: str | None = None
    register: str | None = None
    expect: tuple[Expectation, ...] = ()
    retry: Retry | None = None
    on_failure: OnFailure = field(default_factory=OnFailure)
    foreach: str | None = None
    effect: Effect | None = None  # declared by the author; the runner takes max(declared, derived)
    confirm: str | None = None
    verifies: str | None = None  # id of the change step whose effect this step checks
    secret: bool = False  # the registered result is a secret: redact it everywhere
    precondition: bool = False  # a read a resumed run (`runbook continue`) runs again instead of reusing
    show: str | None = None  # a line for the operator, rendered after the step ran
    sample: Sample | None = None
    cleanup: bool = False  # one of the procedure's `finally:` steps
    impact: tuple[Impact, ...] = ()
    follow_up: tuple[FollowUp, ...] = ()


@dataclass(frozen=True)
class Procedure:
    id: str
    title: str
    section: str
    description: str
    file: str
    sha256: str
    params: tuple[Param, ...]
    requires: tuple[str, ...]
    steps: tuple[Step, ...]
    tags: tuple[str, ...] = ()
    finally_steps: tuple[Step, ...] = ()  # run after the steps, however they ended
    symptoms: tuple[Any, ...] = ()  # engine.triage.symptoms.Symptom: what `runbook diagnose` matches

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.all_steps() if s.id == step_id), None)

    def all_steps(self) -> list[Step]:
        """Every step, those inside blocks and the finally steps included (ids are unique across them)."""
        return [*walk_steps(self.steps), *walk_steps(self.finally_steps)]


def walk_steps(steps: tuple[Step, ...]) -> list[Step]:
    out: list[Step] = []
    for step in steps:
        out.append(step)
        if isinstance(step.action, tuple):  # a block: the loader built its body as steps
            out.extend(walk_steps(step.action))
    return out
