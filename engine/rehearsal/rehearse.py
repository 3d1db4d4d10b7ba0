"""One rehearsal: build the world, break it, rehearse (dry-run), fix it for real, check it is fixed.

The dry-run goes first on the same world, so the report can put what it predicted next to what the
real run then did. Both runs write ordinary transcripts, which `runbook timeline` renders like an incident.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.outcome import RunOutcome
from engine.rehearsal import checks, faults, sabotage, snapshot
from engine.rehearsal.compare import StepComparison, compare
from engine.rehearsal.deadline import deadline
from engine.rehearsal.scenario import Scenario
from engine.rehearsal.world import World, WorldSpec
from engine.spec import template


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
    expect: str = "resolved"
    invalid: list[str] = field(default_factory=list)  # the incident was not there: checks that held before the run
    dry_run_changes: list[str] = field(default_factory=list)  # how the dry-run changed the world (must be none)
    ungated_changes: list[str] = field(default_factory=list)  # steps that changed the world without an approval
    timed_out: bool = False
    sabotage: str | None = None  # the fix made not to take: "noticed by ...", "NOT noticed ...", or None (n/a)
    unmet: list[str] = field(default_factory=list)  # success checks that did not hold after the real run
    run_problems: list[str] = field(default_factory=list)  # an exit code not in expect_exit, over the time limit

    @property
    def passed(self) -> bool:
        """What CI asks: the scenario's expectation met, predictions as declared, nothing changed behind the gate."""
        if self.error or self.invalid or self.dry_run_changes or self.ungated_changes or self.timed_out:
            return False
        if self.sabotage is not None and not self.sabotage.startswith("noticed"):
            return False
        if not self.predictions_matched or self.run_problems or self.exit_code is None:
            return False
        return not self.unmet if self.expect == "resolved" else bool(self.unmet)

    @property
    def why_not_passed(self) -> str | None:
        """The first reason this rehearsal did not pass (None when it passed)."""
        if self.passed:
            return None
        reasons = [
            self.error,
            *(f"invalid: {m}" for m in self.invalid),
            *(f"the dry-run changed the world: {d}" for d in self.dry_run_changes),
            *self.ungated_changes,
            "timed out" if self.timed_out else None,
            f"a fix that does not take: {self.sabotage}" if self.sabotage else None,
            *self.run_problems,
            *(self.unmet if self.expect == "resolved" else []),
            "resolved, where the scenario expects the fix not to take" if self.expect != "resolved" else None,
        ]
        differing = [c for c in self.comparisons if not c.matched and not c.expected]
        if differing:
            reasons.insert(
                0, f"prediction differs at {differing[0].step}: {differing[0].predicted} vs {differing[0].actual}"
            )
        return next((r for r in reasons if r), self.verdict)

    @property
    def verdict(self) -> str:
        if self.error:
            return "error"
        if self.invalid:
            return "invalid"
        if self.timed_out:
            return "timed out"
        if self.expect == "not-resolved":
            return "no, as expected" if self.passed else ("yes (expected no)" if self.resolved else "NO")
        return "yes" if self.passed or (self.resolved and not self.run_problems) else "NO"

    def as_json(self) -> dict[str, Any]:
        return {
            "procedure": self.procedure,
            "scenario": self.scenario,
            "expect": self.expect,
            "resolved": self.resolved,
            "passed": self.passed,
            "verdict": self.verdict,
            "predictions_matched": self.predictions_matched,
            "duration_s": round(self.duration_s, 2),
            "transcript": self.transcript,
            "dry_run_transcript": self.dry_run_transcript,
            "exit_code": self.exit_code,
            "dry_run_exit_code": self.dry_run_exit_code,
            "steps": self.steps,
            "approvals": self.approvals,
            "failed_checks": self.failed_checks,
            "invalid": self.invalid,
            "dry_run_changes": self.dry_run_changes,
            "ungated_changes": self.ungated_changes,
            "timed_out": self.timed_out,
            "sabotage": self.sabotage,
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
        except (ValueError, RecursionError):
            continue
    return out


def _seed(world: World, spec: dict[str, Any]) -> None:
    from engine.sandbox import seed_bulk, seed_somabrain

    if spec.get("none"):
        return
    with world.data_client() as client:  # a cluster's keys go to their slot's owner; a primary's to its replicas
        kwargs = {k: v for k, v in spec.items() if k in ("no_ttl_per_tenant", "cache_per_tenant")}
        if spec.get("tenants"):
            kwargs["tenants"] = tuple(spec["tenants"])
        seed_somabrain(client, **kwargs)
        if spec.get("bulk"):
            seed_bulk(client, int(spec["bulk"]), tenants=20)
    world.settle()  # every replica has it before the fault: the world stops changing by itself


def _params(scenario: Scenario, world: World) -> dict[str, str]:
    values = {"world": world.template_values()}
    return {
        k: str(template.render(v, values)) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in scenario.params.items()
    }


def incident_is_there(scenario: Scenario, world: World) -> list[str]:
    """Fault first: [] when the incident is there; else why the rehearsal would prove nothing.

    Every `incident` check must hold, and at least one `success` check of the world must fail: a
    procedure cannot be shown to resolve an incident that is not there."""
    names = checks.namespace(world, checks.no_run())
    problems = [
        f"incident check does not hold: {c.message}" for c in scenario.incident if not checks.holds(c.that, names)[0]
    ]
    about_world = [c for c in scenario.success if checks.about_the_world(c.that)]
    if not about_world and not scenario.incident:
        return ["no success check looks at the world and no `incident` check says the incident is there"]
    if about_world and all(checks.holds(c.that, names)[0] for c in about_world):
        problems.append(
            "every success check already holds before the procedure runs: " + "; ".join(c.message for c in about_world)
        )
    return problems


class GateWatch:
    """After every step of the real run: did the world change, and if so, was that step approved?"""

    def __init__(self, world: World, transcript: Path):
        self.world, self.transcript, self.offset = world, transcript, 0
        self.last = snapshot.fingerprint(world)
        self.violations: list[str] = []
        self.background = tuple(world.background_writes)
        self.approved_before = False  # an earlier step of the run was approved
        # nodes an approved step was about (its blast radius names the node: a restart on its host), whose
        # coming back as a new process goes on during the steps after it: (line prefix, data directory)
        self.restarted: dict[str, tuple[str | None, str]] = {}

    def _approved_since(self, step_id: str) -> bool:
        try:
            with self.transcript.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return False
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        approved = False
        for line in complete.splitlines():
            try:
                event = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if event.get("type") == "approval.given" and event.get("step", {}).get("id") == step_id:
                approved = True
        return approved

    def __call__(self, record: Any) -> None:
        now = snapshot.fingerprint(self.world)
        changes = snapshot.changed(self.last, now, self.background)
        self.last = now
        approved = self._approved_since(record.id)
        node = (getattr(record, "blast_radius", None) or {}).get("node") if approved else None
        if isinstance(node, str) and node not in self.restarted:
            try:
                server = self.world.node(node)
            except LookupError:
                server = None
            if server is not None:
                prefix = None if server is self.world.redis else node
                self.restarted[node] = (prefix, str(server.directory))
        if self.restarted:
            changes = [
                line
                for line in changes
                if not any(snapshot.restart_follow_on(line, p, d) for p, d in self.restarted.values())
            ]
        if self.approved_before and self.world.spec.topology != "standalone":
            # a failover approved earlier goes on by itself: roles, the primary followed, Sentinel's view
            changes = [line for line in changes if not snapshot.follow_on(line)]
        self.approved_before = self.approved_before or approved
        if changes and not approved:
            self.violations.append(
                f"step {record.id} ({record.effect}) changed the world without an approval: "
                + snapshot.summarize(changes)
            )


def rehearse(
    scenario: Scenario,
    *,
    transcripts_dir: Path,
    guided: bool = False,
    incident: str | None = None,
    on_step: Any = lambda record: None,
    procedure_ref: str | None = None,
    extra_procedures: tuple[Path, ...] = (),
    reference_ref: str | None = None,
) -> Rehearsal:
    """Rehearse one scenario. `procedure_ref` runs another file for the scenario's procedure (a mutant, a draft).

    `reference_ref` is the procedure whose verification steps the sabotaged run holds it to: a mutant's
    original, so that a mutant that dropped its verification cannot escape by having none ("" for the
    catalog's procedure of that id; None, the default: the procedure run)."""
    from engine.run.session import Interrupted, RunRequest, execute

    started = time.monotonic()
    spec = WorldSpec(**{k: v for k, v in scenario.world.items() if k in WorldSpec.__dataclass_fields__})
    result = Rehearsal(scenario.procedure, scenario.name, False, False, 0.0, None, None, expect=scenario.expect)
    world = None
    # The lease a run takes is a file here when the world's Redis is down: one directory per rehearsal, as
    # every world's target has the same name and rehearsals may run side by side (`rehearse --jobs`).
    leases = Path(tempfile.mkdtemp(prefix="runbook-rehearsal-leases-"))
    # The runs go on in world.local_dir, the operator's working directory: a procedure's relative path (an
    # export's default output ".") lands there, not in the caller's directory. Paths given here stay valid.
    cwd = os.getcwd()
    transcripts_dir = Path(os.path.abspath(transcripts_dir))
    extra_procedures = tuple(Path(os.path.abspath(p)) for p in extra_procedures)
    procedure_ref = _absolute_if_file(procedure_ref)
    reference_ref = _absolute_if_file(reference_ref)
    try:
        world = World.start(spec)
        _seed(world, scenario.seed)
        for action in scenario.fault:
            faults.apply(world, action)
        result.invalid = incident_is_there(scenario, world)
        if result.invalid:
            result.failed_checks = [f"invalid: the incident is not there: {m}" for m in result.invalid]
            return result
        params = _params(scenario, world)
        os.chdir(world.local)
        stem = f"{scenario.procedure.replace('/', '-')}-{scenario.name}"
        base: dict[str, Any] = dict(  # what the dry-run, the real run and the sabotaged run share
            procedure=procedure_ref or scenario.procedure,
            variables=params,
            inventory=str(world.inventory_path),
            target="rehearsal",
            operator="rehearsal",
            incident=incident or f"rehearsal-{stem}",
            extra_procedures=tuple(extra_procedures),
            transcripts_dir=leases,  # only the lease's fallback file: each transcript path is given
            # renewed at each approval only: a background renewal (every ttl/3) is a write in the target
            # Redis that the gate watch would pin on whichever unapproved step it fell in (a long wait)
            lease_ttl=max(30.0, 3 * scenario.time_limit),
        )
        real_path = _fresh(transcripts_dir / f"{stem}.jsonl")
        try:
            with deadline(scenario.time_limit - (time.monotonic() - started)) as limit:
                before = snapshot.capture(world)
                dry = execute(
                    RunRequest(
                        **base,
                        dry_run=True,
                        assume_yes=True,
                        transcript=_fresh(transcripts_dir / f"{stem}.dry-run.jsonl"),
                    )
                )
                result.dry_run_transcript, result.dry_run_exit_code = dry.transcript, dry.exit_code
                if limit.fired:  # the dry-run was interrupted: there is no real run to make
                    raise Interrupted(signal.SIGALRM)
                if dry.outcome == RunOutcome.INTERRUPTED:  # Ctrl-C / SIGTERM: the operator stops it all, not one run
                    raise KeyboardInterrupt
                after = snapshot.capture(world)
                result.dry_run_changes = snapshot.differences(before, after, tuple(world.background_writes))
                watch = GateWatch(world, real_path)

                def each_step(record: Any) -> None:
                    watch(record)
                    on_step(record)

                real = execute(RunRequest(**base, assume_yes=not guided, transcript=real_path), on_step=each_step)
                result.ungated_changes = watch.violations
                if real.outcome == RunOutcome.INTERRUPTED and not limit.fired:
                    raise KeyboardInterrupt
        except Interrupted:
            if not limit.fired:  # a signal before the run had begun: it stops everything, as one after does
                raise KeyboardInterrupt from None
        if limit.fired:
            result.timed_out = True
            result.transcript = str(real_path) if real_path.exists() else None
            result.failed_checks.append(
                f"timed out: interrupted at the time limit of {scenario.time_limit:g}s while the procedure ran"
            )
            return result
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
            "outcomes": {s.id: s.outcome for s in real.steps},
            "findings": [e["message"] for s in real.steps for e in s.expectations if e["held"] is False],
            "output": "\n".join(str(s.summary or "") + "\n" + str(s.message or "") for s in real.steps),
            "transcript": real.transcript,
            "dry_run_transcript": dry.transcript,
        }
        names = checks.namespace(world, run)
        for check in scenario.success:
            held, why = checks.holds(check.that, names)
            if not held:
                result.unmet.append(f"{check.message} ({why})" if why else check.message)
        for check in scenario.always:
            held, why = checks.holds(check.that, names)
            if not held:
                result.run_problems.append(f"{check.message} ({why})" if why else check.message)
        if real.exit_code not in scenario.expect_exit:
            result.run_problems.append(f"the procedure exited {real.exit_code} ({real.outcome}: {real.error})")
        elapsed = time.monotonic() - started
        if elapsed > scenario.time_limit:
            result.run_problems.append(f"took {elapsed:.1f}s, over the time limit of {scenario.time_limit:g}s")
        if scenario.expect == "resolved" and scenario.sabotage and not result.unmet and not result.run_problems:
            procedures = {s.procedure for s in real.steps}
            reference = procedure_ref if reference_ref is None else (reference_ref or None)
            result.sabotage = _sabotaged(scenario, spec, base, procedures, transcripts_dir, stem, reference)
        result.failed_checks = [
            *result.unmet,
            *result.run_problems,
            *(f"the dry-run changed the world: {d}" for d in result.dry_run_changes),
            *result.ungated_changes,
            *(
                [f"a fix that does not take: {result.sabotage}"]
                if result.sabotage and not result.sabotage.startswith("noticed")
                else []
            ),
        ]
        result.resolved = not result.unmet and not result.run_problems
    except Exception as exc:  # a broken world is a failed rehearsal, reported, never a crash of --all
        result.error = f"{type(exc).__name__}: {exc}"
        result.resolved = False
    finally:
        os.chdir(cwd)
        if world is not None:
            world.stop()
        shutil.rmtree(leases, ignore_errors=True)
        result.duration_s = time.monotonic() - started
    return result


