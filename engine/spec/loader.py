"""Procedure files in, validated `Procedure` objects out; the catalog of shipped procedures."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine.errors import SourceError, UsageError
from engine.resources import procedures_dir
from engine.spec.model import (
    Effect,
    Expectation,
    FollowUp,
    Impact,
    Location,
    OnFailure,
    Param,
    Procedure,
    Retry,
    Sample,
    Step,
)
from engine.spec.params import parse_duration
from engine.spec.validated import Recorder, StepPath, ValidationCache

if TYPE_CHECKING:  # the YAML parser is loaded only for a file the cache does not know (spec/validated.py)
    from engine.spec.yamlsource import Located

CACHED_MAX_BYTES = 4 * 1024 * 1024
"""Larger than any file that can pass (yamlsource.MAX_YAML_BYTES): a bigger one is not even hashed for the cache."""


def display_path(path: Path) -> str:
    """Shipped procedures print as procedures/redis/x.yaml; others as given (relative to cwd when inside)."""
    resolved = path.resolve()
    root = procedures_dir().resolve()
    if resolved.is_relative_to(root):
        return str(Path("procedures") / resolved.relative_to(root))
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_file(path: Path, *, known_procedures: Any = None) -> tuple[Located | None, list[SourceError], bytes]:
    """Every problem in one file: YAML, schema, then semantics (only when the schema holds)."""
    from engine.spec.schema import validate_against
    from engine.spec.validate import semantic_errors
    from engine.spec.yamlsource import decode_utf8, load_yaml, read_bytes_bounded

    name = display_path(path)
    try:
        raw = read_bytes_bounded(path, name)
    except UsageError as exc:
        return None, exc.errors, b""
    try:
        located = load_yaml(decode_utf8(raw, name), name)
    except UsageError as exc:
        return None, exc.errors, raw
    if not isinstance(located.data, dict):
        return located, [SourceError(name, 1, 1, "", "a procedure is a YAML mapping (id, title, steps, ...)")], raw
    errors = validate_against("procedure.schema.json", located)
    if not errors:
        from engine.triage.symptoms import semantic_errors as symptom_errors

        errors = sorted(
            semantic_errors(located, known_procedures=known_procedures)
            + symptom_errors(located, known_procedures=known_procedures),
            key=lambda e: (e.line or 0, e.column or 0),
        )
    return located, errors, raw


def load_procedure(path: Path, *, known_procedures: Any = None, cache: ValidationCache | None = None) -> Procedure:
    """A validated procedure; a file that passed before, byte for byte, is not checked again (spec/validated.py)."""
    cache = cache if cache is not None else ValidationCache()
    name = display_path(path)
    procedure = _load_validated(path, name, known_procedures, cache)
    if procedure is not None:
        return procedure
    recorder = Recorder(known_procedures) if known_procedures is not None else None
    located, errors, raw = check_file(path, known_procedures=recorder)
    if errors or located is None:
        raise UsageError(f"invalid procedure {name}", errors)
    sha256 = hashlib.sha256(raw).hexdigest()
    source = _Recording(located)
    procedure = build(source, sha256)
    cache.store(
        name,
        sha256,
        kinds_used(procedure),
        recorder.answers if recorder is not None else None,
        known=recorder is not None,
        data=located.data,
        lines=source.lines,
        depends=_threshold_params(_thresholds_from(located.data)),
    )
    return procedure


def _load_validated(path: Path, name: str, known_procedures: Any, cache: ValidationCache) -> Procedure | None:
    """The procedure, built without the checks, when the cache says these bytes passed; else None."""
    try:  # never blocks on a FIFO nor reads a device: those are for check_file to refuse
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > CACHED_MAX_BYTES:
                return None
            raw = handle.read(CACHED_MAX_BYTES + 1)
    except OSError:
        return None
    sha256 = hashlib.sha256(raw).hexdigest()
    passed = cache.lookup(name, sha256, known_procedures)
    if passed is None or (passed.depends and _threshold_params(passed.depends) != passed.depends):
        return None  # a procedure its symptoms take thresholds from changed its params: check again
    source: _Source
    if passed.data is not None and passed.lines is not None:
        source = _Replay(passed.data, name, passed.lines)
    else:
        from engine.spec.yamlsource import decode_utf8, load_yaml

        try:
            source = load_yaml(decode_utf8(raw, name), name)
        except UsageError:
            return None
    return build(source, sha256, kind_names=passed.kinds)


def _threshold_params(procedure_ids: Iterable[str]) -> dict[str, list[str]]:
    """The params of each procedure named, as the symptom checks read them (`thresholds_from`)."""
    ids = sorted(set(procedure_ids))
    if not ids:
        return {}
    from engine.triage.symptoms import _param_names_of

    return {other: sorted(_param_names_of(other)) for other in ids}


def _thresholds_from(data: Any) -> set[str]:
    """The procedures a file's symptoms take thresholds from."""
    symptoms = data.get("symptoms") if isinstance(data, dict) else None
    return {str(s["thresholds_from"]) for s in symptoms or [] if isinstance(s, dict) and s.get("thresholds_from")}


