"""The `runbook` command. Thin: parse options, call the core, print, exit with the documented code.

Heavy modules (redis, paramiko, jsonschema) are imported inside the commands that need them, so
`runbook --help` starts in a few tens of milliseconds.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from engine import __version__
from engine.cli_options import transcripts_dir_option
from engine.errors import ExitCode, Interrupted, RunbookError, UsageError
from engine.printable import printable

# Commands that live in their own modules, loaded only when used.
LAZY_COMMANDS = {  # name -> (module:attribute, the one-line help `runbook --help` shows without importing it)
    "timeline": ("engine.timeline.cli:timeline", "Render an incident's transcripts as a timeline."),
    "note": ("engine.timeline.cli:note", "Record something that happened outside the engine."),
    "postmortem": ("engine.timeline.cli:postmortem", "Write a post-mortem draft from an incident's records."),
    "rehearse": ("engine.rehearsal.cli:rehearse", "Rehearse procedures against a sandbox with their incident."),
    "diagnose": ("engine.triage.cli:diagnose", "Rank the procedures whose symptoms the target shows (read-only)."),
    "alerts": ("engine.triage.cli:alerts", "Write Prometheus alerting rules from the procedures' symptoms."),
    "serve": ("engine.triage.cli:serve", "Receive Alertmanager webhooks: diagnose and dry-run, never change."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            module, _, attr = LAZY_COMMANDS[name][0].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_COMMANDS:
                rows.append((name, LAZY_COMMANDS[name][1]))
            else:
                command = super().get_command(ctx, name)
                if command is not None and not command.hidden:
                    rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def say(text: str, *, err: bool = False) -> None:
    """Echo text that may hold outside data (file content, params, server replies), made printable.

    A closed stdout or a hung-up terminal makes it silent instead of a traceback at exit.
    """
    stream = sys.stderr if err else sys.stdout
    try:
        click.echo(printable(text, multiline=True), file=stream)
    except OSError:
        from engine.console import silence

        silence(stream)


def fail(exc: RunbookError) -> None:
    say(f"runbook: {exc}", err=True)
    advice = getattr(exc, "advice", None)
    if advice:
        say(f"advice: {advice}", err=True)
    sys.exit(exc.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="runbook")
def main() -> None:
    """Run the Redis operations runbook as checked, confirmable, transcribed procedures.

    \b
    Exit codes: 0 ok · 1 an expectation failed · 2 usage or invalid input ·
                3 stopped by the operator or the gate · 4 target unreachable, action error
                or transcript disk full · 128+N ended by signal N (130 Ctrl-C, 129 hang-up,
                143 SIGTERM, 131 SIGQUIT, 141 output closed)
    """


# -- list / show / validate -------------------------------------------------------------------
@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--procedures",
    "extra",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Also list procedures from this directory or file.",
)
def list_command(as_json: bool, extra: tuple[Path, ...]) -> None:
    """List the procedures this engine can run."""
    from engine.spec.loader import Catalog, display_path

    entries = sorted(Catalog(extra).entries().values(), key=lambda e: e.id)
    if as_json:
        click.echo(
            json.dumps(
                [{"id": e.id, "title": e.title, "section": e.section, "file": display_path(e.path)} for e in entries],
                indent=2,
            )
        )
        return
    width = max((len(e.id) for e in entries), default=10)
    for entry in entries:
        say(f"{entry.id:<{width}}  {entry.title}")


@main.command()
@click.argument("procedure")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="Render with these param values.")
@click.option("--json", "as_json", is_flag=True)
def show(procedure: str, variables: tuple[str, ...], as_json: bool) -> None:
    """Show a procedure's params and steps, with effect markers, rendered with --var values."""
    from engine.show import describe, render_text
    from engine.spec.loader import Catalog
    from engine.spec.params import parse_var_options

    try:
        catalog = Catalog()
        proc = catalog.load(procedure)
        data = describe(proc, parse_var_options(variables), load=catalog.load)
    except RunbookError as exc:
        fail(exc)
    say(json.dumps(data, indent=2, default=str) if as_json else render_text(data))


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Check procedure and scenario files (default: everything shipped). Exit 2 on any error."""
    from engine.rehearsal.scenario import load_file as load_scenarios
    from engine.rehearsal.scenario import scenario_files
    from engine.spec.loader import Catalog, check_file

    catalog = Catalog([p for p in paths if p.exists()])
    files: list[Path] = []
    for path in paths or (None,):
        if path is None:
            files.extend(Catalog().files() + scenario_files())
        elif path.is_dir():
            files.extend(sorted(path.rglob("*.yaml")))
        else:
            files.append(path)
    total = 0
    for file in files:
        if "scenarios" in file.parts:  # rehearsal scenarios: their own schema
            try:
                load_scenarios(file)
                errors = []
            except RunbookError as exc:
                errors = getattr(exc, "errors", []) or [str(exc)]
        else:
            _, errors, _ = check_file(file, known_procedures=catalog.has)
        for error in errors:
            say(str(error), err=True)
        total += len(errors)
    if total:
        click.echo(f"{total} error(s) in {len(files)} file(s)", err=True)
        sys.exit(ExitCode.USAGE)
    click.echo(f"{len(files)} file(s) valid")


# -- run --------------------------------------------------------------------------------------
@main.command()
@click.argument("procedure")
@click.option("--redis", "redis_url", metavar="URL", help="redis://[user@]host[:port][/db] (password: REDISCLI_AUTH).")
@click.option("--inventory", type=click.Path(path_type=Path), help="Inventory file of targets.")
@click.option("--target", help="Target name in the inventory (NAME or ENVIRONMENT/NAME).")
@click.option(
    "--sandbox",
    type=click.Choice(["standalone", "replicated", "cluster"]),
    is_flag=False,
    flag_value="standalone",
    default=None,
    help="Run against throwaway seeded redis-servers started for this run: standalone (alone: the default), "
    "replicated (primary, 2 replicas, 3 Sentinels) or cluster (3 primaries, 3 replicas).",
)
@click.option(
    "--sentinel",
    "sentinels",
    multiple=True,
    metavar="HOST:PORT",
    help="A Sentinel to ask for the deployment (repeatable; with --master; its password: RUNBOOK_SENTINEL_AUTH).",
)
@click.option("--master", metavar="NAME", help="The master name the Sentinels monitor (with --sentinel).")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="Set a param (repeatable).")
@click.option("--dry-run", is_flag=True, help="Rehearse: reads run, changes are measured and recorded, never sent.")
@click.option(
    "--yes",
    "assume_yes",
    is_flag=True,
    help="Approve each change (recorded as approved by flag); not past 3 visits of one changing step or 50 changes.",
)
@click.option(
    "--transcript", type=click.Path(path_type=Path), help="Transcript path (default: under --transcripts-dir)."
)
@transcripts_dir_option()
@click.option("--operator", help="Who is running this (default: the OS user).")
@click.option(
    "--signing-key",
    type=click.Path(path_type=Path),
    envvar="RUNBOOK_SIGNING_KEY",
    help="SSH key that signs approvals and the run's end: a .pub held in ssh-agent, or a private key file.",
)
@click.option(
    "--steal-lease",
    metavar="REASON",
    help="Take over the target's lease from another run (both transcripts record it and the reason).",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=1, max=3600),
    default=30.0,
    show_default=True,
    help="Seconds a lease outlives a run that stopped renewing it (killed, machine lost).",
)
@click.option("--incident", help="Incident id this run belongs to.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the outcome and step results.")
@click.option(
    "--procedures",
    "extra",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Also find procedures (and the procedures they call) in this directory.",
)
def run(
    procedure: str,
    redis_url: str | None,
    inventory: Path | None,
    target: str | None,
    sandbox: str | None,
    sentinels: tuple[str, ...],
    master: str | None,
    variables: tuple[str, ...],
    dry_run: bool,
    assume_yes: bool,
    transcript: Path | None,
    transcripts_dir: Path,
    operator: str | None,
    signing_key: Path | None,
    steal_lease: str | None,
    lease_ttl: float,
    incident: str | None,
    as_json: bool,
    extra: tuple[Path, ...],
) -> None:
    """Run a procedure against a target, asking before every change."""
    from engine.console import Console
    from engine.session import RunRequest, execute
    from engine.spec.params import parse_var_options

    console = Console(sys.stderr if as_json else sys.stdout)
    try:
        request = RunRequest(
            procedure=procedure,
            variables=parse_var_options(variables),
            redis_url=redis_url,
            inventory=str(inventory) if inventory else None,
            target=target,
            sandbox=sandbox is not None,
            sandbox_topology=sandbox or "standalone",
            sentinels=sentinels,
            master=master,
            dry_run=dry_run,
            assume_yes=assume_yes,
            transcript=transcript,
            transcripts_dir=transcripts_dir,
            operator=operator,
            signing_key=signing_key,
            steal_lease=steal_lease,
            lease_ttl=lease_ttl,
            incident=incident,
            argv=tuple(_safe_argv()),
            extra_procedures=extra,
        )

        def on_start(path: str) -> None:
            mode = " (dry-run: nothing will be changed)" if dry_run else ""
            console.line(f"runbook {procedure}{mode}", bold=True)
            console.line(f"transcript: {path}")

        def on_sandbox(box: Any) -> None:
            console.line(f"sandbox: {box.describe()}, {box.summary.keys_total} keys seeded")

        result = execute(request, on_step=console.step, on_start=on_start, started_sandbox=on_sandbox)
    except RunbookError as exc:
        if as_json:
            _print_json(_no_run(procedure, exc.outcome, exc.exit_code, str(exc)))
        fail(exc)
    except Interrupted as exc:  # a signal before the transcript existed: nothing was run, nothing to record
        if as_json:
            _print_json(_no_run(procedure, "interrupted", exc.exit_code, f"interrupted by {exc}"))
        say(f"runbook: interrupted by {exc} before the run started; nothing was run", err=True)
        sys.exit(exc.exit_code)
    colour = "green" if result.exit_code == 0 else "yellow" if result.exit_code == 1 else "red"
    try:  # the output may be gone (the hang-up or closed pipe that ended the run): the transcript has it all
        console.line(
            f"outcome: {result.outcome} (exit {result.exit_code})" + (f": {result.error}" if result.error else ""),
            fg=colour,
            bold=True,
        )
        console.line(f"transcript: {result.transcript}")
    except (Interrupted, KeyboardInterrupt):  # recorded already; a late Ctrl-C only cuts the summary short
        pass
    if as_json:
        _print_json(result.as_json())
    sys.exit(result.exit_code)


def _no_run(procedure: str, outcome: str, exit_code: int, error: str) -> dict[str, Any]:
    return {
        "run_id": None,
        "procedure": procedure,
        "outcome": outcome,
        "exit_code": exit_code,
        "transcript": None,
        "error": error,
        "steps": [],
    }


def _print_json(data: dict[str, Any]) -> None:
    """One JSON object on stdout (ASCII-escaped, so safe on a terminal); silent if stdout is gone."""
    try:
        click.echo(json.dumps(data, default=str))
    except OSError:
        from engine.console import silence

        silence(sys.stdout)


def _safe_argv() -> list[str]:
    """argv for the transcript: a URL's password and query never reach it (such a --redis is refused anyway)."""
    from engine.transcript.redact import url_credentials

    return ["runbook", *(url_credentials(arg) for arg in sys.argv[1:])]


