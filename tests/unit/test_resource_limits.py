"""Resource bombs in everything the engine parses: YAML, templates, transcripts (issue 16, item 5).

Each class of bomb is generated here at several sizes and shapes and must end in a located error
(YAML: file:line:column and field; templates: TemplateError naming the limit; transcripts: a Problem
on the line), never a hang, a RecursionError or a MemoryError.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.errors import SourceError, UsageError
from engine.spec import yamlsource
from engine.spec.loader import check_file
from engine.spec.template import MAX_ITERATIONS, MAX_OUTPUT, TemplateError, evaluate, render
from engine.spec.yamlsource import MAX_ALIASES, MAX_DEPTH, MAX_VALUES, MAX_YAML_BYTES, load_yaml, read_yaml_file
from engine.transcript import reader
from engine.transcript.reader import MAX_JSON_DEPTH, read_transcript

SHIPPED = Path(__file__).resolve().parents[2] / "procedures" / "redis" / "health-check.yaml"


def _errors(text: str) -> list[SourceError]:
    with pytest.raises(UsageError) as info:
        load_yaml(text, "bomb.yaml")
    assert info.value.exit_code == 2
    assert info.value.errors, "a located error"
    return info.value.errors


# -- YAML ----------------------------------------------------------------------------------------
def _laughs(levels: int, width: int, flow: bool) -> str:
    lines = ["a0: &a0 " + ('["lol"]' if flow else "lol")]
    for i in range(1, levels + 1):
        refs = [f"*a{i - 1}"] * width
        if flow:
            lines.append(f"a{i}: &a{i} [{', '.join(refs)}]")
        else:
            lines.append(f"a{i}: &a{i}\n" + "".join(f"  - {r}\n" for r in refs).rstrip("\n"))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("levels", "width", "flow"), [(9, 9, True), (9, 9, False), (6, 10, True), (20, 2, True)])
def test_alias_expansion_bombs_are_refused_at_the_alias(levels: int, width: int, flow: bool) -> None:
    errors = _errors(_laughs(levels, width, flow))
    assert f"more than {MAX_VALUES} values once aliases are expanded" in errors[0].message
    assert errors[0].line is not None and errors[0].line > 1
    assert errors[0].path.startswith("a")  # the field being expanded


def test_too_many_aliases_are_refused_even_when_small() -> None:
    text = "a: &a x\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    errors = _errors(text)
    assert errors[0].message == f"more than {MAX_ALIASES} aliases (*name)"
    assert errors[0].line == 2


def test_a_few_aliases_are_still_fine() -> None:
    assert load_yaml("a: &a [1, 2]\nb: *a\n", "f.yaml").data == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 600, 100_000])
@pytest.mark.parametrize("style", ["flow-seq", "flow-map", "block"])
def test_deep_nesting_is_refused_not_a_recursion_error(depth: int, style: str) -> None:
    if style == "flow-seq":
        text = "x: " + "[" * depth + "]" * depth + "\n"
    elif style == "flow-map":
        text = "x: " + "{a: " * depth + "1" + "}" * depth + "\n"
    else:
        depth = min(depth, 1000)  # 100,000 indented levels would be gigabytes: the size limit's case
        text = "".join(" " * i + "k:\n" for i in range(depth)) + " " * depth + "v\n"
    errors = _errors(text)
    assert errors[0].message == f"nested deeper than {MAX_DEPTH} levels" or "larger than" in errors[0].message
    if len(text) <= MAX_YAML_BYTES:
        assert errors[0].line is not None


def test_nesting_by_aliases_counts_after_expansion() -> None:
    chunk = 10  # each anchor nests 10 deeper than the one it names: 10 anchors are 100 deep
    lines = ["a0: &a0 x"]
    for i in range(1, 11):
        lines.append(f"a{i}: &a{i} " + "[" * chunk + f"*a{i - 1}" + "]" * chunk)
    errors = _errors("\n".join(lines) + "\n")
    assert f"nested deeper than {MAX_DEPTH} levels once aliases are expanded" in errors[0].message


def test_nesting_up_to_the_limit_loads() -> None:
    depth = MAX_DEPTH - 1
    assert load_yaml("x: " + "[" * depth + "]" * depth + "\n", "f.yaml").data["x"] is not None


@pytest.mark.parametrize(
    "scalar",
    [
        "9" * 5000,
        "-" + "9" * 20,
        "12345678901234567890",
        "0x" + "f" * 40,
        "1_000_000_000_000_000_000_000",
        "0" + "7" * 30,
    ],
)
def test_integers_longer_than_64_bits_are_refused_with_their_field(scalar: str) -> None:
    errors = _errors(f"params:\n  n:\n    default: {scalar}\n")
    assert errors[0].path == "params.n.default"
    assert (errors[0].line, errors[0].column) == (3, 14)
    assert "integer over 64 bits (at most 19 digits)" in errors[0].message


def test_a_huge_integer_key_is_refused_too() -> None:
    assert "over 64 bits" in _errors("? " + "9" * 5000 + "\n: x\n")[0].message


@pytest.mark.parametrize("scalar", [".inf", "-.inf", ".nan", ".NaN", "1.0e+400", "-1.5e+999", "!!float 1e400"])
def test_non_finite_floats_are_refused(scalar: str) -> None:
    errors = _errors(f"retry:\n  interval: {scalar}\n")
    assert errors[0].path == "retry.interval"
    assert "is not a finite number" in errors[0].message


@pytest.mark.parametrize("scalar", ["2026-13-45", "!!float abc", "!!int 'x'"])
def test_scalars_their_tag_cannot_build_are_located_errors(scalar: str) -> None:
    errors = _errors(f"a:\n  b: {scalar}\n")
    assert (errors[0].line, errors[0].path) == (2, "a.b")


def test_an_oversized_document_is_refused_before_parsing() -> None:
    errors = _errors("x: " + "a" * MAX_YAML_BYTES + "\n")
    assert "larger than 1024 KiB" in errors[0].message


def test_an_oversized_file_is_refused_without_reading_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as handle:  # 50 MB, sparse: a parse would take a minute, the refusal reads 1 MiB
        handle.truncate(50 * 1024 * 1024)
    reads: list[int] = []
    real_fdopen = os.fdopen  # files are opened by descriptor (O_NONBLOCK, then fstat: no FIFO can block)

    def counting_open(*args, **kwargs):  # type: ignore[no-untyped-def]
        handle = real_fdopen(*args, **kwargs)
        real_read = handle.read

        def read(size: int = -1) -> bytes:
            reads.append(size)
            return real_read(size)

        handle.read = read
        return handle

    monkeypatch.setattr(os, "fdopen", counting_open)
    _, errors, _ = check_file(big)
    monkeypatch.undo()
    assert reads == [MAX_YAML_BYTES + 1]
    assert errors[0].file.endswith("big.yaml") and "larger than 1024 KiB (the limit), not parsed" in errors[0].message
    with pytest.raises(UsageError, match="too large"):
        read_yaml_file(big)


def test_invalid_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"a: 1\nb: \xff\xfe\n")
    with pytest.raises(UsageError) as info:
        read_yaml_file(path)
    assert info.value.errors[0].line == 2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1e400", "is not a duration"),
        ("99999999999d", "longer than 7 days"),
        (10**12, "longer than 7 days"),
        ("8d", "longer than 7 days"),
    ],
)
def test_durations_are_bounded_at_validate(tmp_path: Path, value: object, message: str) -> None:
    text = SHIPPED.read_text(encoding="utf-8").replace(
        "      command: [PING]\n",
        f"      command: [PING]\n    retry:\n      until: result\n      interval: {value}\n",
        1,
    )
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    _, errors, _ = check_file(path)
    assert [(e.path, message in e.message) for e in errors] == [("steps[0].retry.interval", True)]


def test_every_shipped_yaml_file_is_within_the_limits() -> None:
    root = SHIPPED.parent
    for path in [*root.glob("*.yaml"), *root.glob("scenarios/*.yaml")]:
        read_yaml_file(path)  # raises if over a limit


def test_inventories_go_through_the_bounded_loader(tmp_path: Path) -> None:
    from engine.targets import load_inventory

    path = tmp_path / "inv.yaml"
    path.write_text(_laughs(9, 9, True), encoding="utf-8")
    with pytest.raises(UsageError) as info:
        load_inventory(path)
    assert "aliases are expanded" in str(info.value) and f"{path}:" in str(info.value)


def test_the_catalog_skips_a_bomb_instead_of_hanging(tmp_path: Path) -> None:
    from engine.spec.loader import Catalog

    (tmp_path / "bomb.yaml").write_text("id: x/bomb\n" + _laughs(9, 9, True) + "title: *a9\n", encoding="utf-8")
    (tmp_path / "deep.yaml").write_text("id: x/deep\ntitle: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    entries = Catalog([tmp_path]).entries()
    assert entries["x/bomb"].title == ""  # never str() of the expansion
    assert "x/deep" not in entries or entries["x/deep"].title == ""


def test_yamlsource_limits_are_what_the_docs_say() -> None:
    docs = (SHIPPED.parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    for figure in ("1 MiB", f"{yamlsource.MAX_DEPTH} levels", f"{MAX_ALIASES} aliases", "100,000 values", "19 digits"):
        assert figure in docs


# -- templates -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 9 ** 99999 }}", "bits"),
        ("x {{ 9 ** (9 ** 9) }}", "bits"),
        ("{{ (-7) ** 100000 }}", "bits"),
        ("{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}{% endfor %}", "bits"),
        ("{{ 'A' * 100000000 }}", "repeated"),
        ("{{ 100000000 * 'A' }}", "repeated"),
        ("{{ [0] * 100000000 }}", "repeated"),
        ("{{ ('A' * 1000000) * 1000 }}", "repeated"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "loop iterations"),
        ("{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}", "loop iterations"),
        ("{% for a in s recursive %}{% endfor %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}", "loop"),
        ("{{ [1, 2] | map('string') | list }}{% for a in s %}{{ s }}{{ s }}{% endfor %}", "characters"),
        ("{{ 'x'.ljust(1000000000) }}", "width"),
        ("{{ 'x'.center(1000000000) }}", "width"),
        ("{{ 'x'.zfill(1000000000) }}", "width"),
        ("{{ 'x' | center(1000000000) }}", "size argument"),
        ("{{ 'x' | indent(1000000000, true) }}", "size argument"),
        ("{{ '%999999999d' % 1 }}", "width"),
        ("{{ '%.999999999f' % 1 }}", "width"),
        ("{{ '%*d' % (999999999, 1) }}", "width"),
        ("{{ '{:>999999999}'.format(1) }}", "width"),
        ("{{ '%999999999s' | format(1) }}", "width"),
        ("{{ s.replace('x', s) }}", "replace"),
        ("{{ s | replace('x', s) }}", "replace"),
        ("{{ random_password(1000000000) }}", "at most 1024"),
        ("{{ lipsum(1000000000) }}", "undefined"),
    ],
)
def test_template_bombs_end_in_an_error_naming_the_limit(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        render(source, {"s": "x" * 100_000})


@pytest.mark.parametrize(
    "expression", ["9 ** 99999", "'A' * 100000000", "[0] * 100000000", "(range(100000) | list) * 1000"]
)
def test_expression_bombs_end_in_an_error(expression: str) -> None:
    with pytest.raises(TemplateError):
        evaluate(expression, {})


def test_a_render_out_of_time_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.spec.template as template

    monkeypatch.setattr(template, "MAX_RENDER_SECONDS", -1.0)  # already over: the first check refuses
    with pytest.raises(TemplateError, match="longer than"):
        render("{% for i in range(5000) %}{% endfor %}", {})
    with pytest.raises(TemplateError, match="longer than"):
        render("{{ 'a'.upper() }} x", {})


def test_ordinary_templates_still_work_near_the_limits() -> None:
    assert render("{{ 2 ** 64 }}", {}) == 2**64
    assert render("{{ 'ab' * 3 }}-{{ '%5.1f' % 2.25 }}-{{ '{:>4}'.format(7) }}", {}) == "ababab-  2.2-   7"
    loops = "{% for i in range(1000) %}{% for j in range(900) %}{% endfor %}{% endfor %}ok"
    assert render(loops, {}) == "ok"  # 900,000 iterations: under MAX_ITERATIONS
    assert len(render("{{ 'x' * n }}", {"n": MAX_OUTPUT})) == MAX_OUTPUT
    assert evaluate("[1, 2] * 3", {}) == [1, 2] * 3
    assert render("{% for k in d %}{{ k }}{{ loop.index }}{% if loop.last %}.{% endif %}{% endfor %}", {"d": "ab"}) == (
        "a1b2."
    )
    assert MAX_ITERATIONS >= 1_000_000


# -- transcripts ---------------------------------------------------------------------------------
def _chain(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _event(seq: int, prev: str | None, **extra: object) -> bytes:
    body = {"seq": seq, "prev_sha256": prev, "run_id": "r", "type": "step.finished" if seq else "run.started"}
    return json.dumps({**body, **extra}).encode()


def _sha(raw: bytes) -> str:
    import hashlib

    return hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1000, 100_000])
@pytest.mark.parametrize("bracket", [b"[", b'{"a":'])
def test_deeply_nested_json_lines_are_problems_not_exceptions(tmp_path: Path, depth: int, bracket: bytes) -> None:
    first = _event(0, None)
    closing = b"]" if bracket == b"[" else b"}"
    bomb = b'{"seq": 1, "x": ' + bracket * depth + b"1" + closing * depth + b"}"
    path = tmp_path / "t.jsonl"
    path.write_bytes(_chain([first, bomb, _event(2, _sha(bomb))]))
    transcript = read_transcript(path)
    assert [e["seq"] for e in transcript.events] == [0, 2]
    assert transcript.problems[0].line == 2
    assert "nested deeper than" in transcript.problems[0].message
    assert transcript.chain_ok  # the chain still checks the line it could not parse


def test_a_line_over_the_limit_is_hashed_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(reader, "_CHUNK", 64)
    first = _event(0, None)
    long_line = _event(1, _sha(first), result="A" * 5000)
    path = tmp_path / "t.jsonl"
    path.write_bytes(_chain([first, long_line, _event(2, _sha(long_line))]))
    transcript = read_transcript(path)
    assert [e["seq"] for e in transcript.events] == [0, 2]
    assert transcript.problems[0].line == 2 and "longer than 1,000 (the limit)" in transcript.problems[0].message
    assert transcript.chain_ok and transcript.line_count == 3


def test_a_half_written_line_over_the_limit_is_the_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "t.jsonl"
    path.write_bytes(_chain([_event(0, None)]) + b'{"a": "' + b"B" * 5000)
    transcript = read_transcript(path)
    assert transcript.cut_off and transcript.tail is not None and "half-written" in transcript.tail.message
    assert "5007 bytes" in transcript.tail.message


def test_nothing_past_the_file_limit_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "MAX_TRANSCRIPT_BYTES", 2000)
    lines = [_event(0, None)]
    for seq in range(1, 100):
        lines.append(_event(seq, _sha(lines[-1])))
    path = tmp_path / "t.jsonl"
    path.write_bytes(_chain(lines))
    transcript = read_transcript(path)
    assert 0 < len(transcript.events) < 100
    assert transcript.tail is not None and "past 2,000 bytes (the limit)" in transcript.tail.message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"9" * 5000, "integer of 5000 characters, over 4300 digits (the limit)"),
        (b"1e400", "number 1e400 is not finite"),
        (b"-1e999", "number -1e999 is not finite"),
        (b"NaN", "NaN is not a number a transcript holds"),
        (b"-Infinity", "-Infinity is not a number a transcript holds"),
    ],
)
def test_numbers_a_writer_never_writes_are_problems(tmp_path: Path, value: bytes, message: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(_chain([_event(0, None), b'{"seq": 1, "n": ' + value + b"}"]))
    transcript = read_transcript(path)
    assert [(p.line, p.message) for p in transcript.problems] == [(2, message)]


def test_a_timeline_of_absurd_but_valid_numbers_renders(tmp_path: Path) -> None:
    from engine.timeline.build import build_timeline
    from engine.timeline.html import render_html
    from engine.timeline.markdown import render_markdown

    first = _event(0, None, time="0001-01-01T00:00:00+01:00", procedure={"id": "x"})
    finished = _event(1, _sha(first), step={"id": "a"}, duration_ms=10**18, time="9999-12-31T23:59:59Z")
    ended = json.dumps(
        {"seq": 2, "prev_sha256": _sha(finished), "run_id": "r", "type": "run.ended", "duration_ms": -(10**18)}
    ).encode()
    path = tmp_path / "t.jsonl"
    path.write_bytes(_chain([first, finished, ended]))
    built = build_timeline([read_transcript(path)], None)
    assert render_markdown(built, zone=None, base=tmp_path) and render_html(built, zone=None)


# -- files a `local` step reads ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "content", "message"),
    [
        ("yaml", _laughs(9, 9, True), "aliases are expanded"),
        ("yaml", "x: " + "[" * 600 + "]" * 600, "nested deeper than 64 levels"),
        ("yaml", "n: " + "9" * 5000, "integer over 64 bits"),
        ("json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_a_local_read_of_a_bomb_is_an_action_error(tmp_path: Path, fmt: str, content: str, message: str) -> None:
    from engine.errors import ActionFailed
    from engine.steps.local_step import _read

    path = tmp_path / f"data.{fmt}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ActionFailed, match=message):
        _read({"path": str(path), "format": fmt})


@pytest.mark.parametrize(
    "expression", ["1e308 * 10", "float('inf')", "float('nan')", "1e308 / 1e-308", "-1e308 - 1e308"]
)
def test_templates_never_make_inf_or_nan(expression: str) -> None:
    with pytest.raises(TemplateError, match="not a finite number"):
        evaluate(expression, {})


@pytest.mark.parametrize("value", ["99999999999999d", "8d", 10**12, "1e400", float("inf")])
def test_a_wait_longer_than_the_limit_is_refused_when_planned(value: object) -> None:
    from engine.steps.wait_step import plan

    with pytest.raises(ValueError, match=r"longer than 7 days|not a duration"):
        plan(value, None)  # type: ignore[arg-type]


def test_a_ttl_param_may_still_be_longer_than_a_wait() -> None:
    from engine.spec.params import parse_duration

    assert parse_duration("365d") == 365 * 86400