class _Source(Protocol):
    """What `build` reads of a parsed file: a `Located`, or its data and step lines as the cache kept them."""

    @property
    def data(self) -> Any: ...

    @property
    def file(self) -> str: ...

    def position(self, path: StepPath) -> tuple[int | None, int | None]: ...


@dataclass
class _Recording:
    """A `Located` that notes the line of every position `build` asks for, for the cache to keep."""

    located: Located
    lines: dict[StepPath, int | None] = field(default_factory=dict)

    @property
    def data(self) -> Any:
        return self.located.data

    @property
    def file(self) -> str:
        return self.located.file

    def position(self, path: StepPath) -> tuple[int | None, int | None]:
        line, column = self.located.position(path)
        self.lines[tuple(path)] = line
        return line, column


@dataclass(frozen=True)
class _Replay:
    """The data and step lines the cache kept: `build` asks for the same positions, in the same order."""

    data: Any
    file: str
    lines: dict[StepPath, int | None]

    def position(self, path: StepPath) -> tuple[int | None, int | None]:
        return self.lines.get(tuple(path)), None


def kinds_used(procedure: Procedure) -> set[str]:
    """Every step kind the procedure's steps (blocks and `finally` included) name."""
    from engine.spec.kinds import lookup

    def walk(steps: tuple[Step, ...]) -> set[str]:
        found: set[str] = set()
        for step in steps:
            found.add(step.kind)
            if lookup(step.kind).nested:  # a block: its own steps' kinds too
                found |= walk(step.action)
        return found

    return walk(procedure.steps) | walk(procedure.finally_steps)


def build(located: _Source, sha256: str, *, kind_names: Container[str] | None = None) -> Procedure:
    """The model of a valid file. `kind_names`: the kinds it uses, when known (no need to load every kind)."""
    data = located.data
    params = tuple(
        Param(
            name=name,
            type=spec.get("type", "string"),
            description=spec.get("description", ""),
            default=spec.get("default"),
            required=bool(spec.get("required", False)),
            pattern=spec.get("pattern"),
            enum=tuple(spec["enum"]) if spec.get("enum") else None,
            secret=bool(spec.get("secret", False)),
            minimum=spec.get("minimum"),
            maximum=spec.get("maximum"),
        )
        for name, spec in (data.get("params") or {}).items()
    )
    if kind_names is None:
        from engine.spec.kinds import table

        kind_names = table()
    steps = _build_steps(located, data["steps"], ("steps",), kind_names)
    cleanup = _build_steps(located, data.get("finally") or [], ("finally",), kind_names, cleanup=True)
    return Procedure(
        id=data["id"],
        title=data["title"],
        section=data["section"],
        description=data.get("description", ""),
        file=located.file,
        sha256=sha256,
        params=params,
        requires=tuple(data.get("requires") or ()),
        steps=steps,
        tags=tuple(data.get("tags") or ()),
        finally_steps=cleanup,
        symptoms=_symptoms(data.get("symptoms")),
    )


def _literal(value: Any, parse: Any) -> Any:
    """A literal number or duration is parsed now (validate checked it); a template waits for the step."""
    from engine.spec import template

    return value if template.is_template(value) else parse(value)


