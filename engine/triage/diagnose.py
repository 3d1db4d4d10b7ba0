"""`runbook diagnose`: one round of reads, every procedure's symptoms, a ranked list of what to run next."""

from __future__ import annotations

import shlex
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import __version__
from engine.errors import ExitCode
from engine.outcome import Outcome, RunOutcome
from engine.spec.model import Effect
from engine.targets import Target
from engine.triage.symptoms import Match, evaluate, param_defaults

PROCEDURE_ID = "runbook/diagnose"


@dataclass
class Diagnosis:
    run_id: str
    transcript: str
    target: str
    reachable: bool
    matches: list[Match]
    commands: list[list[str]]
    duration_ms: float
    error: str = ""
    incident: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return ExitCode.FINDINGS if self.matches else ExitCode.OK

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "transcript": self.transcript,
            "target": self.target,
            "incident": self.incident,
            "reachable": self.reachable,
            "error": self.error or None,
            "exit_code": int(self.exit_code),
            "duration_ms": self.duration_ms,
            "ranked": [
                {**m.as_json(), "rank": i + 1, "command": shlex.join(cmd), "argv": cmd}
                for i, (m, cmd) in enumerate(zip(self.matches, self.commands, strict=True))
            ],
        }


@dataclass(frozen=True)
class SymptomSource:
    """What triage needs of a procedure: its symptoms, params (thresholds), title and requires.

    Read straight from the YAML (the symptoms subtree checked against its schema) instead of the full
    validation a run does: diagnose reads a dozen procedures and must answer in well under a second.
    `runbook validate` (and the test suite) check the whole file."""

    id: str
    title: str
    file: str
    params: tuple[Any, ...]
    requires: tuple[str, ...]
    symptoms: tuple[Any, ...]

    def param(self, name: str) -> Any:
        return next((p for p in self.params if p.name == name), None)


def _source(path: Path) -> SymptomSource:
    import jsonschema
    import yaml

    from engine.errors import UsageError
    from engine.spec.loader import _fast_loader, display_path
    from engine.spec.model import Param
    from engine.triage.symptoms import SCHEMA, build

    name = display_path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_fast_loader())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"{name}: cannot read: {exc}") from None
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data.get("symptoms")))
    params = data.get("params") or {}
    if errors or not isinstance(params, dict):
        raise UsageError(f"invalid symptoms in {name}: run `runbook validate {name}`")
    return SymptomSource(
        id=data["id"],
        title=str(data.get("title", "")),
        file=name,
        params=tuple(
            Param(name=n, type=spec.get("type", "string"), default=spec.get("default"), pattern=spec.get("pattern"))
            for n, spec in params.items()
            if isinstance(spec, dict)
        ),
        requires=tuple(data.get("requires") or ()),
        symptoms=build(data["symptoms"]),
    )


def symptom_procedures(catalog: Any) -> tuple[list[SymptomSource], dict[str, dict[str, Any]]]:
    """The procedures that declare symptoms, and the thresholds of those they borrow thresholds from."""
    entries = catalog.entries()
    procedures = []
    for entry in sorted(entries.values(), key=lambda e: e.id):
        try:
            if b"\nsymptoms:" not in entry.path.read_bytes():
                continue
        except OSError:
            continue
        procedures.append(_source(entry.path))
    thresholds: dict[str, dict[str, Any]] = {}
    for procedure in procedures:
        for symptom in procedure.symptoms:
            other = symptom.thresholds_from
            if other and other not in thresholds and other in entries:
                thresholds[other] = param_defaults(_thresholds_source(entries[other].path))
    return procedures, thresholds


def _thresholds_source(path: Path) -> Any:
    import yaml

    from engine.spec.loader import _fast_loader
    from engine.spec.model import Param

    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_fast_loader())
    params = (data or {}).get("params") or {}
    return SymptomSource(
        id=data["id"],
        title="",
        file=str(path),
        params=tuple(Param(name=n, type=s.get("type", "string"), default=s.get("default")) for n, s in params.items()),
        requires=(),
        symptoms=(),
    )


def _with_target_notes(match: Match, sources: dict[str, SymptomSource], target: Target) -> Match:
    """Say so when the suggested procedure needs an endpoint (ssh, http) this target does not have."""
    from dataclasses import replace

    requires = sources[match.procedure].requires
    missing = [facet for facet in requires if getattr(target, facet, None) is None]
    if not missing:
        return match
    note = f"needs a target with {' and '.join(missing)} (an inventory target): --redis alone is not enough"
    return replace(match, notes=(*match.notes, note))


def next_command(match: Match, target_args: Sequence[str], incident: str | None) -> list[str]:
    argv = ["runbook", "run", match.procedure, *target_args]
    for name, value in match.params.items():
        argv += ["--var", f"{name}={value}"]
    if incident:
        argv += ["--incident", incident]
    return argv


