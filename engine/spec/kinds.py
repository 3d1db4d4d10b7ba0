"""What the procedure format needs to know of a step kind, and where it finds the kinds.

spec/ sits below steps/: it never imports a kind. The layer that has the kinds (`engine.steps`, which
the `engine` package imports first) hands its registry over with `install`; spec asks `table()`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engine.errors import SourceError
    from engine.spec.model import Effect
    from engine.spec.yamlsource import Located

# (path of a step, the step as YAML data), for every step of a procedure in the order they can run
StepPaths = Sequence[tuple[tuple[Any, ...], dict[str, Any]]]


@dataclass(frozen=True)
class CheckContext:
    """What a kind's own validation may look at besides its body."""

    params: Mapping[str, Any]  # the declared params, as YAML data
    known_procedures: Callable[[str], bool] | None  # None: the catalog is not known here (a lone file)
    every: StepPaths  # every step of the procedure, with its path


class KindInfo(Protocol):
    """The part of a step kind that validation, `show` and the schema read (engine.steps.StepKind has it)."""

    name: str
    schema: Mapping[str, Any]
    description: str
    shell_fields: frozenset[str]
    raw_fields: frozenset[str]
    expressions: bool
    effect_declared: bool
    nested: bool
    samplable: bool
    needs_confirm: bool

    def static_effect(self, body: Any) -> Effect | None: ...
    def minimum_effect(self, body: Any) -> Effect | None: ...

    def summary(self, body: Any) -> str: ...

    def typed_fields(self, body: Any) -> list[tuple[tuple[Any, ...], Any, str]]: ...

    def scope_names(self, body: Any) -> frozenset[str]: ...

    def validate(
        self, body: Any, located: Located, path: tuple[Any, ...], context: CheckContext
    ) -> list[SourceError]: ...

    def prompted_params(self, body: Any) -> frozenset[str]: ...

    def called_procedures(self, body: Any) -> tuple[str, ...]: ...


KindTable = Mapping[str, KindInfo]

_source: list[Callable[[], KindTable]] = []
_one: list[Callable[[str], KindInfo]] = []


def install(source: Callable[[], KindTable], one: Callable[[str], KindInfo] | None = None) -> None:
    """The registry spec reads from now on (engine.steps installs its own when imported); `one` finds a
    single kind without loading the others (start-up: a run loads only the kinds its procedure uses)."""
    _source[:] = [source]
    _one[:] = [one] if one is not None else []


def table() -> KindTable:
    if not _source:  # pragma: no cover - `import engine` installs the registry before anything runs
        raise RuntimeError("no step kinds installed: import engine.steps first")
    return _source[0]()


def lookup(name: str) -> KindInfo:
    """One kind by name (KeyError if there is none)."""
    return _one[0](name) if _one else table()[name]