def _build_steps(
    located: _Source,
    raws: list[dict[str, Any]],
    path: tuple[Any, ...],
    kind_names: Container[str],
    *,
    cleanup: bool = False,
) -> tuple[Step, ...]:
    from engine.spec.kinds import lookup
    from engine.spec.params import parse_count

    steps = []
    for i, raw in enumerate(raws):
        kind = next(k for k in raw if k in kind_names)
        retry = raw.get("retry")
        sample = raw.get("sample")
        failure = raw.get("on_failure", "abort")
        action = raw[kind]
        if lookup(kind).nested:  # a block: its steps, built as steps
            action = _build_steps(located, action, (*path, i, kind), kind_names, cleanup=cleanup)
        steps.append(
            Step(
                id=raw["id"],
                name=raw["name"],
                kind=kind,
                action=action,
                index=i,
                location=Location(located.file, located.position((*path, i))[0]),
                when=raw.get("when"),
                register=raw.get("register"),
                expect=tuple(
                    Expectation(that=e["that"], message=e["message"], severity=e.get("severity", "critical"))
                    for e in raw.get("expect") or []
                ),
                retry=Retry(
                    until=retry.get("until"),
                    attempts=_literal(retry.get("attempts", 10), parse_count),
                    interval=_literal(retry.get("interval", 1), parse_duration),
                    timeout=_literal(retry.get("timeout", 60), parse_duration),
                )
                if retry
                else None,
                on_failure=OnFailure("goto", failure["goto"]) if isinstance(failure, dict) else OnFailure(failure),
                foreach=raw.get("foreach"),
                effect=Effect.parse(raw["effect"]) if raw.get("effect") else None,
                confirm=raw.get("confirm"),
                verifies=raw.get("verifies"),
                secret=bool(raw.get("secret", False)),
                precondition=bool(raw.get("precondition", False)),
                show=raw.get("show"),
                sample=Sample(
                    every=_literal(sample.get("every", 1), parse_duration),
                    duration=_literal(sample["for"], parse_duration) if sample.get("for") is not None else None,
                    count=_literal(sample["count"], parse_count) if sample.get("count") is not None else None,
                )
                if sample
                else None,
                cleanup=cleanup,
                impact=tuple(
                    Impact(name=i["name"], value=i["value"], unit=i["unit"], when=i.get("when"))
                    for i in raw.get("impact") or []
                ),
                follow_up=tuple(
                    FollowUp(kind=f["kind"], text=f["text"], when=f.get("when")) for f in raw.get("follow_up") or []
                ),
            )
        )
    return tuple(steps)


def _symptoms(raw: Any) -> tuple[Any, ...]:
    if not raw:  # most procedures have none: triage is not loaded for them
        return ()
    from engine.triage.symptoms import build as build_symptoms

    return build_symptoms(raw)


@dataclass(frozen=True)
class Entry:
    id: str
    path: Path
    title: str
    section: str


def _fast_loader() -> type:
    """libyaml's safe loader when PyYAML was built with it (the wheels are): the catalog reads every file."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Catalog:
    """The procedures a run can name: the shipped ones plus any extra directories or files."""

    def __init__(self, roots: Iterable[Path] = ()):
        self.roots = [procedures_dir(), *roots]
        self._entries: dict[str, Entry] | None = None
        self._loaded: dict[str, Procedure] = {}

    def files(self) -> list[Path]:
        out: list[Path] = []
        for root in self.roots:
            if root.is_file():
                out.append(root)
            elif root.is_dir():
                out.extend(sorted(p for p in root.rglob("*.yaml") if p.is_file() and "scenarios" not in p.parts))
        return out

    def entries(self) -> dict[str, Entry]:
        """Id -> file, from a cheap parse of each file, remembered by its stat (the full check happens on load)."""
        if self._entries is None:
            from engine.spec.headers import read_headers

            found: dict[str, Entry] = {}
            for path, (procedure_id, title, section) in read_headers(self.files(), self.roots).items():
                found.setdefault(procedure_id, Entry(procedure_id, path, title, section))
            self._entries = found
        return self._entries

    def has(self, procedure_id: str) -> bool:
        return procedure_id in self.entries()

    def path_of(self, ref: str) -> Path:
        """A procedure id from the catalog, or a path to a YAML file."""
        entry = self.entries().get(ref)
        if entry is not None:
            return entry.path
        candidate = Path(ref)
        if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
            return candidate
        known = ", ".join(sorted(self.entries())) or "none"
        raise UsageError(f"no procedure '{ref}' (known: {known})")

    def load(self, ref: str) -> Procedure:
        """Load and validate once per catalog: a `call` inside a `foreach` does not re-read the file."""
        if ref not in self._loaded:
            self._loaded[ref] = load_procedure(self.path_of(ref), known_procedures=self.has)
        return self._loaded[ref]
