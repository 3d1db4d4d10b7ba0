"""The validation cache: a file that passed is not checked again while its bytes, the engine and the
schema are unchanged; any doubt (changed file, other engine, corrupt entry, unusable directory, a
called procedure gone, a kind missing) means validating again, and only passes are ever recorded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import engine
from engine import user_cache
from engine.errors import UsageError
from engine.spec import loader
from engine.spec.loader import Catalog, load_procedure
from engine.spec.validated import ValidationCache, engine_fingerprint, fingerprint, json_exact

PROCEDURE = """\
id: test/cached
title: Cached
section: Tests
description: A procedure for the validation cache.
params:
  threshold:
    type: integer
    default: 3
steps:
  - id: ping
    name: Ping
    redis:
      command: [PING]
    expect:
      - that: result in (true, "PONG")
        message: "no PONG"
  - id: group
    name: A block
    block:
      - id: info
        name: Memory
        redis:
          info: memory
        register: mem
        show: "used {{ mem.used_memory_human }}"
finally:
  - id: note
    name: A note
    note: "done, threshold {{ threshold }}"
"""

CALLER = """\
id: test/caller
title: Caller
section: Tests
description: Calls another procedure.
steps:
  - id: call
    name: Call it
    call:
      procedure: test/cached
"""


class Checks:
    """Counts the full validations `load_procedure` runs (the real ones, not a stand-in)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = loader.check_file

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(loader, "check_file", counted)


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Checks:
    return Checks(monkeypatch)


@pytest.fixture
def procedure(tmp_path: Path) -> Path:
    path = tmp_path / "procs" / "cached.yaml"
    path.parent.mkdir()
    path.write_text(PROCEDURE)
    return path


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def test_an_unchanged_file_is_validated_once_and_built_the_same(tmp_path: Path, procedure: Path, checks: Checks):
    cache = ValidationCache(tmp_path / "cache")
    first = load_procedure(procedure, cache=cache)
    assert checks.count == 1 and len(entries(cache.directory)) == 1
    second = load_procedure(procedure, cache=cache)
    assert checks.count == 1  # not checked again
    assert second == first  # same steps, blocks, cleanup, params and source lines as a full load
    assert [s.location.line for s in second.steps] == [10, 17]
    assert second.steps[1].action[0].location.line == 20 and second.finally_steps[0].location.line == 27


def test_a_changed_file_is_validated_again(tmp_path: Path, procedure: Path, checks: Checks):
    cache = ValidationCache(tmp_path / "cache")
    load_procedure(procedure, cache=cache)
    procedure.write_text(PROCEDURE.replace("title: Cached", "title: Cached again"))
    assert load_procedure(procedure, cache=cache).title == "Cached again"
    assert checks.count == 2
    procedure.write_text(PROCEDURE.replace("    redis:\n      command: [PING]\n", "    redis: {}\n"))
    with pytest.raises(UsageError):  # a broken edit is caught, whatever passed before
        load_procedure(procedure, cache=cache)
    assert checks.count == 3


def test_another_engine_version_validates_again(
    tmp_path: Path, procedure: Path, checks: Checks, monkeypatch: pytest.MonkeyPatch
):
    cache = ValidationCache(tmp_path / "cache")
    load_procedure(procedure, cache=cache)
    monkeypatch.setattr(engine, "__version__", "999.0.0")
    engine_fingerprint.cache_clear()
    try:
        assert engine_fingerprint().startswith("999.0.0+")
        load_procedure(procedure, cache=cache)
        assert checks.count == 2
        load_procedure(procedure, cache=cache)
        assert checks.count == 2  # this engine's own entry is used
    finally:
        monkeypatch.undo()
        engine_fingerprint.cache_clear()
    load_procedure(procedure, cache=cache)
    assert checks.count == 2 and len(entries(cache.directory)) == 2  # the first engine's entry still holds


