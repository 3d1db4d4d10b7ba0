"""The JSON Schemas on disk: generated from the step-kind registry, valid 2020-12, and used for inventories."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from engine.errors import UsageError
from engine.resources import schema_path, schemas_dir
from engine.spec.schema import build_procedure_schema
from engine.steps import kinds
from engine.targets import load_inventory

REGENERATE = "python -m engine.spec.schema --write"


def _load(name: str) -> dict:
    return json.loads(schema_path(name).read_text(encoding="utf-8"))


def test_procedure_schema_on_disk_matches_the_step_kind_registry() -> None:
    on_disk = _load("procedure.schema.json")
    built = build_procedure_schema()
    assert on_disk == built, f"schemas/procedure.schema.json is out of date with engine/steps: run `{REGENERATE}`"


def test_every_registered_step_kind_is_in_the_schema() -> None:
    on_disk = _load("procedure.schema.json")
    step = on_disk["$defs"]["step"]
    for name in kinds():
        assert step["properties"][name] == {"$ref": f"#/$defs/action_{name}"}, f"run `{REGENERATE}`"
        assert {"required": [name]} in step["anyOf"], f"run `{REGENERATE}`"


SCHEMA_FILES = sorted(p.name for p in schemas_dir().glob("*.schema.json"))


def test_the_expected_schema_files_exist() -> None:
    assert {"procedure.schema.json", "inventory.schema.json"} <= set(SCHEMA_FILES)


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_is_valid_json_schema_2020_12(name: str) -> None:
    schema = _load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_check_schema_is_not_vacuous() -> None:
    with pytest.raises(jsonschema.SchemaError):
        jsonschema.Draft202012Validator.check_schema({"type": "objekt"})


INVENTORY = """\
environments:
  staging:
    description: Staging cluster
    targets:
      cache-1:
        redis:
          url: redis://ops@cache-1.internal:6379/0
          password_env: REDIS_PASSWORD
          timeout: 5s
        ssh:
          host: cache-1.internal
          port: 2222
          user: redis
          host_key_policy: strict
          service:
            restart: sudo systemctl restart redis
          paths:
            rdb: /var/lib/redis/dump.rdb
        http:
          base_url: https://api.staging.internal
  production:
    targets:
      cache-1:
        redis:
          url: rediss://cache-1.prod.internal:6380
          password_file: secrets/redis.pass
"""


def _where(text: str, needle: str) -> tuple[int, int]:
    """1-based line and column of `needle` in `text`."""
    index = text.index(needle)
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _errors(path: Path) -> list:
    with pytest.raises(UsageError) as info:
        load_inventory(path)
    return info.value.errors


def test_example_inventory_validates(tmp_path: Path) -> None:
    path = _write(tmp_path, INVENTORY)
    loaded = load_inventory(path)
    assert loaded["file"] == str(path)
    assert loaded["data"]["environments"]["staging"]["targets"]["cache-1"]["ssh"]["port"] == 2222


def test_inventory_unknown_field_fails_with_file_line_column(tmp_path: Path) -> None:
    text = INVENTORY.replace("          timeout: 5s\n", "          timeout: 5s\n          pasword_file: x\n")
    path = _write(tmp_path, text)
    (error,) = _errors(path)
    assert (error.line, error.column) == _where(text, "pasword_file") == (10, 11)
    assert error.file == str(path)
    assert error.path == "environments.staging.targets.cache-1.redis"
    assert error.message == "unknown field 'pasword_file' (did you mean 'password_file'?)"
    assert str(error).startswith(f"{path}:10:11: environments.staging.targets.cache-1.redis: unknown field")


def test_inventory_unknown_target_field(tmp_path: Path) -> None:
    text = INVENTORY.replace("        http:\n", "        htp:\n          base_url: x\n        http:\n")
    (error,) = _errors(_write(tmp_path, text))
    assert (error.line, error.column) == _where(text, "htp:")
    assert error.message.startswith("unknown field 'htp'")


def test_inventory_refuses_a_password_in_the_url(tmp_path: Path) -> None:
    text = INVENTORY.replace("redis://ops@cache-1", "redis://ops:hunter2@cache-1")
    (error,) = _errors(_write(tmp_path, text))
    assert (error.line, error.column) == _where(text, "url: redis://ops:")
    assert error.path == "environments.staging.targets.cache-1.redis.url"
    assert "credential" in error.message and "password_env" in error.message
    assert "hunter2" not in str(error)  # the schema's pattern error would quote the URL


def test_inventory_bad_port_type(tmp_path: Path) -> None:
    text = INVENTORY.replace("port: 2222", "port: ssh")
    (error,) = _errors(_write(tmp_path, text))
    assert (error.line, error.column) == _where(text, "port: ssh")  # the key's position
    assert error.path == "environments.staging.targets.cache-1.ssh.port"
    assert error.message == "expected integer, got string 'ssh'"


def test_inventory_must_not_name_two_password_sources(tmp_path: Path) -> None:
    text = INVENTORY.replace(
        "          password_env: REDIS_PASSWORD\n", "          password_env: A\n          password_file: b\n"
    )
    (error,) = _errors(_write(tmp_path, text))
    assert error.path == "environments.staging.targets.cache-1.redis"
    assert (error.line, error.column) == _where(text, "redis:\n          url: redis://ops@")
