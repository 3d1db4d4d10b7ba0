"""Procedure files in, validated `Procedure` objects out; the catalog of shipped procedures."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from engine.spec.yamlsource import MAX_YAML_BYTES, Located, decode_utf8, load_yaml, read_bytes_bounded


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


def load_procedure(path: Path, *, known_procedures: Any = None) -> Procedure:
    located, errors, raw = check_file(path, known_procedures=known_procedures)
    if errors or located is None:
        raise UsageError(f"invalid procedure {display_path(path)}", errors)
    return build(located, hashlib.sha256(raw).hexdigest())


def build(located: Located, sha256: str) -> Procedure:
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
    steps = _build_steps(located, data["steps"], ("steps",))
    cleanup = _build_steps(located, data.get("finally") or [], ("finally",), cleanup=True)
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
    from engine import template

    return value if template.is_template(value) else parse(value)


def _build_steps(
    located: Located, raws: list[dict[str, Any]], path: tuple[Any, ...], *, cleanup: bool = False
) -> tuple[Step, ...]:
    from engine.spec.kinds import table
    from engine.spec.params import parse_count

    registry = table()
    steps = []
    for i, raw in enumerate(raws):
        kind = next(k for k in raw if k in registry)
        retry = raw.get("retry")
        sample = raw.get("sample")
        failure = raw.get("on_failure", "abort")
        action = raw[kind]
        if registry[kind].nested:  # a block: its steps, built as steps
            action = _build_steps(located, action, (*path, i, kind), cleanup=cleanup)
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
        """Id -> file, from a cheap parse of each file (the full check happens on load)."""
        if self._entries is None:
            import yaml

            loader = _fast_loader()
            found: dict[str, Entry] = {}
            for path in self.files():
                try:  # a file over the limits is left out here and reported by `validate` or the load
                    if path.stat().st_size > MAX_YAML_BYTES:
                        continue
                    data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
                except (OSError, yaml.YAMLError, ValueError, RecursionError):
                    continue
                if isinstance(data, dict) and isinstance(data.get("id"), str):
                    title, section = data.get("title"), data.get("section")  # never str() an alias bomb
                    found.setdefault(
                        data["id"],
                        Entry(
                            data["id"],
                            path,
                            title if isinstance(title, str) else "",
                            section if isinstance(section, str) else "",
                        ),
                    )
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
