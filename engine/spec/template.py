"""Jinja2 templates and expressions, sandboxed and strict: a typo is an error, never an empty string.

A string that is exactly one `{{ expression }}` renders to the expression's value (a number stays a
number, a list a list); anything else renders to text. Strings bound for a shell are rendered with
every `{{ }}` value shell-quoted by the engine, so procedure authors never quote by hand.

Every render is bounded (docs/cli.md, "Limits"): `9 ** 99999`, `'A' * 100000000`, nested
`range(100000)` loops and the like end in a TemplateError naming the limit, never a hang.
"""

from __future__ import annotations

import functools
import json
import math
import re
import secrets
import shlex
import string
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Any

import jinja2
from jinja2 import StrictUndefined, meta, nodes
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.spec import safe_regex
from engine.spec.params import parse_duration, parse_size

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)

MAX_OUTPUT = 1_000_000
"""Characters (or items) in a string or list a template builds, and in a rendered template."""
MAX_INT_BITS = 10_000
"""Bits of an integer `**` or `*` may produce (about 3,000 digits)."""
MAX_ITERATIONS = 1_000_000
"""Loop iterations (`{% for %}`, all loops together) in one render or expression."""
MAX_RENDER_SECONDS = 5.0
"""Wall time of one render or expression, checked at every loop iteration and call."""
MAX_PASSWORD_LENGTH = 1024


class TemplateError(Exception):
    """A template or expression that failed; the runner adds the step and field."""


