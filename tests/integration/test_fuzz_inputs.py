"""Fuzz: random mutations of the shipped procedures, scenarios, an inventory and real transcripts, fed to
validate / run --dry-run / transcript verify / timeline / postmortem. Nothing may end in a traceback, an
exit code outside the documented set, or a hang (issue 16, "Done when").

Reproducible: every case comes from `random.Random(f"{SEED}:{kind}:{index}")`; a failure prints the seed,
the case and the mutations, and leaves the mutated file in the test's tmp_path. Change the seed with
RUNBOOK_FUZZ_SEED, the number of cases with RUNBOOK_FUZZ_SCALE (a multiplier). Cases are counted, not
timed; a generous per-case alarm only turns a hang into a failure instead of a stuck suite.
"""

from __future__ import annotations

import os
import random
import re
import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from engine.cli.main import main
from engine.errors import RunbookError

REPO = Path(__file__).resolve().parents[2]
PROCEDURES = REPO / "procedures" / "redis"
SEED = int(os.environ.get("RUNBOOK_FUZZ_SEED", "16005"))
SCALE = float(os.environ.get("RUNBOOK_FUZZ_SCALE", "1"))
CASE_ALARM_SECONDS = 120  # a safety net against hangs, far above any case's real duration
EXIT_CODES = {0, 1, 2, 3, 4}

# Procedures cheap to dry-run against a plain redis-server (no ssh/http, no waits), with their params.
RUNNABLE = {
    "health-check": [],
    "audit-ttl": [],
    "wm-inspect": ["--var", "tenant=acme"],
    "wm-clear": ["--var", "tenant=acme"],
    "tune-memory": [],
}


def _count(n: int) -> int:
    return max(1, round(n * SCALE))


