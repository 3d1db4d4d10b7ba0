"""Which scenarios to rehearse, against which procedure file: all checked before any world is built.

A procedure is an id (the catalog, or a `--procedures` directory that overrides it) or a path to a
file. Its scenarios come from `--scenarios DIR` when given, else from the first of: the file's own
`scenarios/` directory, the `--procedures` directories, the shipped ones. Every chosen scenario's
procedure must load and validate here: an unknown id or a broken file is exit 2 in a second, not after
a world was started.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from engine.errors import UsageError
from engine.rehearsal.scenario import Scenario, load_file, scenario_files
from engine.resources import procedures_dir

Chosen = tuple[Scenario, str | None, tuple[Path, ...]]  # scenario, procedure file to run (None: the id), extra roots


def _overrides(roots: tuple[Path, ...]) -> dict[str, Path]:
    """Procedure id -> file, for the procedures in the given directories or files."""
    out: dict[str, Path] = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*.yaml") if "scenarios" not in p.parts)
        for path in files:
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError, UnicodeDecodeError):
                continue
            if isinstance(data, dict) and isinstance(data.get("id"), str):
                out.setdefault(data["id"], path)
    return out


def _scenarios_in(root: Path, *, explicit: bool) -> list[Scenario]:
    files = scenario_files(root)
    if explicit and not files:
        files = sorted(root.glob("*.yaml"))  # DIR is itself a scenarios directory
        if not files:
            raise UsageError(f"--scenarios {root}: no scenario file (DIR/**/scenarios/*.yaml or DIR/*.yaml)")
    return [s for path in files for s in load_file(path)]


def choose(
    procedure: str | None,
    name: str | None,
    scenarios_dir: Path | None,
    procedures_dirs: tuple[Path, ...] = (),
) -> list[Chosen]:
    from engine.spec.loader import Catalog, load_procedure

    extra = tuple(p.resolve() for p in procedures_dirs)
    overrides = _overrides(extra)
    wanted: str | None = None
    if procedure:
        as_path = Path(procedure)
        if as_path.suffix in (".yaml", ".yml") or as_path.is_file():
            if not as_path.is_file():
                raise UsageError(f"no procedure file {procedure}")
            data = yaml.safe_load(as_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("id"), str):
                raise UsageError(f"{procedure}: not a procedure (no 'id')")
            wanted = data["id"]
            overrides[wanted] = as_path.resolve()
            extra = (*extra, as_path.resolve().parent)
        else:
            wanted = procedure
    catalog = Catalog(extra)
    if wanted is not None and wanted not in overrides and not catalog.has(wanted):
        raise UsageError(f"no procedure '{wanted}' (known: {', '.join(sorted(catalog.entries()))})")

    if scenarios_dir is not None:
        roots = [(scenarios_dir, True)]
    else:
        roots = [(p, False) for p in extra if p.is_dir()] + [(procedures_dir(), False)]
        if procedure and wanted in overrides:
            roots.insert(0, (overrides[wanted].parent, False))
    found: list[Scenario] = []
    seen: set[str] = set()
    for root, explicit in roots:
        here = _scenarios_in(root, explicit=explicit)
        for procedure_id in sorted({s.procedure for s in here} - seen):
            found.extend(s for s in here if s.procedure == procedure_id)
            seen.add(procedure_id)
    if wanted is not None:
        found = [s for s in found if s.procedure == wanted and (name is None or s.name == name)]
        if not found:
            raise UsageError(f"no rehearsal scenario for {wanted}" + (f" named '{name}'" if name else ""))
    elif not found:
        raise UsageError("no rehearsal scenario found")

    out: list[Chosen] = []
    checked: set[str] = set()
    for scenario in found:
        ref = str(overrides[scenario.procedure]) if scenario.procedure in overrides else None
        if scenario.procedure not in checked:
            if ref is None and not catalog.has(scenario.procedure):
                raise UsageError(f"{scenario.file}: scenario {scenario.name}: no procedure '{scenario.procedure}'")
            load_procedure(Path(ref) if ref else catalog.path_of(scenario.procedure), known_procedures=catalog.has)
            checked.add(scenario.procedure)
        out.append((scenario, ref, extra))
    return out
