"""`runbook rehearse`: prove a procedure resolves the incident it is written for."""

from __future__ import annotations

import json
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from engine.cli.errors import fail
from engine.cli.options import transcripts_dir_option
from engine.errors import ExitCode, Interrupted, RunbookError, UsageError


@click.command()
@click.argument("procedure", required=False)
@click.option("--scenario", help="Only this scenario of the procedure.")
@click.option("--all", "run_all", is_flag=True, help="Every scenario of every procedure.")
@click.option("--guided", is_flag=True, help="Answer the prompts yourself, as in a real incident.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list, one object per rehearsal (or mutant).")
@transcripts_dir_option("Rehearsal transcripts go under <dir>/rehearsals/<UTC date>/.")
@click.option(
    "--scenarios",
    "scenarios_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Read scenarios from DIR/**/scenarios/*.yaml (or DIR/*.yaml) instead of the shipped ones.",
)
@click.option(
    "--procedures",
    "procedures_dirs",
    multiple=True,
    type=click.Path(path_type=Path, exists=True),
    help="Procedures from DIR (or a file) first, then the catalog; their scenarios from DIR/**/scenarios/.",
)
@click.option("--mutate", is_flag=True, help="Mutation testing: rehearse one planted bug at a time.")
@click.option("--sample", type=click.IntRange(min=1), help="With --mutate: at most N mutants per procedure.")
@click.option(
    "--min-score",
    type=click.FloatRange(0, 100),
    default=90.0,
    show_default=True,
    help="With --mutate: exit 1 below this percentage of mutants killed.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Rehearse up to N worlds at once, each in a process of its own (the report keeps its order).",
)
def rehearse(
    procedure: str | None,
    scenario: str | None,
    run_all: bool,
    guided: bool,
    as_json: bool,
    transcripts_dir: Path,
    scenarios_dir: Path | None,
    procedures_dirs: tuple[Path, ...],
    mutate: bool,
    sample: int | None,
    min_score: float,
    jobs: int,
) -> None:
    """Rehearse procedures against a sandbox with their incident injected; exit 0 only if every one passes.

    \b
    Each rehearsal starts a throwaway redis-server, an OpenSSH host whose service command controls it and
    a health endpoint, seeds a SomaBrain-like keyspace, injects the scenario's fault, checks the incident
    is there, runs the procedure as a dry-run (which must leave the world exactly as it was) and then for
    real (approving every step, or --guided; every change must have been approved), checks the scenario's
    success condition, compares the dry-run's predictions with what happened, and tears it all down.
    PROCEDURE is an id or a path to a procedure file. With --mutate, PROCEDURE (or every procedure that
    has a scenario) is mutated one planted bug at a time, and each mutant is rehearsed.
    """
    from engine.rehearsal.choose import choose

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # between runs too: the worlds are torn down, never orphaned
    try:
        if mutate:
            if procedure and run_all:
                raise UsageError("give a procedure id, or --all, not both")
        elif run_all == bool(procedure):
            raise UsageError("give a procedure id or --all")
        if guided and jobs > 1:
            raise UsageError("--guided answers prompts on this terminal: one rehearsal at a time (no --jobs)")
        chosen = choose(procedure, scenario, scenarios_dir, procedures_dirs)
    except RunbookError as exc:
        fail(exc)
    out_dir = transcripts_dir / "rehearsals" / datetime.now(UTC).strftime("%Y-%m-%d")
    try:
        if mutate:
            sys.exit(_mutate(chosen, out_dir, sample, min_score, as_json, jobs))
        results = _rehearse_all(chosen, out_dir, guided, as_json, jobs)
    except (KeyboardInterrupt, Interrupted):  # Ctrl-C or SIGTERM stops the whole command, not only one run
        click.echo("runbook: rehearse interrupted; the worlds are torn down", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in results], indent=2))
    else:
        click.echo(render_table(results))
    sys.exit(ExitCode.OK if results and all(r.passed for r in results) else ExitCode.FINDINGS)


def _rehearse_all(chosen: list, out_dir: Path, guided: bool, as_json: bool, jobs: int = 1) -> list:
    from engine.rehearsal import pool
    from engine.rehearsal.rehearse import rehearse as run_one

    if jobs > 1:  # each scenario's transcripts are named after it: parallel runs never share a file
        calls = [
            pool.Call(run_one, (item,), {"transcripts_dir": out_dir, "procedure_ref": ref, "extra_procedures": extra})
            for item, ref, extra in chosen
        ]

        def done(index: int, result: Any) -> None:
            if not as_json:
                click.echo(f"rehearsed {result.procedure} / {result.scenario}: {result.verdict}", err=True)

        return pool.run(calls, jobs, done)
    results = []
    for item, ref, extra in chosen:
        if not as_json:
            click.echo(f"rehearsing {item.procedure} / {item.name} ...", err=True)
        results.append(run_one(item, transcripts_dir=out_dir, guided=guided, procedure_ref=ref, extra_procedures=extra))
    return results


def _run_mutant(
    mutant: Any, path: Path, extra: tuple[Path, ...], ref: str | None, scenarios: list, transcripts_dir: Path
) -> Any:
    """One mutant in a pool process: the original is loaded there (a loaded procedure need not pickle)."""
    from engine.rehearsal import mutate
    from engine.spec.loader import Catalog, load_procedure

    original = load_procedure(path, known_procedures=Catalog(extra).has)
    return mutate.run_mutant(
        mutant, original, scenarios, transcripts_dir=transcripts_dir, extra=extra, original_ref=ref
    )


