"""engine.spec.yamlsource: YAML that remembers the 1-based line:column of every key and value."""

from __future__ import annotations

import pytest

from engine.errors import SourceError, UsageError
from engine.spec.yamlsource import format_path, load_yaml

DOC = """\
id: redis/x
steps:
  - id: first
    redis: {command: [GET, k]}
  - id: second
    note: >-
      folded
      text
"quoted": 'single'
"""


def _errors(text: str, file: str = "f.yaml") -> list[SourceError]:
    with pytest.raises(UsageError) as info:
        load_yaml(text, file)
    return info.value.errors


def test_data_is_plain_python() -> None:
    located = load_yaml(DOC, "f.yaml")
    assert located.data == {
        "id": "redis/x",
        "steps": [
            {"id": "first", "redis": {"command": ["GET", "k"]}},
            {"id": "second", "note": "folded text"},
        ],
        "quoted": "single",
    }
    assert located.file == "f.yaml"


def test_key_positions_are_one_based_line_and_column() -> None:
    located = load_yaml(DOC, "f.yaml")
    assert located.keys[("id",)] == (1, 1)
    assert located.keys[("steps",)] == (2, 1)
    assert located.keys[("steps", 0, "id")] == (3, 5)
    assert located.keys[("steps", 0, "redis")] == (4, 5)
    assert located.keys[("steps", 0, "redis", "command")] == (4, 13)
    assert located.keys[("steps", 1, "note")] == (6, 5)
    assert located.keys[("quoted",)] == (9, 1)


def test_value_positions_are_one_based_line_and_column() -> None:
    located = load_yaml(DOC, "f.yaml")
    assert located.values[()] == (1, 1)
    assert located.values[("id",)] == (1, 5)
    assert located.values[("steps", 0)] == (3, 5)  # a list item: where its mapping starts
    assert located.values[("steps", 0, "id")] == (3, 9)
    assert located.values[("steps", 0, "redis", "command")] == (4, 22)
    assert located.values[("steps", 0, "redis", "command", 0)] == (4, 23)
    assert located.values[("steps", 0, "redis", "command", 1)] == (4, 28)
    assert located.values[("steps", 1, "note")] == (6, 11)  # the '>-' indicator
    assert located.values[("quoted",)] == (9, 11)


def test_position_prefers_the_key_then_the_value_then_the_nearest_parent() -> None:
    located = load_yaml(DOC, "f.yaml")
    assert located.position(("steps", 0, "id")) == (3, 5)  # key, not value (3, 9)
    assert located.position(("steps", 0, "redis", "command", 1)) == (4, 28)  # list item: its value
    assert located.position(("steps", 0, "redis", "nope", "deeper")) == (4, 5)  # nearest parent: the key
    assert located.position(("nothing",)) == (1, 1)  # falls back to the document


def test_error_carries_file_position_and_formatted_path() -> None:
    located = load_yaml(DOC, "procs/x.yaml")
    error = located.error(("steps", 0, "redis", "command"), "bad command")
    assert error == SourceError("procs/x.yaml", 4, 13, "steps[0].redis.command", "bad command")
    assert str(error) == "procs/x.yaml:4:13: steps[0].redis.command: bad command"


def test_duplicate_key_is_reported_at_the_second_occurrence() -> None:
    text = "id: a\nsteps:\n  - id: s\n    name: one\n    name: two\n"
    (error,) = _errors(text)
    assert (error.file, error.line, error.column) == ("f.yaml", 5, 5)
    assert error.path == "steps[0].name"
    assert error.message == "duplicate key 'name'"
    assert str(error) == "f.yaml:5:5: steps[0].name: duplicate key 'name'"


def test_every_duplicate_key_is_reported_at_once() -> None:
    text = "a: 1\nb:\n  c: 2\n  c: 3\na: 4\n"
    errors = _errors(text)
    assert {(e.line, e.column, e.path, e.message) for e in errors} == {
        (4, 3, "b.c", "duplicate key 'c'"),
        (5, 1, "a", "duplicate key 'a'"),
    }


def test_duplicate_keys_in_a_flow_mapping() -> None:
    (error,) = _errors("x: {k: 1, k: 2}\n")
    assert (error.line, error.column, error.path) == (1, 11, "x.k")


@pytest.mark.parametrize(
    ("text", "line", "column", "problem"),
    [
        ("a: b: c\n", 1, 5, "mapping values are not allowed here"),
        ("a: 1\nb: [1,\n", 3, 1, "expected the node content"),
        ("a: 1\n  b: 2\n", 2, 4, "mapping values are not allowed here"),
        ("a: *nope\n", 1, 4, "found undefined alias 'nope'"),
        ("a: 1\n---\nb: 2\n", 2, 1, "but found another document"),
    ],
)
def test_yaml_syntax_error_has_line_and_column(text: str, line: int, column: int, problem: str) -> None:
    (error,) = _errors(text, "broken.yaml")
    assert (error.file, error.line, error.column) == ("broken.yaml", line, column)
    assert error.path == ""
    assert error.message.startswith("YAML syntax error: ")
    assert problem in error.message
    assert str(error).startswith(f"broken.yaml:{line}:{column}: YAML syntax error: ")


def test_syntax_error_is_a_usage_error_naming_the_file() -> None:
    with pytest.raises(UsageError) as info:
        load_yaml("a: b: c\n", "broken.yaml")
    assert "invalid YAML" in str(info.value)
    assert "broken.yaml:1:5:" in str(info.value)


def test_unsafe_tags_are_refused_with_a_location() -> None:
    (error,) = _errors("a: 1\nb: !!python/name:os.system ''\n")
    assert (error.line, error.column) == (2, 4)
    assert "python/name:os.system" in error.message


def test_scalar_keys_become_strings_as_written() -> None:
    located = load_yaml("1: a\ntrue: b\non: c\nyes: d\n", "f.yaml")
    assert located.data == {"1": "a", "true": "b", "on": "c", "yes": "d"}  # `on:` is a field, not YAML 1.1's true


def test_empty_document_is_none() -> None:
    assert load_yaml("", "f.yaml").data is None


def test_non_scalar_mapping_key_is_reported() -> None:
    (error,) = _errors("a: 1\n? [x, y]\n: 2\n")
    assert (error.line, error.column) == (2, 3)
    assert error.message == "mapping keys must be scalars"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ((), ""),
        (("steps",), "steps"),
        (("steps", 2, "redis"), "steps[2].redis"),
        (("steps", 0, "expect", 1, "that"), "steps[0].expect[1].that"),
        (("params", "tenant", "pattern"), "params.tenant.pattern"),
        (("a", 0, 1), "a[0][1]"),
        ((0, "a"), "[0].a"),
    ],
)
def test_format_path(path: tuple[str | int, ...], expected: str) -> None:
    assert format_path(path) == expected
