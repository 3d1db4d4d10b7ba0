"""engine.spec.params: `--var` strings in, typed and checked values out, before any connection."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import UsageError
from engine.spec.model import Param
from engine.spec.params import convert, parse_duration, parse_size, parse_var_options, resolve

TENANT = "^[A-Za-z0-9_.-]+$"


def _usage(params: tuple[Param, ...], given: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(UsageError) as info:
        resolve(params, given, procedure="redis/x", **kwargs)
    return str(info.value)


# -- types ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [("acme", "acme"), (42, "42"), ("", "")])
def test_string(raw: Any, expected: str) -> None:
    assert convert(Param("s"), raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [("42", 42), (" 7 ", 7), ("-3", -3), (12, 12)])
def test_integer(raw: Any, expected: int) -> None:
    value = convert(Param("n", "integer"), raw)
    assert value == expected
    assert type(value) is int


@pytest.mark.parametrize("raw", ["4.5", "abc", "", "1e3", 4.5, True])
def test_integer_rejects(raw: Any) -> None:
    with pytest.raises(ValueError, match="is not an integer"):
        convert(Param("n", "integer"), raw)


def test_integer_accepts_an_integral_float() -> None:
    assert convert(Param("n", "integer"), 5.0) == 5


@pytest.mark.parametrize(("raw", "expected"), [("90", 90.0), ("2.5", 2.5), (" 1e2 ", 100.0), (3, 3), (0.5, 0.5)])
def test_number(raw: Any, expected: float) -> None:
    assert convert(Param("x", "number"), raw) == expected


@pytest.mark.parametrize("raw", ["ninety", "", True, False])
def test_number_rejects(raw: Any) -> None:
    with pytest.raises(ValueError, match="is not a number"):
        convert(Param("x", "number"), raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("yes", True),
        ("1", True),
        ("on", True),
        ("TRUE", True),
        (True, True),
        ("false", False),
        ("no", False),
        ("0", False),
        ("off", False),
        (" No ", False),
        (False, False),
    ],
)
def test_boolean(raw: Any, expected: bool) -> None:
    assert convert(Param("b", "boolean"), raw) is expected


@pytest.mark.parametrize("raw", ["maybe", "", "2", "y e s"])
def test_boolean_rejects(raw: str) -> None:
    with pytest.raises(ValueError, match="is not a boolean"):
        convert(Param("b", "boolean"), raw)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
        ("10", 10.0),
        (" 30 S ", 30.0),
        (45, 45.0),
        (0.5, 0.5),
    ],
)
def test_duration(raw: Any, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)
    assert convert(Param("d", "duration"), raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["5 minutes", "m5", "-5s", "", "1w", True])
def test_duration_rejects(raw: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        ("1k", 1000),
        ("1kb", 1024),
        ("1K", 1000),
        ("1KB", 1024),
        ("2gb", 2 * 1024**3),
        ("2g", 2 * 1000**3),
        ("512mb", 512 * 1024**2),
        ("512m", 512 * 1000**2),
        ("1tb", 1024**4),
        ("100b", 100),
        ("100", 100),
        (4096, 4096),
    ],
)
def test_size_uses_redis_units(raw: Any, size: int) -> None:
    assert parse_size(raw) == size
    assert convert(Param("s", "size"), raw) == size


@pytest.mark.parametrize("raw", ["1.5gb", "2 gigabytes", "-1kb", "", "gb", True])
def test_size_rejects(raw: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(raw)


def test_size_rejects_a_negative_integer() -> None:
    with pytest.raises(ValueError):
        parse_size(-5)


def test_duration_rejects_a_negative_number() -> None:
    with pytest.raises(ValueError):
        parse_duration(-5)


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown parameter type 'color'"):
        convert(Param("c", "color"), "red")


# -- pattern / enum / minimum / maximum -----------------------------------------------------------
@pytest.mark.parametrize("raw", ["acme", "tenant_1", "a.b-c", "X"])
def test_pattern_accepts(raw: str) -> None:
    assert convert(Param("tenant", pattern=TENANT), raw) == raw


@pytest.mark.parametrize("raw", ["a*", "x;id", "a b", "", "t/../x", "$(id)", "a?", "[ab]"])
def test_pattern_rejects(raw: str) -> None:
    with pytest.raises(ValueError, match="does not match"):
        convert(Param("tenant", pattern=TENANT), raw)


def test_pattern_rejects_a_trailing_newline() -> None:
    with pytest.raises(ValueError):
        convert(Param("tenant", pattern=TENANT), "acme\n")


def test_enum() -> None:
    param = Param("policy", enum=("allkeys-lru", "noeviction"))
    assert convert(param, "noeviction") == "noeviction"
    with pytest.raises(ValueError, match="is not one of allkeys-lru, noeviction"):
        convert(param, "volatile-lru")


def test_enum_compares_converted_values() -> None:
    param = Param("db", "integer", enum=(0, 1))
    assert convert(param, "1") == 1
    with pytest.raises(ValueError, match="is not one of 0, 1"):
        convert(param, "2")


def test_minimum_and_maximum_are_inclusive() -> None:
    param = Param("pct", "number", minimum=1, maximum=100)
    assert convert(param, "1") == 1
    assert convert(param, "100") == 100
    with pytest.raises(ValueError, match="below the minimum 1"):
        convert(param, "0.5")
    with pytest.raises(ValueError, match="above the maximum 100"):
        convert(param, "101")


def test_minimum_applies_to_sizes_and_durations_after_conversion() -> None:
    assert convert(Param("m", "size", minimum=1024), "1kb") == 1024
    with pytest.raises(ValueError, match="below the minimum"):
        convert(Param("m", "size", minimum=1024), "1k")
    with pytest.raises(ValueError, match="above the maximum"):
        convert(Param("t", "duration", maximum=60), "2m")


def test_nan_does_not_pass_minimum_and_maximum() -> None:
    with pytest.raises(ValueError):
        convert(Param("pct", "number", minimum=1, maximum=100), "nan")


# -- resolve: required, defaults, unknown names, secrets -----------------------------------------
def test_given_values_are_converted() -> None:
    params = (Param("tenant", pattern=TENANT, required=True), Param("n", "integer", default=10))
    assert resolve(params, {"tenant": "acme", "n": "3"}, procedure="redis/x") == {"tenant": "acme", "n": 3}


def test_default_is_used_and_converted_when_not_given() -> None:
    params = (Param("wait", "duration", default="5m"), Param("limit", "size", default="1kb"))
    assert resolve(params, {}, procedure="redis/x") == {"wait": 300.0, "limit": 1024}


def test_missing_required_param_is_a_usage_error() -> None:
    message = _usage((Param("tenant", required=True, description="Tenant to clear"),), {})
    assert "invalid parameters for redis/x" in message
    assert "--var tenant: required (Tenant to clear)" in message


def test_required_param_answered_later_is_none_for_now() -> None:
    params = (Param("tenant", required=True),)
    assert resolve(params, {}, procedure="redis/x", interactive_later=frozenset({"tenant"})) == {"tenant": None}


def test_optional_param_without_default_is_none() -> None:
    assert resolve((Param("note"),), {}, procedure="redis/x") == {"note": None}


def test_unknown_var_name_is_reported() -> None:
    message = _usage((Param("tenant"),), {"tenant": "acme", "tenent": "acme"})
    assert "--var tenent: redis/x has no parameter 'tenent'" in message


def test_every_problem_is_reported_at_once() -> None:
    params = (Param("tenant", pattern=TENANT, required=True), Param("n", "integer"), Param("must", required=True))
    message = _usage(params, {"tenant": "a*", "n": "many", "bogus": "1"})
    assert "--var bogus:" in message
    assert "--var tenant: 'a*' does not match" in message
    assert "--var n: 'many' is not an integer" in message
    assert "--var must: required" in message


@pytest.mark.parametrize(
    "param",
    [
        Param("password", secret=True, pattern="^[a-z]+$"),
        Param("password", secret=True, enum=("a", "b")),
        Param("password", "integer", secret=True),
        Param("password", "size", secret=True),
        Param("password", secret=True, pattern="^.{40,}$"),
    ],
)
def test_secret_value_never_appears_in_the_error(param: Param) -> None:
    secret = "Hunter2-Sup3r-S3cret!"
    message = _usage((param,), {"password": secret})
    assert "--var password:" in message
    assert "not shown: secret" in message
    assert secret not in message
    assert "Hunter2" not in message


def test_secret_value_given_under_a_wrong_name_is_not_shown() -> None:
    message = _usage((Param("password", secret=True),), {"pasword": "Hunter2-Sup3r-S3cret!"})
    assert "pasword" in message
    assert "Hunter2" not in message


def test_non_secret_error_does_show_the_value() -> None:
    # The counterpart of the secret tests: without `secret`, the operator sees what was wrong.
    message = _usage((Param("tenant", pattern=TENANT),), {"tenant": "x;id"})
    assert "'x;id'" in message


# -- parse_var_options ------------------------------------------------------------------------------
def test_parse_var_options() -> None:
    assert parse_var_options(("tenant=acme", "n=3")) == {"tenant": "acme", "n": "3"}


def test_parse_var_value_may_contain_equals() -> None:
    assert parse_var_options(("query=a=b=c", "url=redis://h/0?x=1")) == {"query": "a=b=c", "url": "redis://h/0?x=1"}


def test_parse_var_empty_value_is_allowed() -> None:
    assert parse_var_options(("note=",)) == {"note": ""}


def test_parse_var_strips_the_name_only() -> None:
    assert parse_var_options((" tenant = acme ",)) == {"tenant": " acme "}


def test_parse_var_last_one_wins() -> None:
    assert parse_var_options(("n=1", "n=2")) == {"n": "2"}


@pytest.mark.parametrize("pair", ["tenant", "=acme", " =acme", ""])
def test_parse_var_without_name_or_equals_is_a_usage_error(pair: str) -> None:
    with pytest.raises(UsageError, match="--var expects NAME=VALUE"):
        parse_var_options((pair,))


# -- numbers are ASCII digits only ------------------------------------------------------------------
# Python's int()/float() and regex \d read these as numbers; an operator cannot tell them from ASCII.
NOT_ASCII_NUMBERS = [
    "١٢",  # Arabic-Indic digits
    "۱۲",  # Extended Arabic-Indic
    "１２",  # fullwidth
    "१२",  # Devanagari
    "²",  # superscript two (str.isdigit() says yes)
    "1_000",  # int()'s digit grouping
    "\u20031",  # EM SPACE before the digit (int() strips Unicode whitespace)
    "1\u2003",
    "\x1c12",  # a control character int() strips as whitespace
    "1 2",
]


@pytest.mark.parametrize("raw", NOT_ASCII_NUMBERS)
@pytest.mark.parametrize("kind", ["integer", "number", "size", "duration"])
def test_typed_params_take_ascii_digits_only(kind: str, raw: str) -> None:
    with pytest.raises(ValueError, match=r"is not an? (integer|number|size|duration)"):
        convert(Param("n", kind), raw)


@pytest.mark.parametrize("raw", ["٤gb", "４gb", "4\u2009gb", "1_024mb", "٤"])
def test_size_refuses_unicode_digits_with_units(raw: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(raw)


@pytest.mark.parametrize("raw", ["٥m", "５s", "1_0s", "٣٠"])
def test_duration_refuses_unicode_digits_with_units(raw: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(raw)


@pytest.mark.parametrize("raw", ["nan", "inf", "-Infinity", "1e400", "0x10", "1_0.5"])
def test_number_refuses_what_float_would_take(raw: str) -> None:
    with pytest.raises(ValueError, match="is not a number"):
        convert(Param("x", "number"), raw)


def test_the_error_names_the_param_and_shows_the_hidden_characters() -> None:
    message = _usage((Param("top", "integer"), Param("maxmemory", "size")), {"top": "١٢", "maxmemory": "٤gb"})
    assert "--var top: '\\u0661\\u0662' is not an integer (numbers are written with ASCII digits 0-9 only)" in message
    assert "--var maxmemory: '\\u0664gb' is not a size" in message


def test_a_5000_digit_integer_is_refused_with_a_message() -> None:
    with pytest.raises(ValueError, match="too long"):
        convert(Param("n", "integer"), "9" * 5000)


@pytest.mark.parametrize("pattern", [r"^\d+$", r"^\w+$"])
def test_a_pattern_class_means_ascii_as_in_json_schema(pattern: str) -> None:
    with pytest.raises(ValueError, match="does not match"):
        convert(Param("p", pattern=pattern), "١٢")
    assert convert(Param("p", pattern=pattern), "12") == "12"