# -- mutations -------------------------------------------------------------------------------------
def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def flip_bytes(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def duplicate_line(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return b"\n".join(lines)


def delete_line(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    if len(lines) > 1:
        del lines[rng.randrange(len(lines))]
    return b"\n".join(lines)


_YAML_VALUE = re.compile(rb"^(\s*(?:- )?[\w.-]+:\s)(.+)$")
_JSON_VALUE = re.compile(rb'(":\s*)("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null)')


def swap_values(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    spots = [(i, m) for i, line in enumerate(lines) for m in [_YAML_VALUE.match(line)] if m]
    if len(spots) >= 2:
        (i, a), (j, b) = rng.sample(spots, 2)
        lines[i], lines[j] = a.group(1) + b.group(2), b.group(1) + a.group(2)
        return b"\n".join(lines)
    values = list(_JSON_VALUE.finditer(data))
    if len(values) >= 2:
        a, b = sorted(rng.sample(values, 2), key=lambda m: m.start())
        return data[: a.start(2)] + b.group(2) + data[a.end(2) : b.start(2)] + a.group(2) + data[b.end(2) :]
    return data


def deep_nesting(rng: random.Random, data: bytes) -> bytes:
    depth = rng.choice([65, 600, 5000, 100_000])
    nest = rng.choice([b"[" * depth + b"]" * depth, b"{a: " * depth + b"1" + b"}" * depth])
    lines = _lines(data)
    i = rng.randrange(len(lines))
    spot = _YAML_VALUE.match(lines[i])
    if spot:
        lines[i] = spot.group(1) + nest
    else:
        json_value = _JSON_VALUE.search(lines[i])
        if json_value:
            arrays = b"[" * depth + b"]" * depth
            lines[i] = lines[i][: json_value.start(2)] + arrays + lines[i][json_value.end(2) :]
        else:
            lines.insert(i, b"x: " + nest)
    return b"\n".join(lines)


def huge_number(rng: random.Random, data: bytes) -> bytes:
    numbers = list(re.finditer(rb"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", data))
    big = rng.choice([b"9" * 5000, b"1e400", b"1.0e+400", b".inf", b"-.nan", b"18446744073709551616", b"-" + b"9" * 30])
    if not numbers:
        return data + b"\nn: " + big
    m = rng.choice(numbers)
    return data[: m.start()] + big + data[m.end() :]


def alias_bomb(rng: random.Random, data: bytes) -> bytes:
    levels, width = rng.choice([(9, 9), (6, 12), (20, 2)])
    bomb = [b"x-l0: &l0 [lol, lol]"]
    for i in range(1, levels + 1):
        bomb.append(f"x-l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]".encode())
    lines = _lines(data)
    where = rng.choice([0, len(lines)])
    return b"\n".join(lines[:where] + bomb + lines[where:])


def control_characters(rng: random.Random, data: bytes) -> bytes:
    junk = rng.choice(
        [b"\x00", b"\x1b[5m", b"\x07", b"\x7f", b"\r", b"\t", "\u202e".encode(), "\u2028".encode(), b"\x0c"]
    )
    at = rng.randrange(len(data) + 1)
    return data[:at] + junk + data[at:]


def invalid_utf8(rng: random.Random, data: bytes) -> bytes:
    junk = rng.choice([b"\xff", b"\xfe\xff", b"\xc3", b"\xc0\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
    at = rng.randrange(len(data) + 1)
    return data[:at] + junk + data[at:]


MUTATIONS: list[Callable[[random.Random, bytes], bytes]] = [
    flip_bytes,
    truncate,
    duplicate_line,
    delete_line,
    swap_values,
    deep_nesting,
    huge_number,
    alias_bomb,
    control_characters,
    invalid_utf8,
]


def mutate(rng: random.Random, data: bytes) -> tuple[bytes, list[str]]:
    names = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        mutation = rng.choice(MUTATIONS)
        data = mutation(rng, data)
        names.append(mutation.__name__)
    return data, names


# -- running a case -------------------------------------------------------------------------------
@dataclass
class Case:
    kind: str
    index: int
    source: str
    mutations: list[str]
    file: Path

    def __str__(self) -> str:
        return (
            f"seed={SEED} case={self.kind}:{self.index} source={self.source} mutations={self.mutations} "
            f"file={self.file} (rerun: RUNBOOK_FUZZ_SEED={SEED})"
        )


class _Hang(Exception):
    pass


@contextmanager
def _alarm(case: Case) -> Iterator[None]:
    def on_alarm(signum: int, frame: Any) -> None:
        raise _Hang(f"no answer after {CASE_ALARM_SECONDS}s: {case}")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_ALARM_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def invoke(case: Case, args: list[str], allowed: set[int]) -> Any:
    """Run the CLI in-process; fail with the case's seed on a traceback, an undocumented exit code or a hang."""
    with _alarm(case):
        result = CliRunner().invoke(main, args, catch_exceptions=True)
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    if crashed or "Traceback" in result.output or result.exit_code not in allowed:
        detail = "".join(traceback.format_exception(result.exception)) if crashed else ""
        pytest.fail(
            f"runbook {' '.join(args)} -> exit {result.exit_code} (allowed {sorted(allowed)})\n{case}\n"
            f"{result.output[-3000:]}\n{detail[-5000:]}"
        )
    return result


def _case(kind: str, index: int, source: Path, tmp: Path, suffix: str) -> tuple[Case, bytes]:
    rng = random.Random(f"{SEED}:{kind}:{index}")
    data, names = mutate(rng, source.read_bytes())
    path = tmp / f"{kind}-{index}{suffix}"
    path.write_bytes(data)
    return Case(
        kind, index, str(source.relative_to(REPO) if source.is_relative_to(REPO) else source.name), names, path
    ), data


# -- the fuzz tests ---------------------------------------------------------------------------------
def test_fuzz_procedures_and_scenarios(tmp_path: Path, redis_server: Callable[..., Any]) -> None:
    server = redis_server()
    _seed(server)
    url = f"redis://{server.host}:{server.port}/0"
    procedures = sorted(PROCEDURES.glob("*.yaml"))
    scenarios = sorted((PROCEDURES / "scenarios").glob("*.yaml"))
    cases_dir = tmp_path / "cases"
    cases_dir.mkdir()
    (cases_dir / "scenarios").mkdir()
    picker = random.Random(SEED)
    outcomes: dict[int, int] = {}
    for index in range(_count(120)):
        runnable = index % 3 == 0  # a third of the cases are also dry-run against the test's server
        source = PROCEDURES / f"{picker.choice(sorted(RUNNABLE))}.yaml" if runnable else picker.choice(procedures)
        case, _ = _case("procedure", index, source, cases_dir, ".yaml")
        result = invoke(case, ["validate", str(case.file)], {0, 2})
        outcomes[result.exit_code] = outcomes.get(result.exit_code, 0) + 1
        if runnable:
            args = ["run", str(case.file), "--redis", url, "--dry-run", "--json", *RUNNABLE[source.stem]]
            ran = invoke(case, [*args, "--transcripts-dir", str(tmp_path / "transcripts")], EXIT_CODES)
            outcomes[100 + ran.exit_code] = outcomes.get(100 + ran.exit_code, 0) + 1
    for index in range(_count(30)):
        case, _ = _case("scenario", index, picker.choice(scenarios), cases_dir / "scenarios", ".yaml")
        invoke(case, ["validate", str(case.file)], {0, 2})
    assert outcomes.get(2, 0) > 0 and outcomes.get(0, 0) > 0, f"valid and invalid mutants both: {outcomes}"
    assert outcomes.get(100, 0) > 0, f"some mutants still run: {outcomes}"


def test_fuzz_inventories(tmp_path: Path, redis_server: Callable[..., Any]) -> None:
    from engine.targets import load_inventory, target_from_inventory

    server = redis_server()
    _seed(server)
    sources = [tmp_path / "inventory.yaml", tmp_path / "docs-inventory.yaml"]
    sources[0].write_text(
        "environments:\n  test:\n    description: fuzz\n    targets:\n      cache:\n        redis:\n"
        f"          url: redis://{server.host}:{server.port}/0\n          timeout: 5s\n",
        encoding="utf-8",
    )
    sources[1].write_text(_docs_inventory(), encoding="utf-8")
    picker = random.Random(SEED + 1)
    ran = 0
    for index in range(_count(60)):
        case, _ = _case("inventory", index, picker.choice(sources), tmp_path, ".yaml")
        contacts_elsewhere = True
        with _alarm(case):
            try:
                inventory = load_inventory(case.file)
                target = target_from_inventory(inventory, "cache", environ={})
                contacts_elsewhere = (
                    target.ssh is not None
                    or target.http is not None
                    or target.redis is None
                    or target.redis.host != server.host
                )
            except RunbookError:
                contacts_elsewhere = False  # the CLI stops at the same error, before any contact
            except Exception as exc:  # the fuzz's finding
                pytest.fail(f"load_inventory raised {type(exc).__name__}: {exc}\n{case}\n{traceback.format_exc()}")
        if contacts_elsewhere:
            continue  # a mutated address outside the test's server: not ours to connect to
        args = ["run", "redis/health-check", "--inventory", str(case.file), "--target", "cache", "--dry-run"]
        invoke(case, [*args, "--transcripts-dir", str(tmp_path / "transcripts")], EXIT_CODES)
        ran += 1
    assert ran > 0


def test_fuzz_transcripts(tmp_path: Path, redis_server: Callable[..., Any]) -> None:
    server = redis_server()
    _seed(server)
    url = f"redis://{server.host}:{server.port}/0"
    made = tmp_path / "made"
    for name, extra in RUNNABLE.items():
        args = ["run", f"redis/{name}", "--redis", url, "--dry-run", "--incident", "INC-FUZZ", *extra]
        invoke(Case("setup", 0, name, [], made), [*args, "--transcripts-dir", str(made)], {0, 1})
    sources = sorted(made.rglob("*.jsonl"))
    assert len(sources) == len(RUNNABLE)
    picker = random.Random(SEED + 2)
    verdicts: dict[int, int] = {}
    for index in range(_count(150)):
        directory = tmp_path / f"incident-{index}" / "2026-11-29"
        directory.mkdir(parents=True)
        case, _ = _case("transcript", index, picker.choice(sources), directory, ".jsonl")
        verified = invoke(case, ["transcript", "verify", str(case.file)], {0, 1})
        verdicts[verified.exit_code] = verdicts.get(verified.exit_code, 0) + 1
        out_format = ("markdown", "html", "json")[index % 3]
        invoke(case, ["timeline", str(case.file), "--format", out_format], {0, 2})
        if index % 2 == 0:
            incident_dir = str(directory.parent)
            invoke(case, ["postmortem", "--incident", "INC-FUZZ", "--transcripts-dir", incident_dir], {0, 2})
    assert verdicts.get(1, 0) > 0, f"verify finds the damage: {verdicts}"


# -- helpers ----------------------------------------------------------------------------------------
def _seed(server: Any) -> None:
    from engine.sandbox.seed import seed_somabrain

    with server.client() as client:
        seed_somabrain(client)


def _docs_inventory() -> str:
    """The inventory example of docs/cli.md, the one inventory the project ships."""
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    block = text.split("# yaml-language-server: $schema=../schemas/inventory.schema.json\n", 1)[1].split("```", 1)[0]
    assert "environments" in yaml.safe_load(block)
    return block