def test_the_engine_fingerprint_follows_its_modules_not_only_its_version(tmp_path: Path):
    """In a checkout the version stays the same while the code changes: its modules' stat count too."""
    package = tmp_path / "engine"
    (package / "spec" / "__pycache__").mkdir(parents=True)
    (package / "cli.py").write_text("x = 1\n")
    (package / "spec" / "validate.py").write_text("y = 2\n")
    (package / "spec" / "__pycache__" / "validate.cpython-311.pyc").write_bytes(b"bytecode")
    before = fingerprint(package, "0.1.0")
    assert before.startswith("0.1.0+") and before == fingerprint(package, "0.1.0")
    assert fingerprint(package, "0.2.0") != before
    (package / "spec" / "__pycache__" / "other.pyc").write_bytes(b"bytecode")
    assert fingerprint(package, "0.1.0") == before  # bytecode is not the engine's code
    (package / "data").mkdir()
    (package / "data" / "redis-commands.json").write_text("{}")
    assert fingerprint(package, "0.1.0") != before  # data the checks read is
    before = fingerprint(package, "0.1.0")
    info = (package / "spec" / "validate.py").stat()
    os.utime(package / "spec" / "validate.py", ns=(info.st_atime_ns, info.st_mtime_ns + 1))
    assert fingerprint(package, "0.1.0") != before
    (package / "steps").mkdir()
    changed = fingerprint(package, "0.1.0")
    (package / "steps" / "new_step.py").write_text("")
    assert fingerprint(package, "0.1.0") != changed  # a new kind module
    assert fingerprint(tmp_path / "missing", "0.1.0") == ""


def test_a_corrupt_entry_is_ignored_and_replaced(tmp_path: Path, procedure: Path, checks: Checks):
    cache = ValidationCache(tmp_path / "cache")
    load_procedure(procedure, cache=cache)
    (entry,) = entries(cache.directory)
    for garbage in (b"{not json", b"", b"[1, 2]", b'{"key": "x"}', json.dumps({"a": "\ud800"}).encode()):
        entry.write_bytes(garbage)
        assert load_procedure(procedure, cache=cache).id == "test/cached"
    assert checks.count == 6
    assert json.loads(entry.read_text())["sha256"]  # written again, whole
    load_procedure(procedure, cache=cache)
    assert checks.count == 6


def test_a_tampered_entry_with_wrong_data_is_not_used(tmp_path: Path, procedure: Path, checks: Checks):
    cache = ValidationCache(tmp_path / "cache")
    load_procedure(procedure, cache=cache)
    (entry,) = entries(cache.directory)
    data = json.loads(entry.read_text())
    entry.write_text(json.dumps({**data, "sha256": "0" * 64}))
    load_procedure(procedure, cache=cache)
    assert checks.count == 2


def test_an_unwritable_cache_directory_only_costs_the_validation(tmp_path: Path, procedure: Path, checks: Checks):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory would be")
    cache = ValidationCache(blocker / "validated")
    for _ in range(2):
        assert load_procedure(procedure, cache=cache).id == "test/cached"
    assert checks.count == 2 and blocker.is_file()


def test_a_directory_others_can_write_to_is_not_trusted(tmp_path: Path, procedure: Path, checks: Checks):
    cache = ValidationCache(tmp_path / "cache")
    load_procedure(procedure, cache=cache)
    cache.directory.chmod(0o777)  # anyone could plant an entry saying a bad file passed
    load_procedure(procedure, cache=cache)
    assert checks.count == 2


def test_a_called_procedure_that_went_away_is_checked_again(tmp_path: Path, procedure: Path, checks: Checks):
    caller = procedure.parent / "caller.yaml"
    caller.write_text(CALLER)
    cache = ValidationCache(tmp_path / "cache")
    catalog = Catalog([procedure.parent])
    load_procedure(caller, known_procedures=catalog.has, cache=cache)
    load_procedure(caller, known_procedures=catalog.has, cache=cache)
    assert checks.count == 1
    procedure.unlink()
    with pytest.raises(UsageError, match="test/cached"):
        load_procedure(caller, known_procedures=Catalog([procedure.parent]).has, cache=cache)
    assert checks.count == 2
    load_procedure(caller, cache=cache)  # validated without a catalog: its own entry
    assert checks.count == 3


