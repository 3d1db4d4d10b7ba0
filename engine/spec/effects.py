"""A step's effect as far as it can be told without a server, and whether rendered values decide it.

The kind's static rule (for a raw Redis command, the bundled command table) reads the step's body. Every
template string in the body is first replaced by a `_Pending` value that records any use of it: if the
rule looked at one (`[ACL, LOG, "{{ sub }}"]` is a read for `10` and a write for `RESET`;
`[EXPIRE, k, "{{ ttl }}"]` deletes the key for `0`; an http `method: "{{ m }}"`), the effect depends on a
value only known once rendered, so it is decided at run time. `runbook show` says so, with the effect
the values it was given lead to when those tell it, instead of the label of one guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.spec import template
from engine.spec.kinds import KindInfo, KindTable, table
from engine.spec.model import Effect


@dataclass(frozen=True)
class StaticEffect:
    effect: Effect | None  # whatever the values render to; None: decided at run time
    for_values: Effect | None = None  # decided at run time: the effect with the values given, if they tell it

    @property
    def at_run_time(self) -> bool:
        return self.effect is None


class _Seen(Exception):
    """Internal: the rule used a value that is only known once rendered."""


class _Pending:
    """A template string not rendered yet: the rule that touches it in any way depends on its value."""

    __slots__ = ("log", "text")

    def __init__(self, text: str, log: list[str]):
        self.text = text
        self.log = log

    def _use(self) -> str:
        self.log.append(self.text)
        return self.text

    def __getattr__(self, name: str) -> Any:  # .lower(), .upper(), .strip(), .startswith() ...
        return getattr(self._use(), name)

    def __str__(self) -> str:
        return self._use()

    def __repr__(self) -> str:
        return repr(self._use())

    def __format__(self, spec: str) -> str:
        return format(self._use(), spec)

    def __eq__(self, other: object) -> bool:
        return self._use() == other

    def __ne__(self, other: object) -> bool:
        return self._use() != other

    def __hash__(self) -> int:
        return hash(self._use())

    def __bool__(self) -> bool:
        return bool(self._use())

    def __len__(self) -> int:
        return len(self._use())

    def __contains__(self, item: object) -> bool:
        # the ignore below: `in` on the text itself; a non-str item fails as it would there
        return item in self._use()  # type: ignore[operator]

    def __iter__(self) -> Any:
        return iter(self._use())

    def __getitem__(self, key: Any) -> Any:
        return self._use()[key]

    def __int__(self) -> int:
        return int(self._use())

    def __float__(self) -> float:
        return float(self._use())

    def __lt__(self, other: Any) -> bool:
        return self._use() < other

    def __gt__(self, other: Any) -> bool:
        return self._use() > other


def _pending(value: Any, log: list[str]) -> Any:
    if template.is_template(value):
        return _Pending(value, log)
    if isinstance(value, list):
        return [_pending(v, log) for v in value]
    if isinstance(value, dict):
        return {k: _pending(v, log) for k, v in value.items()}
    return value


def _derive(body: Any, rule: Callable[[Any], Effect | None]) -> tuple[Effect | None, bool]:
    """(the rule's effect, whether it used a value not rendered yet)."""
    log: list[str] = []
    try:
        effect = rule(_pending(body, log))
    except Exception:  # a rule that cannot work on an unrendered value depends on it
        return None, True
    return effect, bool(log)


def static_effect(
    kind_name: str, body: Any, declared: Effect | None = None, rendered: Any = None, *, kinds: KindTable | None = None
) -> StaticEffect:
    """The step's effect without a server. `rendered`: the body rendered with the values known (params)."""
    return effect_of_kind((table() if kinds is None else kinds)[kind_name], body, declared, rendered)


def effect_of_kind(kind: KindInfo, body: Any, declared: Effect | None = None, rendered: Any = None) -> StaticEffect:
    """As `static_effect`, for a kind in hand."""
    if kind.effect_declared:  # ssh: the author's word is the effect (destructive when not given)
        return StaticEffect(declared if declared is not None else Effect.DESTRUCTIVE)
    if declared is Effect.DESTRUCTIVE:  # the strongest: nothing a value renders to can change it
        return StaticEffect(declared)
    rule = kind.static_effect
    effect, depends = _derive(body, rule)
    if not depends:
        return StaticEffect(_at_least(effect, declared))
    for_values = None
    if rendered is not None:
        effect, depends = _derive(rendered, rule)
        if not depends:
            for_values = _at_least(effect, declared)
    return StaticEffect(None, for_values)


def _at_least(effect: Effect | None, declared: Effect | None) -> Effect | None:
    """The runner runs a step at the stronger of its derived and declared effects."""
    if effect is None:
        return declared
    return max(effect, declared) if declared is not None else effect
