"""engine.spec.template: sandboxed, strict Jinja; typed lone expressions; shell-quoted shell fields."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from engine.spec.template import (
    ShellText,
    TemplateError,
    check_syntax,
    evaluate,
    expression_variables,
    is_template,
    render,
    render_data,
    variables,
)


# -- sandbox ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "source",
    [
        "{{ ().__class__.__mro__ }}",
        "{{ ().__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__.__base__.__subclasses__() }}",
        "prefix {{ ().__class__.__mro__ }} suffix",
        "{{ joiner.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ '{0.__class__}'.format(1) }}",
        "{{ x.__class__ }}",
        "{{ x.append(1) }}",
        "{{ d.update({'a': 2}) }}",
    ],
)
def test_sandbox_blocks_escapes(source: str) -> None:
    with pytest.raises(TemplateError, match="unsafe"):
        render(source, {"x": [], "d": {}})


@pytest.mark.parametrize("source", ["{{ ().__class__ }}", "x.__class__.__mro__"])
def test_sandbox_blocks_escapes_in_expressions(source: str) -> None:
    with pytest.raises(TemplateError, match="unsafe"):
        evaluate(source, {"x": 1})


def test_sandbox_is_immutable_but_reading_works() -> None:
    values = {"xs": [3, 1, 2], "d": {"a": 1}}
    assert render("{{ xs | sort }}", values) == [1, 2, 3]
    assert render("{{ d.a }}", values) == 1
    assert values == {"xs": [3, 1, 2], "d": {"a": 1}}


# -- strict undefined ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("{{ tenantt }}", "tenantt"),
        ("key:{{ tenantt }}:wm", "tenantt"),
        ("{{ before.nope }}", "nope"),
        ("{{ tenantt | upper }}", "tenantt"),
        ("{% if tenantt %}x{% endif %}", "tenantt"),
    ],
)
def test_undefined_name_is_an_error_naming_it(source: str, name: str) -> None:
    with pytest.raises(TemplateError, match=f"undefined name: .*'{name}'"):
        render(source, {"before": {}})


@pytest.mark.parametrize("expression", ["missing", "not missing", "missing == 1", "before.nope > 0"])
def test_undefined_name_in_an_expression_is_an_error(expression: str) -> None:
    with pytest.raises(TemplateError):
        evaluate(expression, {"before": {}})


@pytest.mark.parametrize("source", ["{{ [missing] }}", "{{ {'a': missing} }}"])
def test_undefined_name_inside_a_lone_list_or_dict_is_an_error(source: str) -> None:
    with pytest.raises(TemplateError):
        render(source, {})


def test_runtime_errors_become_template_errors() -> None:
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        render("{{ 1 / n }}", {"n": 0})


# -- types --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ n }}", 5),
        ("  {{ n }}  ", 5),
        ("{{ n + 1 }}", 6),
        ("{{ xs }}", [1, "two"]),
        ("{{ d }}", {"a": 1}),
        ("{{ flag }}", False),
        ("{{ nothing }}", None),
        ("{{ 1.5 }}", 1.5),
    ],
)
def test_lone_expression_keeps_its_type(source: str, expected: Any) -> None:
    result = render(source, {"n": 5, "xs": [1, "two"], "d": {"a": 1}, "flag": False, "nothing": None})
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("n={{ n }}", "n=5"),
        ("{{ n }}{{ n }}", "55"),
        ("{{ n }} and {{ n }}", "5 and 5"),
        ("{% if n %}{{ n }}{% endif %}", "5"),
        ("{{ xs }}!", "[1, 2]!"),
    ],
)
def test_mixed_text_renders_to_str(source: str, expected: str) -> None:
    result = render(source, {"n": 5, "xs": [1, 2]})
    assert result == expected
    assert type(result) is str


@pytest.mark.parametrize("value", ["plain text", 5, None, ["{{ not rendered in a list }}"], {"a": 1}])
def test_non_templates_are_returned_unchanged(value: Any) -> None:
    assert render(value, {}) is value


def test_is_template() -> None:
    assert is_template("a {{ b }}")
    assert is_template("{% if a %}{% endif %}")
    assert not is_template("a { b }")
    assert not is_template(5)


def test_evaluate_accepts_braces_around_an_expression() -> None:
    assert evaluate("{{ a + b }}", {"a": 1, "b": 2}) == 3
    assert evaluate("a + b", {"a": 1, "b": 2}) == 3
    assert evaluate("result in (true, 'PONG')", {"result": "PONG"}) is True


# -- shell quoting --------------------------------------------------------------------------------------
HOSTILE = ["x;id", "a b", "$(rm -rf /)", "`id`", "it's", 'say "hi"', "a'b\"c", "", "a\nb", "*", "--force", "|&><"]


@pytest.mark.parametrize("value", HOSTILE)
def test_shell_rendering_quotes_every_value_into_one_argument(value: str) -> None:
    rendered = render("redis-cli --scan --pattern {{ v }} --count 10", {"v": value}, shell=True)
    assert shlex.split(rendered) == ["redis-cli", "--scan", "--pattern", value, "--count", "10"]


@pytest.mark.parametrize("value", HOSTILE)
def test_shell_rendering_of_a_lone_value_is_quoted_text(value: str) -> None:
    rendered = render("{{ v }}", {"v": value}, shell=True)
    assert isinstance(rendered, str)
    assert shlex.split(rendered) == [value]


def test_shell_rendering_quotes_loop_items_and_expressions_separately() -> None:
    rendered = render("rm {% for f in files %}{{ f }} {% endfor %}", {"files": ["a b", "c;d"]}, shell=True)
    assert shlex.split(rendered) == ["rm", "a b", "c;d"]
    rendered = render("echo {{ a ~ b }}", {"a": "x ", "b": "$(id)"}, shell=True)
    assert shlex.split(rendered) == ["echo", "x $(id)"]


def test_shell_rendering_of_numbers_and_booleans() -> None:
    assert render("sleep {{ n }}; echo {{ ok }}", {"n": 5, "ok": True}, shell=True) == "sleep 5; echo true"


def test_shell_text_is_inserted_raw() -> None:
    values = {"service": {"stop": ShellText("sudo systemctl stop redis && sleep 1")}, "path": "/var/lib/a b"}
    rendered = render("{{ service.stop }}; ls {{ path }}", values, shell=True)
    assert rendered == "sudo systemctl stop redis && sleep 1; ls '/var/lib/a b'"


def test_plain_str_that_looks_like_shell_text_is_still_quoted() -> None:
    rendered = render("{{ cmd }}", {"cmd": "sudo systemctl stop redis"}, shell=True)
    assert shlex.split(rendered) == ["sudo systemctl stop redis"]


def test_without_shell_values_are_not_quoted() -> None:
    assert render("echo {{ v }}", {"v": "a b"}) == "echo a b"


def test_render_data_quotes_only_shell_fields_and_skips_raw_fields() -> None:
    body = {"run": "cat {{ f }}", "timeout": "{{ t }}", "note": "for {{ f }}", "raw": "{{ later }}"}
    out = render_data(body, {"f": "a b", "t": 30}, shell_fields=frozenset({"run"}), raw_fields=frozenset({"raw"}))
    assert out == {"run": "cat 'a b'", "timeout": 30, "note": "for a b", "raw": "{{ later }}"}


def test_render_data_walks_lists_and_dicts() -> None:
    body = {"command": ["UNLINK", "tenant:{{ t }}:wm:active"], "opts": {"n": "{{ n }}"}}
    assert render_data(body, {"t": "acme", "n": 3}) == {
        "command": ["UNLINK", "tenant:acme:wm:active"],
        "opts": {"n": 3},
    }


# -- filters ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0B"),
        (None, "0B"),
        (1023, "1023B"),
        (1024, "1.0KiB"),
        (1536, "1.5KiB"),
        (1024**2, "1.0MiB"),
        (int(2.5 * 1024**3), "2.5GiB"),
        (1024**4, "1.0TiB"),
        (1024**5, "1024.0TiB"),
    ],
)
def test_human_bytes(value: Any, expected: str) -> None:
    assert render("{{ v | human_bytes }}", {"v": value}) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "0s"), (59, "59s"), (60, "1m00s"), (61, "1m01s"), (90.7, "1m30s"), (3600, "1h00m00s"), (3661, "1h01m01s")],
)
def test_duration_filter(seconds: Any, expected: str) -> None:
    assert render("{{ s | duration }}", {"s": seconds}) == expected


def test_percent_filter_and_function() -> None:
    assert render("{{ 50 | percent(200) }}", {}) == 25.0
    assert render("{{ percent(1, 3) }}", {}) == 33.3
    assert render("{{ percent(1, 3, 3) }}", {}) == 33.333
    assert render("{{ percent(used, max) }}", {"used": 5, "max": 0}) is None
    assert render("{{ percent(used, max) }}%", {"used": 900, "max": 1000}) == "90.0%"


# -- names -------------------------------------------------------------------------------------------------
def test_variables_finds_top_level_names() -> None:
    source = "{{ before[0].key }} {{ size | human_bytes }} {% for i in items %}{{ i }}{% endfor %}{{ percent(a, b) }}"
    assert variables(source) == {"before", "size", "items", "a", "b"}


def test_variables_skips_locals_and_non_templates() -> None:
    assert variables("{% set x = 1 %}{{ x }}") == set()
    assert variables("no template {here}") == set()
    assert variables(5) == set()


def test_variables_walks_lists_and_dicts() -> None:
    assert variables(["{{ a }}", {"k": "{{ b.c }}", "n": ["{{ d }}"]}, 7]) == {"a", "b", "d"}


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("result == 0", {"result"}),
        (
            "mem.maxmemory == 0 or percent(mem.used_memory, mem.maxmemory) <= memory_alert_pct",
            {"mem", "memory_alert_pct"},
        ),
        ("{{ before[0].exists }}", {"before"}),
        ("x in [1, 2] and y is defined", {"x", "y"}),
        ("'literal'", set()),
    ],
)
def test_expression_variables(expression: str, names: set[str]) -> None:
    assert expression_variables(expression) == names


def test_check_syntax() -> None:
    assert check_syntax("a {{ b }}") is None
    assert check_syntax("no template") is None
    assert check_syntax("a {{ b ") is not None
    assert check_syntax("{% if a %}") is not None
    assert check_syntax("a == 1", expression=True) is None
    assert check_syntax("a b", expression=True) is not None


SERIES = {
    "samples": [
        {"t": 0.0, "value": {"ratio": 1.2}},
        {"t": 1.0, "value": {"ratio": 1.7}},
        {"t": 2.0, "value": {"ratio": 1.8}},
        {"t": 3.0, "value": None, "error": "timeout"},
        {"t": 4.0, "value": {"ratio": 1.9}},
    ]
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("held_for(s, 'value.ratio > 1.5')", 3.0),  # from t=1 to t=4; the errored sample is left out
        ("held_for(s, 'value.ratio > 1.75')", 2.0),
        ("held_for(s, 'value.ratio > 5')", 0.0),
        ("all(s, 'value.ratio > 1')", True),
        ("all(s, 'value.ratio > 1.5')", False),
        ("any(s, 'value.ratio > 1.85')", True),
        ("min(s, 'value.ratio')", 1.2),
        ("max(s, 'value.ratio')", 1.9),
        ("avg(s, 'value.ratio') | round(2)", 1.65),
        ("last(s, 'value.ratio')", 1.9),
        ("rate(s, 'value.ratio') | round(3)", 0.175),
        ("min(3, 1, 2)", 1),
        ("max([3, 5])", 5),
        ("all([1, 2]) and not any([0, false])", True),
        ("avg([1, 2, 3])", 2.0),
    ],
)
def test_series_helpers(expression: str, expected: Any) -> None:
    assert evaluate(expression, {"s": SERIES}) == expected


def test_series_helper_on_something_else_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="expected a series"):
        evaluate("avg(5)", {})


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("matches('ERR connection timeout', 'ERR .*timeout')", True),
        ("matches('OK', '^ERR')", False),
        ("'tenant:acme:x' | matches('^tenant:[a-z]+:')", True),
        ("regex_find('used=12 peak=30', '(\\\\w+)=(\\\\d+)')", [("used", "12"), ("peak", "30")]),
        ("lines_matching('a\\nERR x\\nb', '^ERR')", ["ERR x"]),
    ],
)
def test_regex_helpers(expression: str, expected: Any) -> None:
    assert evaluate(expression, {}) == expected


@pytest.mark.parametrize(
    "pattern",
    ["(a+)+$", "(a*)*b", "(.*)*x", "^(\\\\w+\\\\s?)*$", "(a|aa)*$", "(x|xy)+z", "((ab)*c)*d", "(?:a+){2,}"],
)
def test_catastrophic_patterns_are_refused_before_they_run(pattern: str) -> None:
    hostile = "a" * 40 + "!"
    with pytest.raises(TemplateError, match="catastrophic backtracking"):
        evaluate(f"matches(text, '{pattern}')", {"text": hostile})
    with pytest.raises(TemplateError, match="catastrophic backtracking"):
        evaluate(f"lines_matching(text, '{pattern}')", {"text": hostile})


def test_regex_input_is_capped_and_bad_patterns_are_template_errors() -> None:
    with pytest.raises(TemplateError, match="more than the 1,000,000"):
        evaluate("matches(text, 'x')", {"text": "a" * 1_000_001})
    with pytest.raises(TemplateError, match="invalid regular expression"):
        evaluate("matches('x', '(')", {})


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2026-11-26T02:03:04Z", 1795658584.0),
        ("2026-11-26T04:03:04+02:00", 1795658584.0),
        ("2026-11-26 02:03:04", 1795658584.0),
        ("26 Nov 2026 02:03:04.500", 1795658584.5),
        (1795658584, 1795658584.0),
    ],
)
def test_parse_time_reads_the_engines_format_iso_and_redis_log_times(text: Any, epoch: float) -> None:
    assert evaluate("parse_time(t)", {"t": text}) == epoch


def test_time_helpers_compare_and_format() -> None:
    scope = {"now": "2026-11-26T02:10:00Z", "seen": "26 Nov 2026 02:03:04.000"}
    assert evaluate("parse_time(now) - parse_time(seen) > parse_duration('5m')", scope) is True
    assert evaluate("seconds_since(seen, now)", scope) == 416.0
    assert evaluate("format_time(seen)", scope) == "2026-11-26T02:03:04Z"
    assert evaluate("format_time(1795658584, '%H:%M')", {}) == "02:03"
    assert evaluate("'90s' | parse_duration", {}) == 90.0
    with pytest.raises(TemplateError, match="is not a time"):
        evaluate("parse_time('yesterday')", {})


def test_latency_percentiles_are_nearest_rank() -> None:
    from engine.steps.latency_step import summarise

    figures = summarise([float(v) for v in range(100, 0, -1)])
    assert figures["pings"] == 100 and figures["min_ms"] == 1.0 and figures["max_ms"] == 100.0
    assert (figures["p50_ms"], figures["p90_ms"], figures["p99_ms"], figures["avg_ms"]) == (50.0, 90.0, 99.0, 50.5)
    assert summarise([2.0])["p99_ms"] == 2.0


def test_rates_between_samples_and_decreases() -> None:
    counter = {"samples": [{"t": 0.0, "value": 0}, {"t": 1.0, "value": 100}, {"t": 3.0, "value": 140}]}
    assert evaluate("rates(s).samples | map(attribute='value') | list", {"s": counter}) == [100.0, 20.0]
    assert evaluate("held_for(rates(s), 'value > 10')", {"s": counter}) == 2.0
    assert evaluate("held_for(rates(s), 'value > 50')", {"s": counter}) == 0.0
    before = {"acme": {"keys": 10}, "globex": {"keys": 5}, "initech": {"keys": 3}}
    after = {"acme": {"keys": 4}, "globex": {"keys": 9}}
    assert evaluate("decreases(b, a, 'keys')", {"b": before, "a": after}) == {"acme": 6.0, "initech": 3.0}


@pytest.mark.parametrize("slots", [[[0, 5460]], [[5461, 10922]], [[16383, 16383]], [[7, 7], [9000, 9001]]])
def test_slot_tag_puts_a_key_in_one_of_the_given_slots(slots: list[list[int]]) -> None:
    from redis.crc import key_slot

    tag = evaluate("slot_tag(slots)", {"slots": slots})
    assert tag.startswith("{") and tag.endswith("}")
    slot = key_slot(f"runbook:probe:{tag}:x".encode())
    assert any(a <= slot <= b for a, b in slots)


def test_slot_tag_of_no_slots_is_empty() -> None:
    assert evaluate("slot_tag([])", {}) == ""