def _mutate(chosen: list, out_dir: Path, sample: int | None, min_score: float, as_json: bool, jobs: int = 1) -> int:
    from engine.rehearsal import mutate, pool
    from engine.spec.loader import Catalog, load_procedure
    from engine.spec.yamlsource import read_yaml_file

    by_procedure: dict[str, tuple[str | None, tuple[Path, ...], list]] = {}
    for item, ref, extra in chosen:
        by_procedure.setdefault(item.procedure, (ref, extra, []))[2].append(item)
    outcomes: list = []
    calls: list[pool.Call] = []
    for procedure_id, (ref, extra, scenarios) in by_procedure.items():
        path = Path(ref) if ref else mutate.source_of(procedure_id, extra)
        # the engine's own reader: `on:` stays the field "on" (yaml.safe_load makes it YAML 1.1's true, and
        # every mutant of a procedure with `on:` would be "killed" by validate for a key it never had)
        found = mutate.sample(mutate.mutants(read_yaml_file(path).data), sample)
        if jobs > 1:  # a directory per mutant: mutants of one procedure rehearse the same scenarios at once
            for mutant in found:
                where = out_dir / "mutants" / f"{len(calls) + 1:04d}"
                calls.append(pool.Call(_run_mutant, (mutant, path, extra, ref, scenarios, where), {}))
            continue
        original = load_procedure(path, known_procedures=Catalog(extra).has)
        for mutant in found:
            outcome = mutate.run_mutant(
                mutant, original, scenarios, transcripts_dir=out_dir / "mutants", extra=extra, original_ref=ref
            )
            outcomes.append(outcome)
            if not as_json:
                click.echo(f"{outcome.status:10} {procedure_id} {mutant.name}: {outcome.reason}", err=True)
    if calls:

        def done(index: int, outcome: Any) -> None:
            if not as_json:
                click.echo(
                    f"{outcome.status:10} {outcome.mutant.procedure} {outcome.mutant.name}: {outcome.reason}", err=True
                )

        outcomes = pool.run(calls, jobs, done)
    killed, counted, percent = mutate.score(outcomes)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "killed": killed,
                    "counted": counted,
                    "score": round(percent, 1),
                    "mutants": [
                        {
                            "procedure": o.mutant.procedure,
                            "mutant": o.mutant.name,
                            "description": o.mutant.description,
                            "status": o.status,
                            "reason": o.reason,
                            "duration_s": round(o.duration_s, 2),
                        }
                        for o in outcomes
                    ],
                },
                indent=2,
            )
        )
    else:
        survivors = [o for o in outcomes if o.status == "survived"]
        lines = [f"{o.mutant.procedure} {o.mutant.name}: {o.mutant.description}" for o in survivors]
        click.echo("\n".join(["survivors:", *("  " + line for line in lines)] if lines else ["no survivor"]))
        equivalent = sum(o.status == "equivalent" for o in outcomes)
        click.echo(
            f"\n{killed}/{counted} mutants killed ({percent:.1f}%, threshold {min_score:g}%)"
            + (f"; {equivalent} equivalent, not counted" if equivalent else "")
        )
    return ExitCode.OK if counted and percent >= min_score else ExitCode.FINDINGS


def render_table(results: list) -> str:
    header = ("procedure", "scenario", "resolved", "predicted vs actual", "duration", "steps", "approvals")
    rows = []
    details = []
    for r in results:
        mismatched = [c for c in r.comparisons if not c.matched]
        if r.comparisons:
            shown = mismatched[0] if mismatched else r.comparisons[0]
            prediction = f"predicted: {shown.predicted}; actual: {shown.actual}"
            if len(r.comparisons) > 1:
                prediction += f" (+{len(r.comparisons) - 1} steps)"
        else:
            prediction = "no change predicted"
        flag = r.verdict
        rows.append(
            (
                r.procedure,
                r.scenario,
                flag,
                ("" if r.predictions_matched else "DIFFERS: ")
                + ("expected difference: " if mismatched and r.predictions_matched else "")
                + prediction,
                f"{r.duration_s:.1f}s",
                str(r.steps),
                str(r.approvals),
            )
        )
        for message in r.failed_checks:
            label = "not resolved: " if message in r.unmet else ""
            details.append(f"  {r.procedure}/{r.scenario}: {label}{message}")
        if r.error:
            details.append(f"  {r.procedure}/{r.scenario}: error: {r.error}")
        for c in mismatched:
            why = f" (expected: {c.expected})" if c.expected else ""
            details.append(
                f"  {r.procedure}/{r.scenario}: step {c.step}: predicted {c.predicted}, actual {c.actual}{why}"
            )
        if r.transcript:
            details.append(f"  {r.procedure}/{r.scenario}: transcript {r.transcript}")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    widths[3] = min(widths[3], 70)
    lines = ["  ".join(str(v)[: widths[i]].ljust(widths[i]) for i, v in enumerate(row)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    passed = sum(r.passed for r in results)
    expected_no = sum(r.passed and r.expect == "not-resolved" for r in results)
    tail = f" ({expected_no} of them not resolved, as their scenario expects)" if expected_no else ""
    lines.append(f"\n{passed}/{len(results)} passed{tail}")
    return "\n".join(lines + (["", *details] if details else []))