def diagnose(
    target: Target,
    *,
    target_args: Sequence[str],
    transcripts_dir: Path,
    catalog: Any = None,
    transcript: Path | None = None,
    incident: str | None = None,
    operator: str | None = None,
    argv: Sequence[str] = (),
) -> Diagnosis:
    """Read once, evaluate every symptom, record it all in a transcript (mode dry-run: nothing is sent
    but reads). UsageError before the transcript exists when the target has no Redis."""
    from engine.errors import UsageError
    from engine.run.operator import Operator
    from engine.spec.loader import Catalog
    from engine.transcript.redact import Redactor
    from engine.transcript.writer import TranscriptWriter, default_transcript_path, new_run_id
    from engine.triage.observe import observe

    if target.redis is None:
        raise UsageError(f"diagnose: the target '{target.name}' has no redis endpoint")
    endpoint = target.redis  # (set, for the closure below as well)
    catalog = catalog or Catalog()
    procedures, thresholds = symptom_procedures(catalog)
    redactor = Redactor()
    if target.redis.password:
        redactor.add(target.redis.password_source or "redis-password", target.redis.password)
    run_id = new_run_id()
    path = Path(transcript or default_transcript_path(run_id, transcripts_dir))
    try:
        writer = TranscriptWriter.create(path, run_id, redactor)
    except FileExistsError:
        raise UsageError(f"--transcript {path}: a transcript is never overwritten; choose a new path") from None
    except OSError as exc:
        raise UsageError(f"--transcript {path}: cannot create it: {exc.strerror}") from None
    operator_name = operator or Operator.from_environment(name=None, assume_yes=False).name
    started = time.monotonic()
    with writer:
        writer.emit(
            "run.started",
            procedure={"id": PROCEDURE_ID, "title": "Diagnose: match every procedure's symptoms", "section": None},
            engine_version=__version__,
            operator=operator_name,
            host=socket.gethostname(),
            mode="dry-run",
            incident=incident,
            params={},
            target=target.describe(),
            argv=list(argv),
            transcript_path=str(path),
            interactive=False,
            assume_yes=False,
        )

        index = iter(range(1000))

        def ref(step: str, name: str) -> dict[str, Any]:
            return {
                "id": step,
                "name": name,
                "kind": "redis",
                "source": "engine/triage/observe.py",
                "index": next(index),
                "iteration": None,
                "call_depth": 0,
                "procedure": PROCEDURE_ID,
            }

        def record(step: str, command: str, ms: float, result: Any, error: str | None) -> None:
            step_ref = ref(step, f"Read {command}")
            writer.emit(
                "step.started", step=step_ref, effect=str(Effect.READ), where=endpoint.url, command=command, attempt=1
            )
            writer.emit(
                "step.finished",
                step=step_ref,
                outcome=Outcome.ERROR if error else Outcome.OK,
                effect=str(Effect.READ),
                duration_ms=ms,
                result=result,
                message=error,
            )

        try:
            findings = observe(target.redis, record)
        except KeyboardInterrupt:
            writer.end(
                outcome=RunOutcome.INTERRUPTED,
                exit_code=130,
                duration_ms=round((time.monotonic() - started) * 1000, 3),
                error="interrupted during the reads",
            )
            raise
        sources = {p.id: p for p in procedures}
        matches = [_with_target_notes(m, sources, target) for m in evaluate(procedures, findings, thresholds)]
        commands = [next_command(m, target_args, incident) for m in matches]
        duration = round((time.monotonic() - started) * 1000, 3)
        diagnosis = Diagnosis(
            run_id=run_id,
            transcript=str(path),
            target=target.full_name,
            reachable=findings["reachable"],
            matches=matches,
            commands=commands,
            duration_ms=duration,
            error=findings["error"],
            incident=incident,
        )
        writer.emit(
            "step.finished",
            step={**ref("symptoms", "Evaluate every procedure's symptoms"), "kind": "compute"},
            outcome=Outcome.OK,
            effect=str(Effect.READ),
            duration_ms=duration,
            result={"procedures": len(procedures), "ranked": diagnosis.as_json()["ranked"]},
            summary=f"{len(matches)} procedure(s) match"
            + (f"; first {matches[0].procedure}" if matches else ": nothing found"),
        )
        writer.end(
            outcome=RunOutcome.FINDINGS if matches else RunOutcome.OK,
            exit_code=int(diagnosis.exit_code),
            duration_ms=duration,
            error=None,
            summary={"ranked": diagnosis.as_json()["ranked"], "reachable": findings["reachable"]},
        )
    return diagnosis


def render_text(diagnosis: Diagnosis) -> str:
    lines = [
        f"diagnose {diagnosis.target}: "
        + ("reachable" if diagnosis.reachable else f"NOT reachable ({diagnosis.error})")
    ]
    if not diagnosis.matches:
        lines.append("no procedure's symptoms match: nothing found")
    for rank, (match, command) in enumerate(zip(diagnosis.matches, diagnosis.commands, strict=True), start=1):
        lines.append(f"{rank}. {match.procedure} [{match.severity}, score {match.score}]: {match.title}")
        for ev in match.evidence:
            lines.append(f"   - {ev.summary}" + (f": {ev.evidence}" if ev.evidence else ""))
        for note in match.notes:
            lines.append(f"   note: {note}")
        lines.append(f"   next: {shlex.join(command)}")
    lines.append(f"transcript: {diagnosis.transcript}")
    return "\n".join(lines)