def _sabotaged(
    scenario: Scenario,
    spec: WorldSpec,
    base: dict[str, Any],
    procedures: set[str],
    transcripts_dir: Path,
    stem: str,
    procedure_ref: str | None,
) -> str | None:
    """The same incident in a fresh world, every predictable change acknowledged and not applied: the
    procedure's verifications must fail. None when no verification step ran (nothing to prove)."""
    from engine.run.session import RunRequest, execute
    from engine.spec.loader import Catalog

    verifying = sabotage.verification_steps(procedures, Catalog(base["extra_procedures"]), procedure_ref)
    if not verifying:
        return None
    world = World.start(spec)
    cwd = os.getcwd()
    try:
        _seed(world, scenario.seed)
        for action in scenario.fault:
            faults.apply(world, action)
        # its own operator's directory: what the real run wrote in the first world's (a dump at the default
        # output ".") must not stand in for what this run was made not to write
        os.chdir(world.local)
        request = RunRequest(
            **{
                **base,
                "inventory": str(world.inventory_path),
                "variables": _params(scenario, world),
                "incident": base["incident"] + "-sabotaged",
            },
            assume_yes=True,
            transcript=_fresh(transcripts_dir / f"{stem}.sabotaged.jsonl"),
        )
        with sabotage.changes_do_not_take() as sabotaged:
            run = execute(request)
        if run.outcome == RunOutcome.INTERRUPTED:
            raise KeyboardInterrupt
    finally:
        os.chdir(cwd)
        world.stop()
    if not set(sabotaged) & set(verifying.values()):
        return None  # no change that a verification step checks was made not to take
    failed = sabotage.noticed(run.steps, verifying, sabotaged)
    changed = ", ".join(dict.fromkeys(sabotaged))
    if failed:
        return f"noticed by {', '.join(failed)} (changes not applied: {changed})"
    return f"NOT noticed: {changed} did not take, and no verification step failed (exit {run.exit_code})"


def _absolute_if_file(ref: str | None) -> str | None:
    """A procedure given as a relative file path, made absolute (the runs change directory); an id as it is."""
    return os.path.abspath(ref) if ref and Path(ref).is_file() else ref


def _fresh(path: Path) -> Path:
    """Rehearsal transcripts are named after the scenario; keep older ones by adding a number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(path.name.replace(".jsonl", f".{n}.jsonl"))
    return candidate