# -- transcript ---------------------------------------------------------------------------------
@main.group()
def transcript() -> None:
    """Work with run transcripts."""


@transcript.command("verify")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--allowed-signers",
    type=click.Path(path_type=Path),
    default=None,
    help="OpenSSH allowed_signers file: every approval and run end must be signed by a key it lists.",
)
def transcript_verify(files: tuple[Path, ...], allowed_signers: Path | None) -> None:
    """Check schema, hash chain and signatures; name the first bad line and the signer. Exit 1 if any problem."""
    from engine.transcript.verify import verify_transcript

    allowed = None
    if allowed_signers is not None:
        from engine.transcript.allowed_signers import load_allowed_signers

        try:
            allowed = load_allowed_signers(allowed_signers)
        except UsageError as exc:
            fail(exc)
        for problem in allowed.problems:
            click.echo(f"warning: {printable(problem)}", err=True)
    bad = False
    for file in files:
        report = verify_transcript(file, allowed)
        say(report.render())
        bad = bad or not report.ok
    sys.exit(ExitCode.FINDINGS if bad else ExitCode.OK)


# -- explain ------------------------------------------------------------------------------------
@main.command()
@click.argument("error_text")
def explain(error_text: str) -> None:
    """Cause and solution from the runbook's Common Errors table for a pasted Redis error."""
    from engine.common_errors import explain as lookup

    found = lookup(error_text)
    if found is None:
        click.echo("not in the runbook's Common Errors table", err=True)
        sys.exit(ExitCode.FINDINGS)
    click.echo(f"{found.code}\ncause: {found.cause}\nsolution: {found.solution}")


def _usage(message: str) -> None:
    fail(UsageError(message))


if __name__ == "__main__":
    main()
