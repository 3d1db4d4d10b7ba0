"""Resource bombs through the real `runbook` CLI (a subprocess each): validate, run, inventory loading,
transcript verify / timeline / postmortem. Each ends with a located error and its exit code, never a
traceback or a hang (issue 16, item 5). The subprocess timeout is only a safety net."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli_support import runbook, transcript_path

REPO = Path(__file__).resolve().parents[2]
HEALTH = (REPO / "procedures" / "redis" / "health-check.yaml").read_text(encoding="utf-8")


def _laughs(levels: int = 9) -> str:
    lines = ['x-a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"x-a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


YAML_BOMBS = {
    "billion-laughs": lambda text: _laughs() + text,
    "nesting-600": lambda text: text + "x: " + "[" * 600 + "]" * 600 + "\n",
    "int-5000-digits": lambda text: text.replace("default: 1000\n", "default: " + "9" * 5000 + "\n", 1),
    "float-1e400": lambda text: text.replace("default: 90\n", "default: 1.0e+400\n", 1),
    "interval-1e400": lambda text: text.replace(
        "      command: [PING]\n", "      command: [PING]\n    retry:\n      until: result\n      interval: 1e400\n", 1
    ),
    "50MB": lambda text: text + "x-big: |\n" + ("  " + "a" * 78 + "\n") * (50 * 1024 * 1024 // 80),
}
EXPECTED = {
    "billion-laughs": "more than 100000 values once aliases are expanded",
    "nesting-600": "nested deeper than 64 levels",
    "int-5000-digits": "params.clients_normal.default: integer over 64 bits",
    "float-1e400": "params.memory_alert_pct.default: '1.0e+400' is not a finite number",
    "interval-1e400": "steps[0].retry.interval: '1e400' is not a duration",
    "50MB": "larger than 1024 KiB (the limit), not parsed",
}


def _no_traceback(result: Any) -> None:
    assert "Traceback" not in result.output, result.output[-3000:]


@pytest.mark.parametrize("bomb", sorted(YAML_BOMBS))
def test_procedure_bombs_are_refused_by_validate_and_run(
    bomb: str, tmp_path: Path, redis_server: Callable[..., Any]
) -> None:
    path = tmp_path / f"{bomb}.yaml"
    path.write_text(YAML_BOMBS[bomb](HEALTH), encoding="utf-8")
    result = runbook("validate", str(path), timeout=120)
    _no_traceback(result)
    assert result.code == 2
    assert f"{path.name}" in result.stderr and EXPECTED[bomb] in result.stderr
    if bomb != "50MB":
        assert f"{path.name}:" in result.stderr.split(EXPECTED[bomb])[0].splitlines()[-1]  # file:line
    server = redis_server()
    run = runbook(
        "run", str(path), "--redis", f"redis://{server.host}:{server.port}", "--dry-run", "--json",
        "--transcripts-dir", str(tmp_path / "t"), timeout=120,
    )  # fmt: skip
    _no_traceback(run)
    assert run.code == 2 and EXPECTED[bomb] in run.stderr
    assert json.loads(run.stdout)["outcome"] == "usage"
    assert not (tmp_path / "t").exists()  # refused before anything was contacted


@pytest.mark.parametrize("bomb", ["billion-laughs", "nesting-600", "50MB"])
def test_inventory_bombs_are_refused_before_any_contact(bomb: str, tmp_path: Path) -> None:
    inventory = (
        "environments:\n  test:\n    targets:\n      cache:\n        redis:\n          url: redis://127.0.0.1:1/0\n"
    )
    path = tmp_path / "inv.yaml"
    path.write_text(YAML_BOMBS[bomb](inventory), encoding="utf-8")
    result = runbook(
        "run", "redis/health-check", "--inventory", str(path), "--target", "cache", "--dry-run", timeout=120
    )
    _no_traceback(result)
    assert result.code == 2 and str(path) in result.stderr and EXPECTED[bomb] in result.stderr


def test_template_bombs_end_the_run_with_exit_2_naming_file_and_line(
    tmp_path: Path, redis_server: Callable[..., Any]
) -> None:
    server = redis_server()
    bombs = [
        "{{ 9 ** 99999 }}",
        "{{ 'A' * 100000000 }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    ]
    for n, bomb in enumerate(bombs):
        path = tmp_path / f"t{n}.yaml"
        path.write_text(
            "id: test/bomb\ntitle: t\nsection: t\ndescription: t\nrequires: [redis]\nsteps:\n"
            f"  - id: a\n    name: a\n    redis:\n      command: [ECHO, {json.dumps(bomb)}]\n",
            encoding="utf-8",
        )
        result = runbook(
            "run", str(path), "--redis", f"redis://{server.host}:{server.port}", "--dry-run",
            "--transcripts-dir", str(tmp_path / "t"), timeout=120,
        )  # fmt: skip
        _no_traceback(result)
        assert result.code == 2, result.output
        assert f"{path.name}:7: redis:" in result.output and "(the limit)" in result.output
        size = transcript_path(result).stat().st_size
        assert size < 100_000  # the 100 MB line never reached the transcript


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def test_transcript_bombs_in_verify_timeline_and_postmortem(tmp_path: Path) -> None:
    directory = tmp_path / "transcripts" / "2026-11-29"
    directory.mkdir(parents=True)
    first = _line(
        {
            "seq": 0, "prev_sha256": None, "run_id": "r1", "type": "run.started", "ts": "2026-11-29T01:00:00Z",
            "incident": "INC-9", "procedure": {"id": "redis/x", "title": "x"},
        }
    )  # fmt: skip
    nested = b'{"seq": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge_int = b'{"seq": 2, "n": ' + b"9" * 5000 + b"}"
    path = directory / "r1.jsonl"
    path.write_bytes(b"\n".join([first, nested, huge_int]) + b"\n")
    verify = runbook("transcript", "verify", str(path))
    _no_traceback(verify)
    assert verify.code == 1
    assert "line 2: JSON nested deeper than 64 levels (the limit)" in verify.stdout
    assert "line 3: integer of 5000 characters, over 4300 digits (the limit)" in verify.stdout
    for args in (
        ["timeline", str(path)],
        ["timeline", str(path), "--format", "html"],
        ["timeline", "--incident", "INC-9"],
    ):
        result = runbook(*args, "--transcripts-dir", str(tmp_path / "transcripts"))
        _no_traceback(result)
        assert result.code == 0, result.output
    post = runbook("postmortem", "--incident", "INC-9", "--transcripts-dir", str(tmp_path / "transcripts"))
    _no_traceback(post)
    assert post.code == 0, post.output


def test_a_rendered_wait_of_ten_to_the_fourteen_days_is_a_usage_error(
    tmp_path: Path, redis_server: Callable[..., Any]
) -> None:
    server = redis_server()
    path = tmp_path / "w.yaml"
    path.write_text(
        "id: test/w\ntitle: t\nsection: t\ndescription: t\nparams:\n  d: {type: string, default: 1s}\nsteps:\n"
        '  - id: a\n    name: a\n    wait: "{{ d }}"\n',
        encoding="utf-8",
    )
    result = runbook(
        "run", str(path), "--var", "d=99999999999999d", "--redis", f"redis://{server.host}:{server.port}",
        "--dry-run", "--transcripts-dir", str(tmp_path / "t"), timeout=120,
    )  # fmt: skip
    _no_traceback(result)
    assert result.code == 2, result.output
    assert "w.yaml:8: wait: '99999999999999d' is longer than 7 days (the limit)" in result.output