class _Budget:
    """What one render may still spend: loop iterations and time."""

    def __init__(self) -> None:
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS
        self.iterations = 0

    def tick(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_ITERATIONS:
            raise TemplateError(f"more than {MAX_ITERATIONS:,} loop iterations (the limit)")
        if self.iterations % 1024 == 0:
            self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateError(f"took longer than {MAX_RENDER_SECONDS:g}s to render (the limit)")


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


@contextmanager
def _budgeted() -> Iterator[None]:
    """One budget per top-level render or evaluation; nested ones share it."""
    if _BUDGET.get() is not None:
        yield
        return
    token = _BUDGET.set(_Budget())
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _budget() -> _Budget:
    return _BUDGET.get() or _Budget()


def _check_size(value: Any, what: str) -> Any:
    """Refuse what no procedure needs and a transcript cannot hold: an oversized value, inf or NaN."""
    if isinstance(value, str | bytes | list | tuple) and len(value) > MAX_OUTPUT:
        raise TemplateError(f"{what} would be {len(value):,} long, over {MAX_OUTPUT:,} (the limit)")
    if isinstance(value, float) and not math.isfinite(value):
        raise TemplateError(f"{what} is {value}, not a finite number")
    return value


def _sized_len(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


class _LoopGuardedCodeGenerator(CodeGenerator):
    """Every `{% for %}` iterates through `environment.guard_loop`, which spends the render's budget."""

    def visit_Template(self, node: nodes.Template, frame: Any = None) -> None:
        for loop in node.find_all(nodes.For):
            if not getattr(loop, "_runbook_guarded", False):
                loop.iter = nodes.Call(nodes.EnvironmentAttribute("guard_loop"), [loop.iter], [], None, None)
                # the ignore below: our own mark on jinja's node, so a loop compiled twice is guarded once
                loop._runbook_guarded = True  # type: ignore[attr-defined]
        super().visit_Template(node, frame)


_WIDTH_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs"})
_WIDTH_FILTERS = frozenset({"center", "indent", "wordwrap", "truncate", "batch", "slice"})
_PERCENT_WIDTH = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(?:\*|\d{7,}|\d*\.(?:\*|\d{7,}))")
_BRACE_WIDTH = re.compile(r"\{[^{}]*:[^{}]*\d{7,}")


def _estimated_replace(text: Any, old: Any, new: Any) -> int | None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        count = text.count(old) if old else len(text) + 1
        return len(text) + count * (len(new) - len(old))
    return None


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox plus resource bounds: operators, calls, filters and loops that would blow up are refused."""

    code_generator_class = _LoopGuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+", "-", "/", "//"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        _budget().check_time()
        if (
            operator_ == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and max(abs(left).bit_length() - 1, 1) * right > MAX_INT_BITS
        ):
            raise TemplateError(f"{left} ** {right} is over {MAX_INT_BITS:,} bits (the limit)")
        if (
            operator_ == "*"
            and isinstance(left, int)
            and isinstance(right, int)
            and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS
        ):  # repeated squaring in a loop doubles the bits each time
            raise TemplateError(f"a product of over {MAX_INT_BITS:,} bits (the limit)")
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                length = _sized_len(seq)
                if length is not None and isinstance(times, int) and length * times > MAX_OUTPUT:
                    raise TemplateError(f"a sequence repeated {times:,} times is over {MAX_OUTPUT:,} (the limit)")
        if operator_ == "%" and isinstance(left, str) and _PERCENT_WIDTH.search(left):
            raise TemplateError("a %-format width of 7 or more digits (or *) is over the limit")
        return _check_size(super().call_binop(context, operator_, left, right), f"the result of {operator_}")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _budget().check_time()
        name = getattr(__obj, "__name__", "")
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)  # str.format comes wrapped
        if isinstance(owner, str | bytes):
            if name in _WIDTH_METHODS and any(isinstance(a, int) and a > MAX_OUTPUT for a in args):
                raise TemplateError(f"{name}() width over {MAX_OUTPUT:,} (the limit)")
            if name in ("format", "format_map") and _BRACE_WIDTH.search(str(owner)):
                raise TemplateError("a format width of 7 or more digits (or *) is over the limit")
            if name == "replace" and len(args) >= 2:
                estimate = _estimated_replace(owner, args[0], args[1])
                if estimate is not None and estimate > MAX_OUTPUT:
                    raise TemplateError(f"replace() would build {estimate:,} characters, over {MAX_OUTPUT:,}")
        return _check_size(super().call(__context, __obj, *args, **kwargs), f"the result of {name or 'a call'}()")

    def guard_loop(self, iterable: Iterable[Any]) -> Iterator[Any]:
        budget = _budget()
        for item in iterable:
            budget.tick()
            yield item


def _bounded_filter(name: str, func: Any) -> Any:
    """A filter whose size arguments and result are checked (`'x' | center(10**9)`)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _budget().check_time()
        if name in _WIDTH_FILTERS and any(
            isinstance(a, int) and not isinstance(a, bool) and a > MAX_OUTPUT for a in (*args[1:], *kwargs.values())
        ):
            raise TemplateError(f"|{name} size argument over {MAX_OUTPUT:,} (the limit)")
        if name == "replace":
            values = [a for a in args if isinstance(a, str)]
            if len(values) >= 3:
                estimate = _estimated_replace(*values[-3:])
                if estimate is not None and estimate > MAX_OUTPUT:
                    raise TemplateError(f"|replace would build {estimate:,} characters, over {MAX_OUTPUT:,}")
        if name == "format" and args and _PERCENT_WIDTH.search(str(args[0])):
            raise TemplateError("a format width of 7 or more digits (or *) is over the limit")
        return _check_size(func(*args, **kwargs), f"the result of |{name}")

    return wrapper


class ShellText(str):
    """A trusted shell fragment (an inventory's service command): inserted as is, never quoted."""


def human_bytes(value: Any) -> str:
    """A size in bytes as people read it (`1.5GiB`): the `human_bytes` filter, and the gate's blast radius."""
    size = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return str(value)


def _percent(part: Any, whole: Any, digits: int = 1) -> float | None:
    return round(100.0 * float(part) / float(whole), digits) if whole else None


def _duration(seconds: Any) -> str:
    seconds = int(seconds)
    if seconds < 0:
        return str(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def random_password(length: int = 32) -> str:
    """A strong password of URL-safe characters; register the step `secret: true` so it is never shown."""
    if int(length) > MAX_PASSWORD_LENGTH:
        raise TemplateError(f"random_password({length}): at most {MAX_PASSWORD_LENGTH} characters")
    alphabet = string.ascii_letters + string.digits + "-_"
    return "".join(secrets.choice(alphabet) for _ in range(max(int(length), 16)))


def _dict_diff(current: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Keys of `baseline` whose value differs in `current` (compared as text, as CONFIG GET returns them)."""
    return {k: {"current": current.get(k), "baseline": v} for k, v in baseline.items() if str(current.get(k)) != str(v)}


def _count_by(items: Any, key: str) -> dict[Any, int]:
    counts: dict[Any, int] = {}
    for item in items or []:
        value = item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)
        counts[value] = counts.get(value, 0) + 1
    return counts


def _tenant_of(key: str) -> str | None:
    """'tenant:acme:wm:active' -> 'acme'; None for keys outside the tenant namespace."""
    parts = str(key).split(":")
    return parts[1] if len(parts) > 2 and parts[0] == "tenant" else None


def _lines_matching(text: str, pattern: str) -> list[str]:
    rx = safe_regex.compile_bounded(pattern)
    return [line for line in safe_regex.bounded_text(text).splitlines() if rx.search(line)]


def _matches(text: Any, pattern: str) -> bool:
    """`matches(line, 'ERR .*timeout')`: a search, bounded (no nested unbounded repeats, capped text)."""
    return safe_regex.search(pattern, text) is not None


def _regex_find(text: Any, pattern: str) -> list[Any]:
    """Every match (or its groups) of a bounded pattern: `regex_find(out, 'used=(\\d+)')`."""
    return safe_regex.compile_bounded(pattern).findall(safe_regex.bounded_text(text))


# -- time: one format for the engine (`now`, samples) and the parsers ------------------------------------------

ENGINE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def parse_time(value: Any) -> float:
    """Epoch seconds from the engine's `now` (2026-11-26T02:03:04Z), ISO 8601 with an offset, a Redis log
    time (26 Nov 2026 02:03:04.567), or a number of epoch seconds. A time without a zone is UTC."""
    from datetime import UTC, datetime

    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    parsed: datetime | None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        from engine.parsers.redis_host import parse_time as parse_log_time

        parsed = parse_log_time(text)
        if parsed is None:
            raise ValueError(
                f"'{text}' is not a time (like {time.strftime(ENGINE_TIME_FORMAT, time.gmtime(0))})"
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def format_time(value: Any, fmt: str = ENGINE_TIME_FORMAT) -> str:
    """A time (epoch seconds or any text parse_time reads) in the engine's format, or `fmt` (strftime, UTC)."""
    return time.strftime(fmt, time.gmtime(parse_time(value)))


def _seconds_since(value: Any, now: Any = None) -> float:
    """Seconds from a time to `now` (default: the engine's clock now)."""
    return (time.time() if now is None else parse_time(now)) - parse_time(value)


# -- series (a `sample:` step's result) --------------------------------------------------------------------------


def _samples(series: Any) -> list[dict[str, Any]]:
    """A sampled result ({samples: [{t, value}]}) or a plain list (each item a value, t unknown)."""
    if isinstance(series, Mapping) and isinstance(series.get("samples"), list):
        return [s for s in series["samples"] if "error" not in s]
    if isinstance(series, list | tuple):
        return [{"t": None, "value": v} for v in series]
    raise TypeError(f"expected a series (a sampled result or a list), got {type(series).__name__}")


def _values(series: Any, expression: str | None = None) -> list[Any]:
    """The values of a series; with an expression over `value` (and `t`), that expression per sample."""
    if expression is None:
        return [s["value"] for s in _samples(series)]
    return [evaluate(expression, {"value": s["value"], "t": s["t"]}) for s in _samples(series)]


def _numbers(series: Any, expression: str | None = None) -> list[float]:
    return [float(v) for v in _values(series, expression) if v is not None]


def _series_min(*args: Any, **kwargs: Any) -> Any:
    if len(args) in (1, 2) and isinstance(args[0], Mapping) and "samples" in args[0]:
        return min(_numbers(*args), default=None)
    return min(*args, **kwargs)


def _series_max(*args: Any, **kwargs: Any) -> Any:
    if len(args) in (1, 2) and isinstance(args[0], Mapping) and "samples" in args[0]:
        return max(_numbers(*args), default=None)
    return max(*args, **kwargs)


def _avg(series: Any, expression: str | None = None) -> float | None:
    numbers = _numbers(series, expression)
    return sum(numbers) / len(numbers) if numbers else None


def _last(series: Any, expression: str | None = None) -> Any:
    values = _values(series, expression)
    return values[-1] if values else None


def _all(series: Any, expression: str | None = None) -> bool:
    values = _values(series, expression)
    return bool(values) and all(bool(v) for v in values)


def _any(series: Any, expression: str | None = None) -> bool:
    return any(bool(v) for v in _values(series, expression))


def _held_for(series: Any, expression: str) -> float:
    """Seconds the expression has held without a break up to the last sample (0 when the last fails)."""
    samples = _samples(series)
    held_since = None
    for sample in samples:
        if bool(evaluate(expression, {"value": sample["value"], "t": sample["t"]})):
            held_since = sample if held_since is None else held_since
        else:
            held_since = None
    if held_since is None or held_since["t"] is None:
        return 0.0
    return round(float(samples[-1]["t"]) - float(held_since["t"]), 3)


def _rate(series: Any, expression: str | None = None) -> float | None:
    """Per second, between the first and the last sample (a counter such as evicted_keys)."""
    samples = _samples(series)
    if len(samples) < 2 or samples[0]["t"] is None:
        return None
    values = _numbers(series, expression)
    elapsed = float(samples[-1]["t"]) - float(samples[0]["t"])
    return (values[-1] - values[0]) / elapsed if elapsed > 0 else None


def _rates(series: Any, expression: str | None = None) -> dict[str, Any]:
    """The per-second change between consecutive samples, as a series (t of the later sample): a counter's
    rate over time, for `held_for(rates(stats, 'value.evicted_keys'), 'value > 100')`."""
    samples = [s for s in _samples(series) if s["t"] is not None]
    values = _numbers({"samples": samples}, expression)
    out = []
    for (a, va), (b, vb) in zip(
        zip(samples, values, strict=False), zip(samples[1:], values[1:], strict=False), strict=False
    ):
        elapsed = float(b["t"]) - float(a["t"])
        if elapsed > 0:
            out.append({"t": b["t"], "value": (vb - va) / elapsed})
    return {"samples": out}


def _decreases(before: Any, after: Any, field: str | None = None) -> dict[str, float]:
    """Keys whose number went down from `before` to `after` (missing after: down to 0), by how much:
    `decreases(before.by_tenant, after.by_tenant, 'keys')` = the tenants that lost keys."""
    out: dict[str, float] = {}
    for key, old in (before or {}).items():
        new = (after or {}).get(key)
        old_n = (old or {}).get(field) if field else old
        new_n = ((new or {}).get(field) if field else new) or 0
        if old_n is not None and float(new_n) < float(old_n):
            out[key] = float(old_n) - float(new_n)
    return out


def _shell_finalize(value: Any) -> str:
    if isinstance(value, ShellText):
        return str(value)
    if isinstance(value, bool):
        value = "true" if value else "false"
    return shlex.quote(str(value))


def _slot_tag(slots: Any) -> str:
    """A hash tag `{...}` whose keys hash to one of these Cluster slot ranges ([[start, end], ...]), so a
    probe key lands on the node that owns them; '' when the ranges are empty."""
    from redis.crc import key_slot

    ranges = [(int(a), int(b)) for a, b in (slots or ())]
    if not ranges:
        return ""
    for i in range(200_000):  # every slot is reached within ~100k short tags; bounded all the same
        slot = key_slot(f"rb{i}".encode())
        if any(a <= slot <= b for a, b in ranges):
            return f"{{rb{i}}}"
    return ""


def _lazy(name: str) -> Any:
    """A grading helper of engine.topology.grade, imported on first use."""

    def call(*args: Any, **kwargs: Any) -> Any:
        from engine.topology import grade

        return getattr(grade, name)(*args, **kwargs)

    call.__name__ = name
    return call


def _build(finalize: Any = None) -> ImmutableSandboxedEnvironment:
    env = _BoundedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, finalize=finalize
    )
    env.filters.update(
        human_bytes=human_bytes,
        duration=_duration,
        tojson=lambda v: json.dumps(v, default=str),
        percent=_percent,
        shell_quote=lambda v: shlex.quote(str(v)),
    )
    env.globals.update(
        percent=_percent,
        min=_series_min,
        max=_series_max,
        avg=_avg,
        last=_last,
        all=_all,
        any=_any,
        every=_all,  # every(rows, "value.outcome == 'ok'"): over a per-node result (redis `on:`)
        held_for=_held_for,
        rate=_rate,
        rates=_rates,
        decreases=_decreases,
        series_values=_values,
        len=len,
        int=int,
        float=float,
        str=str,
        sorted=sorted,
        sum=sum,
        round=round,
        abs=abs,
        dict=dict,
        list=list,
        random_password=random_password,
        dict_diff=_dict_diff,
        count_by=_count_by,
        tenant_of=_tenant_of,
        lines_matching=_lines_matching,
        matches=_matches,
        regex_find=_regex_find,
        parse_time=parse_time,
        format_time=format_time,
        seconds_since=_seconds_since,
        parse_size=parse_size,
        parse_duration=parse_duration,
        time=time.time,
        replication_lag=_lazy("replication_lag"),
        cluster_state=_lazy("cluster_state"),
        imbalance=_lazy("imbalance"),
        restart_order=_lazy("restart_order"),
        slot_tag=_slot_tag,
    )
    env.filters.update(
        tenant_of=_tenant_of,
        count_by=_count_by,
        matches=_matches,
        parse_time=parse_time,
        format_time=format_time,
        parse_duration=parse_duration,
    )
    env.globals.pop("lipsum", None)  # lipsum(n=10**9) is a generator of text with no use in a procedure
    env.filters = {name: _bounded_filter(name, func) for name, func in env.filters.items()}
    return env


@cache
def environment() -> ImmutableSandboxedEnvironment:
    return _build()


@cache
def shell_environment() -> ImmutableSandboxedEnvironment:
    return _build(_shell_finalize)


@cache
def _compiled_template(source: str, shell: bool) -> jinja2.Template:
    env = shell_environment() if shell else environment()
    return env.from_string(source)


@cache
def _compiled_expression(source: str) -> Any:
    return environment().compile_expression(source, undefined_to_none=False)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def render(value: Any, values: Mapping[str, Any], *, shell: bool = False) -> Any:
    """Render a string; a lone `{{ expr }}` (outside shell fields) keeps the value's type."""
    if not is_template(value):
        return value
    try:
        single = _SINGLE_EXPR.match(value)
        if single and not shell and "{{" not in single.group("expr"):
            return evaluate(single.group("expr"), values)
        with _budgeted():
            return _render_bounded(_compiled_template(value, shell), values)
    except TemplateError:
        raise
    except jinja2.TemplateError as exc:
        raise TemplateError(_message(exc)) from None
    except Exception as exc:  # arithmetic on live data: ZeroDivisionError, TypeError, ...
        raise TemplateError(f"{type(exc).__name__}: {exc}") from None


def typed(value: Any, values: Mapping[str, Any], parse: Any) -> Any:
    """A number/duration/count field: rendered when it is a template, then parsed; a bad value is a TemplateError."""
    rendered = render(value, values) if is_template(value) else value
    try:
        return parse(rendered)
    except (ValueError, TypeError) as exc:
        shown = f" ({value!r} gave {rendered!r})" if rendered is not value else ""
        raise TemplateError(f"{exc}{shown}") from None


def _render_bounded(template: jinja2.Template, values: Mapping[str, Any]) -> str:
    """Template.render, a chunk at a time, stopping as soon as the output is over MAX_OUTPUT."""
    parts: list[str] = []
    size = 0
    for chunk in template.generate(values):
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise TemplateError(f"renders to more than {MAX_OUTPUT:,} characters (the limit)")
        parts.append(chunk)
    return "".join(parts)


def render_data(
    value: Any,
    values: Mapping[str, Any],
    *,
    shell_fields: frozenset[str] = frozenset(),
    raw_fields: frozenset[str] = frozenset(),
) -> Any:
    """Render every string inside a step body; top-level keys in shell_fields are shell-quoted."""

    def walk(item: Any, shell: bool) -> Any:
        if isinstance(item, str):
            return render(item, values, shell=shell)
        if isinstance(item, list):
            return [walk(v, shell) for v in item]
        if isinstance(item, dict):
            return {k: walk(v, shell) for k, v in item.items()}
        return item

    if isinstance(value, dict):
        return {k: (v if k in raw_fields else walk(v, k in shell_fields)) for k, v in value.items()}
    return walk(value, False)


def _reject_undefined(value: Any) -> None:
    """An undefined name inside a list or dict literal is as much a typo as one at the top."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    elif isinstance(value, list | tuple):
        for item in value:
            _reject_undefined(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_undefined(key)
            _reject_undefined(item)


def evaluate(expression: str, values: Mapping[str, Any]) -> Any:
    """Evaluate a `when`/`expect`/`until` expression; `{{ }}` around it is accepted and ignored."""
    single = _SINGLE_EXPR.match(expression)
    source = single.group("expr") if single else expression
    try:
        with _budgeted():
            result = _compiled_expression(source.strip())(**values)
        _reject_undefined(result)
        return _check_size(result, "the expression")
    except TemplateError:
        raise
    except jinja2.TemplateError as exc:
        raise TemplateError(_message(exc)) from None
    except Exception as exc:
        raise TemplateError(f"{type(exc).__name__}: {exc}") from None


def variables(value: Any) -> set[str]:
    """The top-level names a template or expression reads: for the 'undeclared name' check."""
    names: set[str] = set()
    if isinstance(value, str):
        source = value
        if not is_template(value):
            return names
        names |= meta.find_undeclared_variables(environment().parse(source))
    elif isinstance(value, list):
        for item in value:
            names |= variables(item)
    elif isinstance(value, dict):
        for item in value.values():
            names |= variables(item)
    return names


def expression_variables(expression: str) -> set[str]:
    single = _SINGLE_EXPR.match(expression)
    source = single.group("expr") if single else expression
    return set(meta.find_undeclared_variables(environment().parse("{{ " + source.strip() + " }}")))


def check_syntax(value: str, *, expression: bool = False) -> str | None:
    """None when `value` parses, else Jinja's complaint."""
    try:
        if expression:
            single = _SINGLE_EXPR.match(value)
            tree = environment().parse("{{ " + (single.group("expr") if single else value).strip() + " }}")
        elif is_template(value):
            tree = environment().parse(value)
        else:
            return None
        meta.find_undeclared_variables(tree)  # walks the tree as the name check will: deep nesting fails here
    except jinja2.TemplateSyntaxError as exc:
        return exc.message or str(exc)
    except ValueError as exc:  # an integer literal of more than 4,300 digits
        return str(exc).split(";")[0]
    except RecursionError:
        return "nested too deeply"
    return None


def _message(exc: jinja2.TemplateError) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined name: {exc.message}"
    return exc.message or str(exc)
