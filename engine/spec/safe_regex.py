"""Regular expressions from procedures, bounded: Python's `re` has no timeout, so the danger is refused up front.

A pattern with a repeat inside an unbounded repeat (`(a+)+`, `(a|aa)*`, `(.*)*`) can backtrack
exponentially on a hostile line; it is refused when compiled. The text searched is capped too, so
even a quadratic pattern (`.*x.*y`) stays cheap on a multi-megabyte log.
"""

from __future__ import annotations

import re

# the parser `re` itself uses (Python 3.11+, as requires-python says); private, so typeshed has no stubs
import re._constants as _sre_constants  # type: ignore[import-not-found]
import re._parser as _sre_parse  # type: ignore[import-not-found]
from collections.abc import Callable
from functools import cache
from typing import Any  # a parse tree of re._parser: private, untyped

MAX_PATTERN = 1_000  # characters
MAX_TEXT = 1_000_000  # characters searched per call

_REPEATS = {_sre_constants.MAX_REPEAT, _sre_constants.MIN_REPEAT, getattr(_sre_constants, "POSSESSIVE_REPEAT", None)}
_UNBOUNDED = _sre_constants.MAXREPEAT


class UnsafePattern(ValueError):
    """A pattern refused before it runs."""


def _has_repeat(items: Any) -> bool:
    for op, arg in items:
        if op in _REPEATS:
            return True
        if _children_have(op, arg, _has_repeat):
            return True
    return False


def _children_have(op: Any, arg: Any, test: Callable[[Any], bool]) -> bool:
    if op == _sre_constants.SUBPATTERN:
        return test(arg[-1])
    if op == _sre_constants.BRANCH:
        return any(test(branch) for branch in arg[1])
    if op in (_sre_constants.ASSERT, _sre_constants.ASSERT_NOT):
        return test(arg[1])
    return False


def _nested_unbounded(items: Any) -> bool:
    for op, arg in items:
        if op in _REPEATS:
            _, high, inner = arg
            if (high == _UNBOUNDED or high > 100) and (_has_repeat(inner) or _has_alternation(inner)):
                return True
            if _nested_unbounded(inner):
                return True
        elif _children_have(op, arg, _nested_unbounded):
            return True
    return False


def _has_alternation(items: Any) -> bool:
    """An alternation whose branches may start alike (`a|aa`): under a repeat, it backtracks like a nested one."""
    for op, arg in items:
        if op == _sre_constants.BRANCH:
            firsts = [next(iter(branch), None) for branch in arg[1]]
            literal = [f[1] for f in firsts if f is not None and f[0] == _sre_constants.LITERAL]
            if len(literal) < len(firsts) or len(set(literal)) < len(literal):
                return True
        if _children_have(op, arg, _has_alternation):
            return True
    return False


@cache
def compile_bounded(pattern: str) -> re.Pattern[str]:
    """The compiled pattern, or UnsafePattern saying why it is refused."""
    if not isinstance(pattern, str):
        raise UnsafePattern(f"a regular expression is text, not {type(pattern).__name__}")
    if len(pattern) > MAX_PATTERN:
        raise UnsafePattern(f"regular expression longer than {MAX_PATTERN} characters")
    try:
        parsed = _sre_parse.parse(pattern)
        compiled = re.compile(pattern)
    except re.error as exc:
        raise UnsafePattern(f"invalid regular expression {pattern!r}: {exc}") from None
    if _nested_unbounded(list(parsed)):
        raise UnsafePattern(
            f"regular expression {pattern!r} nests a repeat inside an unbounded repeat "
            "(catastrophic backtracking); write it without the nesting"
        )
    return compiled


def bounded_text(text: object) -> str:
    value = "" if text is None else str(text)
    if len(value) > MAX_TEXT:
        raise UnsafePattern(f"text of {len(value):,} characters is more than the {MAX_TEXT:,} a regex may search")
    return value


def search(pattern: str, text: object) -> re.Match[str] | None:
    return compile_bounded(pattern).search(bounded_text(text))
