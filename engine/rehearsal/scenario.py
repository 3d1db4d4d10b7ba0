"""Scenario files: next to the procedures, one per procedure, validated by schemas/scenario.schema.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import UsageError
from engine.resources import procedures_dir
from engine.spec.params import parse_duration


@dataclass(frozen=True)
class Check:
    that: str
    message: str


@dataclass(frozen=True)
class Scenario:
    procedure: str
    name: str
    description: str
    file: str
    world: dict[str, Any] = field(default_factory=dict)
    seed: dict[str, Any] = field(default_factory=dict)
    fault: tuple[dict[str, Any], ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    expected_differences: dict[str, str] = field(default_factory=dict)
    success: tuple[Check, ...] = ()
    incident: tuple[Check, ...] = ()  # hold after the fault, before the procedure: the incident is there
    always: tuple[Check, ...] = ()  # must hold after the real run whatever `expect` says (nothing else broken)
    expect: str = "resolved"  # or "not-resolved": the fix cannot take, and the procedure must say so
    sabotage: bool = True  # also rehearse the fix not taking: its verifications must fail
    expect_exit: tuple[int, ...] = (0,)
    time_limit: float = 120.0


def scenario_files(root: Path | None = None) -> list[Path]:
    base = root or procedures_dir()
    return sorted(base.rglob("scenarios/*.yaml"))


def load_file(path: Path) -> list[Scenario]:
    from engine.spec.loader import display_path
    from engine.spec.schema import validate_against
    from engine.spec.yamlsource import read_yaml_file

    located = read_yaml_file(path, display_path(path))
    errors = validate_against("scenario.schema.json", located)
    if errors:
        raise UsageError(f"invalid scenario file {located.file}", errors)
    data = located.data
    out = []
    for index, raw in enumerate(data["scenarios"]):
        problems = _world_problems(raw.get("world") or {})
        if problems:
            at = ("scenarios", index, "world")
            raise UsageError(f"invalid scenario file {located.file}", [located.error(at, p) for p in problems])
        out.append(
            Scenario(
                procedure=data["procedure"],
                name=raw["name"],
                description=raw["description"],
                file=located.file,
                world=raw.get("world") or {},
                seed=raw.get("seed") or {},
                fault=tuple(raw.get("fault") or ()),
                params=raw.get("params") or {},
                expected_differences=raw.get("expected_differences") or {},
                success=tuple(Check(c["that"], c["message"]) for c in raw["success"]),
                incident=tuple(Check(c["that"], c["message"]) for c in raw.get("incident") or ()),
                always=tuple(Check(c["that"], c["message"]) for c in raw.get("always") or ()),
                expect=raw.get("expect", "resolved"),
                sabotage=bool(raw.get("sabotage", True)),
                expect_exit=tuple(raw.get("expect_exit") or (0,)),
                time_limit=parse_duration(raw.get("time_limit", "120s")),
            )
        )
    return out


def _world_problems(world: dict[str, Any]) -> list[str]:
    """A world the schema allows field by field but that cannot be built (sentinels on a cluster, ...)."""
    from engine.rehearsal.world import WorldSpec

    known = {k: v for k, v in world.items() if k in WorldSpec.__dataclass_fields__}
    return WorldSpec(**known).problems()


def load_all(root: Path | None = None) -> list[Scenario]:
    return [s for path in scenario_files(root) for s in load_file(path)]


def find(procedure: str, name: str | None = None, root: Path | None = None) -> list[Scenario]:
    found = [s for s in load_all(root) if s.procedure == procedure and (name is None or s.name == name)]
    if not found:
        raise UsageError(f"no rehearsal scenario for {procedure}" + (f" named '{name}'" if name else ""))
    return found
