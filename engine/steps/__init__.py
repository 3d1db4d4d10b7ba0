"""The one registry of step kinds. A new kind is one new module that subclasses `StepKind` and registers it.

A kind knows its body's JSON-Schema fragment (composed into schemas/procedure.schema.json), how to tell
its effect without a server (for `validate` and `show`), what it checks beyond the schema, and how to
turn a rendered body into an `Action` the runner can put before the gate. Kinds know nothing of prompts
or transcripts; the runner knows nothing of Redis or SSH; validation, `show` and the docs ask the
registry and never name a kind. docs/writing-procedures.md ("Adding a step kind") shows one end to end.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from engine.spec import kinds as spec_kinds
from engine.spec.model import Effect

if TYPE_CHECKING:
    from engine.errors import SourceError
    from engine.run.context import StepContext
    from engine.spec.kinds import CheckContext
    from engine.spec.yamlsource import Located

EXTRA_KINDS_ENV = "RUNBOOK_KINDS"  # comma-separated modules that register more kinds (plugins, tests)


@dataclass(frozen=True)
class Measured(Mapping[str, Any]):
    """What a change measured before the gate, and exactly what it may then act on.

    `blast` is the blast radius the operator approves (the runner redacts it before anyone sees it);
    `approved` holds what the change acts on and nothing else (the keys, the client ids counted).
    It reads like its blast radius (`measured["count"]`), so predict and changes can use either.
    """

    blast: Mapping[str, Any] = field(default_factory=dict)
    approved: tuple[Any, ...] = ()

    def __getitem__(self, key: str) -> Any:
        return self.blast[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.blast)

    def __len__(self) -> int:
        return len(self.blast)

    def redacted(self, redact: Callable[[Any], Any]) -> Measured:
        """The blast radius as it may be shown and recorded; `approved` stays what the change acts on."""
        return replace(self, blast=redact(dict(self.blast)))


@dataclass(frozen=True)
class Done:
    """What a step did: the result it registers and, for a measured change, the change records of what it
    really did (None: the action's `changes` tells them from the result)."""

    result: Any
    changes: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Action:
    """A step rendered and ready: what it will do, where, how strongly, and how to do it.

    A change measured before the gate sets `measure` (reads only) and `apply`, which the runner calls
    with that measurement, approved, instead of `execute`: nothing is shared between the two but it.
    """

    effect: Effect
    where: str
    command: str  # as the operator reads it; the runner redacts it before anyone sees it
    execute: Callable[[], Any]
    measure: Callable[[], Measured | Mapping[str, Any]] | None = None  # blast radius, by reads only
    # (measured: Measured | None, result: None in a dry-run) -> change records; Any: a kind may read the
    # measurement as the plain mapping of its blast radius
    changes: Callable[[Any, Any], list[dict[str, Any]]] | None = None
    predict: Callable[[Any], Any] | None = None  # (measured: Measured | None) -> what a dry-run registers instead
    output: Callable[[Any], str | None] | None = None  # text worth keeping as step.output
    failed: Callable[[Any], str | None] | None = None  # a reason when the result itself is a failure
    apply: Callable[[Measured], Done] | None = None  # the change, on exactly what was measured and approved

    def measured(self, redact: Callable[[Any], Any] | None = None) -> Measured | None:
        """Run `measure` (None without one); `redact` applies to the blast radius only."""
        if self.measure is None:
            return None
        found = self.measure()
        measured = found if isinstance(found, Measured) else Measured(dict(found))
        return measured.redacted(redact) if redact is not None else measured

    def run(self, measured: Measured | None = None) -> Done:
        """Do it: `apply` on what was measured when there is both, else `execute`."""
        if self.apply is not None and measured is not None:
            return self.apply(measured)
        return Done(self.execute())


_EMPTY: Mapping[str, Any] = MappingProxyType({})


class StepKind:
    """A step kind: subclass it, set the class attributes, override the hooks it needs, `register(Kind())`.

    The hooks' defaults are those of a plain read with nothing to check. A hook that is a plain function
    of the module is set as `plan = staticmethod(plan)`. For a quick kind (tests), the same can be given
    as keywords: `StepKind(name=..., schema=..., plan=fn)`.
    """

    name: str = ""
    schema: Mapping[str, Any] = _EMPTY
    description: str = ""
    shell_fields: frozenset[str] = frozenset()  # rendered with shell quoting
    raw_fields: frozenset[str] = frozenset()  # never rendered (the kind does it)
    expressions: bool = False  # the body is a mapping of name -> expression, evaluated by the kind
    effect_declared: bool = False  # the step's `effect:` IS its effect (default destructive): ssh
    nested: bool = False  # the body is a list of steps the runner walks itself (block)
    # the step puts back what another step (its body names it) changed in this run, under that step's
    # approval; skipped when that step changed nothing (restore)
    reverts: bool = False
    samplable: bool = True  # a read of this kind can be sampled (not: a call, a question, a checklist)
    needs_confirm: bool = True  # a non-read step asks a `confirm` text (not: a restore, covered by its change)
    number_fields: Mapping[str, str] = _EMPTY  # option -> "duration" | "count": a literal is checked by validate
    results: Mapping[str, Mapping[str, Any]] | None = None  # result shape per operation ("" for one shape)
    # A change aimed at several nodes (redis `on: all`): the nodes, in order; the runner then runs the step
    # once per node (like a foreach, `node` in scope), each gated with its own blast radius. None: once.
    per_node: Callable[[Any, StepContext], list[dict[str, Any]] | None] | None = None

    def __init__(
        self,
        *,
        name: str | None = None,
        schema: Mapping[str, Any] | None = None,
        plan: Callable[[Any, StepContext], Action] | None = None,
        static_effect: Callable[[Any], Effect | None] | None = None,
        summary: Callable[[Any], str] | None = None,
        description: str | None = None,
        **flags: Any,
    ) -> None:
        if name is not None:
            self.name = name
        if schema is not None:
            self.schema = schema
        if description is not None:
            self.description = description
        self._plan, self._static_effect, self._summary = plan, static_effect, summary
        for flag, value in flags.items():
            if not hasattr(StepKind, flag) or callable(getattr(StepKind, flag)):
                raise TypeError(f"StepKind: unknown option '{flag}'")
            setattr(self, flag, value)

    def __repr__(self) -> str:
        return f"<step kind {self.name}>"

    # -- running ---------------------------------------------------------------------------------------
    def plan(self, body: Any, ctx: StepContext) -> Action:
        """The rendered body -> what the runner puts before the gate and runs."""
        if self._plan is None:
            raise NotImplementedError(f"step kind '{self.name}' has no plan")
        return self._plan(body, ctx)

    # -- without a server: validate, show, docs --------------------------------------------------------
    def static_effect(self, body: Any) -> Effect | None:
        """The effect from the body alone; None: only the server (or a rendered value) can tell."""
        return self._static_effect(body) if self._static_effect is not None else Effect.READ

    def minimum_effect(self, body: Any) -> Effect | None:
        """When rendered values decide the effect (`static_effect` None): the least it can be, whatever
        they render to (`EXPIRE {{ k }} {{ ttl }}` is at least a write), so a `read` label is refused at
        validate time. None: nothing can be said before rendering."""
        return None

    def summary(self, body: Any) -> str:
        """One line for `show` and the docs."""
        return self._summary(body) if self._summary is not None else ""

    def validate(self, body: Any, located: Located, path: tuple[Any, ...], context: CheckContext) -> list[SourceError]:
        """Problems the schema cannot express (path: the step's); the body is unrendered YAML data."""
        return []

    def typed_fields(self, body: Any) -> list[tuple[tuple[Any, ...], Any, str]]:
        """(path inside the step, value, "duration" | "count") of each number-like option present."""
        if not isinstance(body, dict):
            return []
        fields = self.number_fields.items()
        return [((self.name, key), body[key], what) for key, what in fields if body.get(key) is not None]

    def scope_names(self, body: Any) -> frozenset[str]:
        """Names the step's own templates may use besides params and registers (a per-node change: `node`)."""
        return frozenset()

    def prompted_params(self, body: Any) -> frozenset[str]:
        """Params this step asks the operator for at run time (so `run` does not require them up front)."""
        return frozenset()

    def called_procedures(self, body: Any) -> tuple[str, ...]:
        """Procedures this step runs (as written: maybe a template); `show` rates it by their steps."""
        return ()

    def with_plan(self, plan: Callable[[Any, StepContext], Action]) -> StepKind:
        """This kind with another plan (the rehearsal's sabotage wraps a kind's plan this way)."""
        other = copy.copy(self)
        other.__dict__["plan"] = plan
        return other


_REGISTRY: dict[str, StepKind] = {}
_loaded = False


def register(kind: StepKind) -> StepKind:
    if not kind.name:
        raise ValueError("a step kind needs a name")
    if kind.name in _REGISTRY:
        raise ValueError(f"step kind '{kind.name}' registered twice")
    _REGISTRY[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Forget a kind (tests that register their own)."""
    _REGISTRY.pop(name, None)


@contextmanager
def registered(kind: StepKind) -> Iterator[StepKind]:
    """`with registered(MyKind()):` the kind exists inside the block only."""
    kinds()
    register(kind)
    try:
        yield kind
    finally:
        unregister(kind.name)


def kinds() -> Mapping[str, StepKind]:
    """Every registered kind: each `engine/steps/*_step.py` module, imported on first use (start-up stays small),
    then the modules named in $RUNBOOK_KINDS (comma-separated), which register kinds of their own."""
    global _loaded
    if not _loaded:
        _loaded = True
        import pkgutil

        for module in pkgutil.iter_modules(__path__):
            if module.name.endswith("_step"):
                importlib.import_module(f"{__name__}.{module.name}")
        load_extra_kinds()
    return _REGISTRY


_extras_loaded = False


def load_extra_kinds() -> None:
    """Import, once, the modules $RUNBOOK_KINDS names (comma-separated): each registers kinds of its own."""
    global _extras_loaded
    if _extras_loaded:
        return
    _extras_loaded = True
    for extra in filter(None, (m.strip() for m in os.environ.get(EXTRA_KINDS_ENV, "").split(","))):
        try:
            importlib.import_module(extra)
        except ImportError as exc:
            from engine.errors import UsageError

            raise UsageError(f"{EXTRA_KINDS_ENV}: cannot import '{extra}': {exc}") from None


def get(name: str) -> StepKind:
    """One kind, importing only its own module (`<name>_step`) if it is not registered yet: a run loads
    the kinds its procedure uses, not all of them."""
    if name not in _REGISTRY and not _loaded and name.isidentifier():
        try:
            importlib.import_module(f"{__name__}.{name}_step")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}_step":
                raise
    if name in _REGISTRY:
        return _REGISTRY[name]
    return kinds()[name]


spec_kinds.install(kinds, get)
