"""The one registry of step kinds. A new kind is one new module in this package that calls `register`.

A kind knows three things: the JSON-Schema fragment of its body (composed into
schemas/procedure.schema.json), how to tell its effect without a server (for `validate` and `show`),
and how to turn a rendered body into an `Action` the runner can put before the gate. Kinds know
nothing of prompts or transcripts; the runner knows nothing of Redis or SSH.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.spec.model import Effect

if TYPE_CHECKING:
    from engine.context import StepContext


@dataclass(frozen=True)
class Action:
    """A step rendered and ready: what it will do, where, how strongly, and how to do it."""

    effect: Effect
    where: str
    command: str  # as the operator reads it; the runner redacts it before anyone sees it
    execute: Callable[[], Any]
    measure: Callable[[], dict[str, Any]] | None = None  # blast radius, by reads only
    changes: Callable[[dict[str, Any] | None, Any], list[dict[str, Any]]] | None = None  # (blast, result)
    predict: Callable[[dict[str, Any] | None], Any] | None = None  # what a dry-run registers instead
    output: Callable[[Any], str | None] | None = None  # text worth keeping as step.output
    failed: Callable[[Any], str | None] | None = None  # a reason when the result itself is a failure


@dataclass(frozen=True)
class StepKind:
    name: str
    schema: Mapping[str, Any]
    plan: Callable[[Any, StepContext], Action]
    static_effect: Callable[[Any], Effect | None] = lambda body: Effect.READ
    summary: Callable[[Any], str] = lambda body: ""
    shell_fields: frozenset[str] = field(default_factory=frozenset)  # rendered with shell quoting
    raw_fields: frozenset[str] = field(default_factory=frozenset)  # never rendered (the kind does it)
    expressions: bool = False  # the body is a mapping of name -> expression, evaluated by the kind
    effect_declared: bool = False  # the step's `effect:` IS its effect (default destructive): ssh
    # A change aimed at several nodes (redis `on: all`): the nodes, in order; the runner then runs the step
    # once per node (like a foreach, `node` in scope), each gated with its own blast radius.
    per_node: Callable[[Any, StepContext], list[dict[str, Any]] | None] | None = None
    description: str = ""


_REGISTRY: dict[str, StepKind] = {}
_loaded = False


def register(kind: StepKind) -> StepKind:
    if kind.name in _REGISTRY:
        raise ValueError(f"step kind '{kind.name}' registered twice")
    _REGISTRY[kind.name] = kind
    return kind


def kinds() -> Mapping[str, StepKind]:
    """Every registered kind: each `engine/steps/*_step.py` module, imported on first use (start-up stays small)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in pkgutil.iter_modules(__path__):
            if module.name.endswith("_step"):
                importlib.import_module(f"{__name__}.{module.name}")
    return _REGISTRY


def get(name: str) -> StepKind:
    return kinds()[name]
