"""Start-up of a short run: once a procedure has been validated, running it again loads only what its
step kinds need (no jsonschema, no YAML parser, no SSH, no sandbox, no triage) and is not validated again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.sandbox.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]

RUN_AND_LIST_MODULES = """\
import atexit, json, sys
listing = sys.argv.pop(1)
atexit.register(lambda: open(listing, "w").write(json.dumps(sorted(sys.modules))))
from engine.cli.main import main
main()
"""


def _run(server: RedisServer, tmp_path: Path, name: str) -> list[str]:
    listing = tmp_path / f"{name}.json"
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    argv = [sys.executable, "-c", RUN_AND_LIST_MODULES, str(listing), "run", "redis/health-check"]
    argv += ["--redis", f"redis://127.0.0.1:{server.port}/0", "--transcripts-dir", str(tmp_path / "t")]
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "outcome: ok" in result.stdout
    return json.loads(listing.read_text())


@pytest.fixture
def runs(redis_server: Callable[..., RedisServer], tmp_path: Path) -> tuple[list[str], list[str]]:
    server = redis_server()
    return _run(server, tmp_path, "first"), _run(server, tmp_path, "second")


def test_a_validated_procedure_runs_without_the_validator_or_the_yaml_parser(runs) -> None:
    first, second = runs
    assert "jsonschema" in first and "engine.spec.validate" in first  # the first run validates
    assert "redis" in second and "engine.steps.redis_step" in second
    unwanted = ("jsonschema", "yaml", "paramiko", "requests", "engine.sandbox", "engine.triage", "engine.rehearsal")
    unwanted += ("engine.spec.validate", "engine.spec.schema", "engine.transcript.verify", "engine.adapters.ssh")
    assert [m for m in second if m in unwanted or m.startswith(tuple(f"{u}." for u in unwanted))] == []


def test_a_validated_procedure_loads_only_its_own_step_kinds(runs) -> None:
    _, second = runs
    kinds = sorted(m for m in second if m.startswith("engine.steps.") and m.endswith("_step"))
    assert kinds == ["engine.steps.redis_step"]
