"""One rehearsal: build the world, break it, rehearse (dry-run), fix it for real, check it is fixed.

The dry-run goes first on the same world, so the report can put what it predicted next to what the
real run then did. Both runs write ordinary transcripts, which `runbook timeline` renders like an incident.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine import template
from engine.rehearsal import checks, faults
from engine.rehearsal.compare import StepComparison, compare
from engine.rehearsal.scenario import Scenario
from engine.rehearsal.world import World, WorldSpec


@dataclass
class Rehearsal:
    procedure: str
    scenario: str
    resolved: bool
    predictions_matched: bool
    duration_s: float
    transcript: str | None
    dry_run_transcript: str | None
    exit_code: int | None = None
    dry_run_exit_code: int | None = None
    steps: int = 0
    approvals: int = 0
    comparisons: list[StepComparison] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "procedure": self.procedure,
            "scenario": self.scenario,
            "resolved": self.resolved,
            "predictions_matched": self.predictions_matched,
            "duration_s": round(self.duration_s, 2),
            "transcript": self.transcript,
            "dry_run_transcript": self.dry_run_transcript,
            "exit_code": self.exit_code,
            "dry_run_exit_code": self.dry_run_exit_code,
            "steps": self.steps,
            "approvals": self.approvals,
            "failed_checks": self.failed_checks,
            "error": self.error,
            "predictions": [vars(c) for c in self.comparisons],
        }


def _events(path: str | None) -> list[dict[str, Any]]:
    if not path or not Path(path).exists():
        return []
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _seed(world: World, spec: dict[str, Any]) -> None:
    from engine.sandbox import seed_bulk, seed_somabrain

    if spec.get("none"):
        return
    with world.client() as client:
        kwargs = {k: v for k, v in spec.items() if k in ("no_ttl_per_tenant", "cache_per_tenant")}
        if spec.get("tenants"):
            kwargs["tenants"] = tuple(spec["tenants"])
        seed_somabrain(client, **kwargs)
        if spec.get("bulk"):
            seed_bulk(client, int(spec["bulk"]), tenants=20)


def _params(scenario: Scenario, world: World) -> dict[str, str]:
    values = {"world": world.template_values()}
    return {
        k: str(template.render(v, values)) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in scenario.params.items()
    }


def rehearse(
    scenario: Scenario,
    *,
    transcripts_dir: Path,
    guided: bool = False,
    incident: str | None = None,
    on_step: Any = lambda record: None,
) -> Rehearsal:
    from engine.session import RunRequest, execute

    started = time.monotonic()
    spec = WorldSpec(**{k: v for k, v in scenario.world.items() if k in WorldSpec.__dataclass_fields__})
    result = Rehearsal(scenario.procedure, scenario.name, False, False, 0.0, None, None)
    world = None
    try:
        world = World.start(spec)
        _seed(world, scenario.seed)
        for action in scenario.fault:
            faults.apply(world, action)
        params = _params(scenario, world)
        stem = f"{scenario.procedure.replace('/', '-')}-{scenario.name}"
        base = dict(
            procedure=scenario.procedure,
            variables=params,
            inventory=str(world.inventory_path),
            target="rehearsal",
            operator="rehearsal",
            incident=incident or f"rehearsal-{stem}",
        )
        dry = execute(
            RunRequest(
                **base, dry_run=True, assume_yes=True, transcript=_fresh(transcripts_dir / f"{stem}.dry-run.jsonl")
            )
        )
        result.dry_run_transcript, result.dry_run_exit_code = dry.transcript, dry.exit_code
        real = execute(
            RunRequest(**base, assume_yes=not guided, transcript=_fresh(transcripts_dir / f"{stem}.jsonl")),
            on_step=on_step,
        )
        result.transcript, result.exit_code = real.transcript, real.exit_code
        real_events = _events(real.transcript)
        result.steps = sum(1 for e in real_events if e["type"] == "step.finished")
        result.approvals = sum(1 for e in real_events if e["type"] == "approval.given")
        result.comparisons = compare(_events(dry.transcript), real_events)
        result.comparisons = [
            replace(c, expected=scenario.expected_differences.get(c.step)) if not c.matched else c
            for c in result.comparisons
        ]
        result.predictions_matched = all(c.matched or c.expected for c in result.comparisons)
        run = {
            "exit_code": real.exit_code,
            "outcome": real.outcome,
            "results": {s.id: s.result for s in real.steps},
            "findings": [e["message"] for s in real.steps for e in s.expectations if e["held"] is False],
            "output": "\n".join(str(s.summary or "") + "\n" + str(s.message or "") for s in real.steps),
            "transcript": real.transcript,
            "dry_run_transcript": dry.transcript,
        }
        names = checks.namespace(world, run)
        for check in scenario.success:
            try:
                held = bool(template.evaluate(check.that, names))
            except template.TemplateError as exc:
                held = False
                result.failed_checks.append(f"{check.message} (check failed to evaluate: {exc})")
                continue
            if not held:
                result.failed_checks.append(check.message)
        if real.exit_code not in scenario.expect_exit:
            result.failed_checks.append(f"the procedure exited {real.exit_code} ({real.outcome}: {real.error})")
        elapsed = time.monotonic() - started
        if elapsed > scenario.time_limit:
            result.failed_checks.append(f"took {elapsed:.1f}s, over the time limit of {scenario.time_limit:g}s")
        result.resolved = not result.failed_checks
    except Exception as exc:  # a broken world is a failed rehearsal, reported, never a crash of --all
        result.error = f"{type(exc).__name__}: {exc}"
        result.resolved = False
    finally:
        if world is not None:
            world.stop()
        result.duration_s = time.monotonic() - started
    return result


def _fresh(path: Path) -> Path:
    """Rehearsal transcripts are named after the scenario; keep older ones by adding a number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(path.name.replace(".jsonl", f".{n}.jsonl"))
    return candidate
