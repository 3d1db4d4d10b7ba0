"""`runbook rehearse`: prove a procedure resolves the incident it is written for."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from engine.cli_options import transcripts_dir_option
from engine.errors import ExitCode, RunbookError, UsageError


@click.command()
@click.argument("procedure", required=False)
@click.option("--scenario", help="Only this scenario of the procedure.")
@click.option("--all", "run_all", is_flag=True, help="Every scenario of every procedure.")
@click.option("--guided", is_flag=True, help="Answer the prompts yourself, as in a real incident.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list, one object per rehearsal.")
@transcripts_dir_option("Rehearsal transcripts go under <dir>/rehearsals/<UTC date>/.")
@click.option(
    "--scenarios",
    "scenarios_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Read scenarios from DIR/**/scenarios/*.yaml instead of the shipped ones (a new or a broken one).",
)
def rehearse(
    procedure: str | None,
    scenario: str | None,
    run_all: bool,
    guided: bool,
    as_json: bool,
    transcripts_dir: Path,
    scenarios_dir: Path | None,
) -> None:
    """Rehearse procedures against a sandbox with their incident injected; exit 0 only if all are resolved.

    \b
    Each rehearsal starts a throwaway redis-server, an OpenSSH host whose service command controls it and
    a health endpoint, seeds a SomaBrain-like keyspace, injects the scenario's fault, runs the procedure
    as a dry-run and then for real (approving every step, or --guided), checks the scenario's success
    condition, compares the dry-run's predictions with what happened, and tears it all down.
    """
    from engine.rehearsal.rehearse import rehearse as run_one
    from engine.rehearsal.scenario import find, load_all

    try:
        if run_all == bool(procedure):
            raise UsageError("give a procedure id or --all")
        chosen = load_all(scenarios_dir) if run_all else find(procedure, scenario, scenarios_dir)
    except RunbookError as exc:
        click.echo(f"runbook: {exc}", err=True)
        sys.exit(ExitCode.USAGE)
    out_dir = transcripts_dir / "rehearsals" / datetime.now(UTC).strftime("%Y-%m-%d")
    results = []
    for item in chosen:
        if not as_json:
            click.echo(f"rehearsing {item.procedure} / {item.name} ...", err=True)
        result = run_one(item, transcripts_dir=out_dir, guided=guided)
        results.append(result)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in results], indent=2))
    else:
        click.echo(render_table(results))
    sys.exit(ExitCode.OK if results and all(r.resolved for r in results) else ExitCode.FINDINGS)


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
        flag = "yes" if r.resolved else "NO"
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
            details.append(f"  {r.procedure}/{r.scenario}: not resolved: {message}")
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
    resolved = sum(r.resolved for r in results)
    lines.append(f"\n{resolved}/{len(results)} resolved")
    return "\n".join(lines + (["", *details] if details else []))