def test_an_entry_naming_a_kind_that_is_not_registered_is_a_miss(tmp_path: Path, procedure: Path):
    cache = ValidationCache(tmp_path / "cache")
    cache.store("procs/x.yaml", "a" * 64, ["redis"], None, known=False)
    assert cache.lookup("procs/x.yaml", "a" * 64, None) is not None
    cache.store("procs/x.yaml", "a" * 64, ["redis", "no_such_kind"], None, known=False)
    assert cache.lookup("procs/x.yaml", "a" * 64, None) is None


def test_only_data_json_gives_back_exactly_is_kept(tmp_path: Path, procedure: Path, checks: Checks):
    assert json_exact({"a": [1, 2.5, "x", None, True, {"b": False}]})
    assert not json_exact({1: "int key"}) and not json_exact({"x": float("inf")}) and not json_exact({"d": (1,)})
    cache = ValidationCache(tmp_path / "cache")
    cache.store("procs/x.yaml", "a" * 64, ["redis"], None, known=False, data={1: "x"}, lines={("steps", 0): 3})
    passed = cache.lookup("procs/x.yaml", "a" * 64, None)
    assert passed is not None and passed.data is None and passed.lines is None
    first = load_procedure(procedure, cache=cache)
    (entry,) = [e for e in entries(cache.directory) if json.loads(e.read_text())["name"] != "procs/x.yaml"]
    kept = json.loads(entry.read_text())
    assert kept["source"]["data"]["id"] == "test/cached"
    entry.write_text(json.dumps({k: v for k, v in kept.items() if k != "source"}))
    assert load_procedure(procedure, cache=cache) == first  # passed, without kept data: parsed, not checked
    assert checks.count == 1


def test_the_catalog_remembers_ids_by_file_stat(tmp_path: Path, procedure: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Catalog([procedure.parent]).path_of("test/cached") == procedure
    memo = list((tmp_path / "xdg" / "runbook" / "catalog").glob("*.json"))
    assert len(memo) == 1
    assert Catalog([procedure.parent]).entries()["test/cached"].title == "Cached"
    procedure.write_text(PROCEDURE.replace("id: test/cached", "id: test/renamed"))
    catalog = Catalog([procedure.parent])
    assert not catalog.has("test/cached") and catalog.has("test/renamed")
    memo[0].write_text("{corrupt")
    assert Catalog([procedure.parent]).has("test/renamed")


def test_the_cache_lives_under_xdg_cache_home_or_the_home_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache.root() == tmp_path / "xdg" / "runbook"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # not absolute: ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache.root() == tmp_path / "home" / ".cache" / "runbook"
    monkeypatch.setenv("HOME", "/")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache.root() is None  # no home: no cache, never a ./~ or /.cache


def test_without_a_cache_directory_every_load_validates(
    tmp_path: Path, procedure: Path, checks: Checks, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", "/")
    cache = ValidationCache()
    assert cache.directory is None
    for _ in range(2):
        load_procedure(procedure, cache=cache)
    assert checks.count == 2
    assert Catalog([procedure.parent]).has("test/cached")


SYMPTOMS = """\
symptoms:
  - id: too-many-clients
    summary: connected clients above the alert threshold
    thresholds_from: redis/key-metrics
    when: reachable and info.connected_clients > clients_alert
    severity: warning
    weight: 70
"""


def test_a_change_to_the_params_symptoms_take_thresholds_from_is_checked_again(
    tmp_path: Path, procedure: Path, checks: Checks
):
    """`thresholds_from: redis/key-metrics` makes its params names a symptom may use: they are part of the pass."""
    procedure.write_text(PROCEDURE + SYMPTOMS)
    cache = ValidationCache(tmp_path / "cache")
    load_procedure(procedure, cache=cache)
    (entry,) = entries(cache.directory)
    kept = json.loads(entry.read_text())
    assert "clients_alert" in kept["depends"]["redis/key-metrics"]
    load_procedure(procedure, cache=cache)
    assert checks.count == 1
    entry.write_text(json.dumps({**kept, "depends": {"redis/key-metrics": ["clients_normal"]}}))
    load_procedure(procedure, cache=cache)  # as if key-metrics had had other params when this passed
    assert checks.count == 2
    assert json.loads(entry.read_text())["depends"] == kept["depends"]
