"""The `runbook` command. Thin: parse options, call the core, print, exit with the documented code.

Heavy modules (redis, paramiko, jsonschema) are imported inside the commands that need them, so
`runbook --help` starts in a few tens of milliseconds.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from engine import __version__
from engine.cli.errors import fail, say
from engine.cli.options import inventory_option, redis_url_option, transcripts_dir_option
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
    from engine.errors import redeliver_dropped_interruptions
    from engine.steps import load_extra_kinds

    sys.unraisablehook = redeliver_dropped_interruptions  # a Ctrl-C that lands in a finalizer is not lost
    try:
        load_extra_kinds()  # the modules $RUNBOOK_KINDS names, which register kinds of their own
    except RunbookError as exc:
        fail(exc)


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
    from engine.cli.show import describe, render_text
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
                errors: list[Any] = []
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
@redis_url_option()
@inventory_option()
@click.option(
    "--target",
    "targets",
    multiple=True,
    help="Target in the inventory (NAME or ENVIRONMENT/NAME); a glob ('production/*') or a repeated --target "
    "runs on a fleet.",
)
@click.option("--limit", multiple=True, metavar="NAME|TAG", help="Fleet: only the targets matching this (repeatable).")
@click.option("--exclude", multiple=True, metavar="NAME|TAG", help="Fleet: leave out targets matching this.")
@click.option(
    "--forks",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="Fleet: targets a read-only procedure (or a dry-run) runs on at once.",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Fleet: targets a procedure with changes rolls over at a time.",
)
@click.option(
    "--max-failures",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Fleet: failed targets a rollout tolerates before it halts.",
)
@click.option("--parent-run", hidden=True, help="Internal: the fleet run this run is one target of.")
@click.option("--rollout", is_flag=True, hidden=True, help="Internal: a rollout target (takes 'all remaining').")
@click.option("--rollout-approval", hidden=True, help="Internal: OPERATOR@RUN whose 'all remaining' covers this run.")
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
    targets: tuple[str, ...],
    limit: tuple[str, ...],
    exclude: tuple[str, ...],
    forks: int,
    batch: int,
    max_failures: int,
    parent_run: str | None,
    rollout: bool,
    rollout_approval: str | None,
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
    from engine.cli.console import Console
    from engine.run.session import RunRequest
    from engine.spec.params import parse_var_options
    from engine.targets import is_pattern

    if len(targets) > 1 or any(is_pattern(t) for t in targets) or limit or exclude:
        if steal_lease:
            fail(UsageError("--steal-lease takes over one target's lease: run that target on its own"))
        if not inventory or redis_url or sandbox or transcript:
            fail(
                UsageError(
                    "a fleet (several --target, a pattern, --limit/--exclude) needs --inventory, "
                    "and no --redis, --sandbox or --transcript"
                )
            )
        from engine.run.fleet import FleetRequest

        _run_fleet(
            FleetRequest(
                procedure=procedure,
                inventory=str(inventory),
                patterns=targets,
                limit=limit,
                exclude=exclude,
                variables=variables,
                dry_run=dry_run,
                assume_yes=assume_yes,
                transcripts_dir=transcripts_dir,
                operator=operator,
                incident=incident,
                signing_key=signing_key,
                lease_ttl=lease_ttl,
                extra_procedures=extra,
                forks=forks,
                batch=batch,
                max_failures=max_failures,
                argv=tuple(_safe_argv()),
            ),
            as_json,
        )
    target = targets[0] if targets else None
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
            parent_run=parent_run,
            rollout=rollout,
            rollout_approval=rollout_approval,
        )
        _execute_and_exit(request, console, procedure, dry_run, as_json)
    except RunbookError as exc:
        if as_json:
            _print_json(_no_run(procedure, exc.outcome, exc.exit_code, str(exc)))
        fail(exc)


def _execute_and_exit(request: Any, console: Any, procedure: str, dry_run: bool, as_json: bool) -> None:
    """Run one request, print its outcome, exit with its code (shared by `run` and `continue`)."""
    from engine.run.session import execute

    try:

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


def entry() -> None:
    """The `runbook` command: `main`, where a signal that lands while it exits cannot change how it exits.

    Why: Python can end the process by SIGINT after the command has decided its status (130 after an
    interruption it handled and cleaned up after, say), in two ways. A KeyboardInterrupt (a later signal,
    or one redelivered because a finalizer dropped it) raised in the frames the SystemExit unwinds through;
    and, under `python -m`, CPython's note that a string exec ended in a KeyboardInterrupt (see
    `_forget_unhandled_keyboard_interrupt`). Seen in CI: `rehearse` printed that it was interrupted and had
    torn its worlds down, and died with -2 instead of 130. So the status is settled here (one that escaped
    main: the status the SystemExit it interrupted carried, else 128+N), the note is cleared, and from then
    on a signal ends the process at once with that status (`_leave_on_late_signals`): never a hang, never
    another status."""
    decided: Any = _UNSET
    while True:
        try:
            if decided is _UNSET:
                decided = _status_of_main()
            _leave_on_late_signals(decided)
            _forget_unhandled_keyboard_interrupt()
            break
        except (KeyboardInterrupt, Interrupted) as exc:  # landed while the status was being settled
            if decided is _UNSET:
                decided = _status_after(exc)
    sys.exit(decided)


_UNSET: Any = object()


def _status_of_main() -> Any:
    try:
        main()
    except SystemExit as exc:
        return exc.code
    except (KeyboardInterrupt, Interrupted) as exc:
        return _status_after(exc)
    return 0


def _status_after(exc: BaseException) -> Any:
    """The status a signal that escaped `main` leaves: the one decided before it (the SystemExit it cut
    short), else 128+N for an interruption (130 for a bare KeyboardInterrupt)."""
    decided = exc.__context__
    if isinstance(decided, SystemExit):
        return decided.code
    return 128 + exc.signum if isinstance(exc, Interrupted) else ExitCode.INTERRUPTED


def _forget_unhandled_keyboard_interrupt() -> None:
    """Clear CPython's note that a KeyboardInterrupt went unhandled, set by any string `exec`/`eval` a signal
    interrupted (dataclasses and namedtuple build their methods that way, so a SIGTERM that lands in a lazy
    import sets it) even when the command caught the interruption and decided its status. Under `python -m`
    the interpreter checks that note after its exit and kills itself by SIGINT (-2, strace: kill(self,
    SIGINT) after the status was settled). Every string exec resets the note first; this one is that exec."""
    exec("pass", {})  # a constant string, run for its side effect on the flag


def _leave_on_late_signals(code: Any) -> None:
    """From here the process is leaving with `code`: a signal ends it at once with that status (streams
    flushed) instead of raising in the frames the exit still runs through. The command's own cleanup is
    done by now; only the interpreter's exit is left, which a signal may then cut short but not change."""
    status = code if isinstance(code, int) else 0 if code is None else 1

    def leave(signum: int, frame: Any) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)

    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"):
        signal.signal(getattr(signal, name), leave)


def _run_fleet(request: Any, as_json: bool, *, interactive_children: bool = True) -> None:
    """Every target of a fleet, then one table (or one JSON object); exit with the worst code."""
    from engine.run.fleet import render_table, run_fleet

    try:
        result = run_fleet(request, say=lambda text: say(text, err=as_json), interactive_children=interactive_children)
    except RunbookError as exc:
        fail(exc)
    if as_json:
        _print_json(result.as_json())
    else:
        say(render_table(result.children, result.not_run))
        say(f"outcome: {result.outcome} (exit {result.exit_code})")
        say(f"transcript: {result.transcript}")
    sys.exit(result.exit_code)


# -- continue -----------------------------------------------------------------------------------
@main.command("continue")
@click.argument("run_ref", metavar="RUN_ID|TRANSCRIPT")
@transcripts_dir_option()
@click.option("--allow-changed", is_flag=True, help="Continue even though the procedure, engine or target changed.")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="Set a param (secret ones: again).")
@click.option("--yes", "assume_yes", is_flag=True, help="Approve each change by flag (never an in-doubt one).")
@click.option("--operator", help="Who is continuing (default: the OS user).")
@click.option("--signing-key", type=click.Path(path_type=Path), envvar="RUNBOOK_SIGNING_KEY")
@click.option("--json", "as_json", is_flag=True)
@click.option("--procedures", "extra", multiple=True, type=click.Path(exists=True, path_type=Path))
@click.option("--transcript", type=click.Path(path_type=Path), hidden=True)
@click.option("--parent-run", hidden=True)
@click.option("--rollout", is_flag=True, hidden=True)
@click.option("--rollout-approval", hidden=True)
def continue_command(
    run_ref: str,
    transcripts_dir: Path,
    allow_changed: bool,
    variables: tuple[str, ...],
    assume_yes: bool,
    operator: str | None,
    signing_key: Path | None,
    as_json: bool,
    extra: tuple[Path, ...],
    transcript: Path | None,
    parent_run: str | None,
    rollout: bool,
    rollout_approval: str | None,
) -> None:
    """Resume a run or a rollout that stopped, from its transcript: done steps are not run again."""
    from engine.cli.console import Console
    from engine.run.resume import find_transcript, load_plan

    try:
        plan = load_plan(find_transcript(run_ref, transcripts_dir))
    except RunbookError as exc:
        fail(exc)
    if plan.ended is not None and plan.ended.get("outcome") == "ok":
        say(f"run {plan.run_id} ended ok: nothing to continue")
        sys.exit(ExitCode.OK)
    if plan.fleet is not None:
        _continue_fleet(
            plan, transcripts_dir, allow_changed, variables, assume_yes, operator, signing_key, as_json, extra
        )
    console = Console(sys.stderr if as_json else sys.stdout)
    try:
        request = _resume_request(
            plan, allow_changed, variables, assume_yes, operator, signing_key, extra, transcript, transcripts_dir
        )
        from dataclasses import replace

        request = replace(request, parent_run=parent_run, rollout=rollout, rollout_approval=rollout_approval)
    except RunbookError as exc:
        fail(exc)
    done = [str(key) for key in plan.done]
    console.line(f"continuing run {plan.run_id} ({plan.procedure.get('id')})", bold=True)
    console.line(f"  done, not run again: {', '.join(done) or 'nothing'}")
    if plan.in_doubt is not None:
        doubt = plan.in_doubt
        console.line(
            f"  IN DOUBT: step '{doubt.key}' ({doubt.effect}: {doubt.command}) started at {doubt.started_at} "
            "and never finished: it is measured again and put to you before anything is sent",
            fg="red",
            bold=True,
        )
    for change in request.resume_changes:
        console.line(f"  changed since (--allow-changed): {change}", fg="yellow")
    _execute_and_exit(request, console, str(plan.procedure.get("id")), False, as_json)


def _original_options(plan: Any) -> dict[str, Any]:
    """The stopped run's `runbook run` options, parsed from the argv its transcript recorded."""
    argv = list(plan.argv)
    if len(argv) < 3 or argv[1] != "run":
        raise UsageError(f"{plan.path}: its recorded command line is not a `runbook run` ({' '.join(argv[:2])})")
    try:
        ctx = run.make_context("run", argv[2:], resilient_parsing=True)
    except click.ClickException as exc:
        raise UsageError(f"{plan.path}: its recorded command line cannot be read again: {exc}") from None
    return dict(ctx.params)


def _resume_request(
    plan: Any,
    allow_changed: bool,
    variables: tuple[str, ...],
    assume_yes: bool,
    operator: str | None,
    signing_key: Path | None,
    extra: tuple[Path, ...],
    transcript: Path | None,
    transcripts_dir: Path,
) -> Any:
    """The continued run's request, refused (exit 3) when the world it decided on changed."""
    from engine.errors import StoppedError
    from engine.run.context import Connections
    from engine.run.resume import what_changed
    from engine.run.session import RunRequest, identify, prepare, resolve_target
    from engine.spec.params import parse_var_options

    old = _original_options(plan)
    given = [v for v in old.get("variables") or () if "[SECRET:" not in v]  # secrets: give them again
    request = RunRequest(
        procedure=str(plan.procedure.get("id")),
        variables={**parse_var_options(tuple(given)), **parse_var_options(variables)},
        redis_url=old.get("redis_url"),
        inventory=str(old["inventory"]) if old.get("inventory") else None,
        target=(old.get("targets") or (None,))[0],
        sandbox=False,
        dry_run=bool(old.get("dry_run")),
        assume_yes=assume_yes,
        transcript=transcript,
        transcripts_dir=transcripts_dir,
        operator=operator,
        signing_key=signing_key,
        lease_ttl=float(old.get("lease_ttl") or 30.0),
        incident=old.get("incident"),
        argv=tuple(plan.argv),
        extra_procedures=tuple(old.get("extra") or ()) + extra,
        resume=plan,
    )
    if old.get("sandbox"):
        raise UsageError(f"{plan.path}: a --sandbox run cannot be continued (its server is gone)")
    procedure, _, _ = prepare(request)
    target = resolve_target(request)
    identity = None
    if target.redis is not None:
        connections = Connections(target, allow_mutation=False)
        try:
            identity = identify(connections)
        finally:
            connections.close()
    changes = what_changed(plan, procedure_sha256=procedure.sha256, engine_version=__version__, redis_run_id=identity)
    if changes and not allow_changed:
        raise StoppedError(
            f"run {plan.run_id} is not continued: "
            + "; ".join(changes)
            + ". Check that continuing still makes sense, then give --allow-changed"
        )
    from dataclasses import replace

    return replace(request, resume_changes=tuple(changes))


def _continue_fleet(
    plan: Any,
    transcripts_dir: Path,
    allow_changed: bool,
    variables: tuple[str, ...],
    assume_yes: bool,
    operator: str | None,
    signing_key: Path | None,
    as_json: bool,
    extra: tuple[Path, ...],
) -> None:
    """A rollout again: targets done are not run again, a stopped target is continued, the rest run."""
    from engine.errors import StoppedError
    from engine.run.fleet import FleetRequest, child_outcome
    from engine.run.resume import what_changed
    from engine.spec.loader import Catalog
    from engine.transcript.reader import read_transcript

    fleet = plan.fleet
    old = _original_options(plan)
    try:
        catalog = Catalog(tuple(old.get("extra") or ()) + extra)
        procedure = catalog.load(str(plan.procedure.get("id")))
    except RunbookError as exc:
        fail(exc)
    changes = what_changed(plan, procedure_sha256=procedure.sha256, engine_version=__version__, redis_run_id=None)
    if changes and not allow_changed:
        fail(StoppedError(f"rollout {plan.run_id} is not continued: " + "; ".join(changes) + "; give --allow-changed"))
    paths: dict[str, str] = {}
    for event in read_transcript(plan.path).events:
        if event.get("type") in ("fleet.child.started", "fleet.child.finished") and event.get("transcript"):
            paths[str(event["target"])] = str(event["transcript"])
    earlier = {target: child_outcome(target, Path(path), 137) for target, path in paths.items()}
    given = [v for v in old.get("variables") or () if "[SECRET:" not in v]
    continue_args: list[str] = ["--allow-changed"] if allow_changed else []
    for item in variables:
        continue_args += ["--var", item]
    request = FleetRequest(
        procedure=procedure.id,
        inventory=str(fleet.get("inventory")),
        patterns=tuple(fleet.get("targets") or ()),
        variables=tuple(given) + variables,
        dry_run=bool(old.get("dry_run")),
        assume_yes=assume_yes,
        transcripts_dir=transcripts_dir,
        operator=operator,
        incident=old.get("incident"),
        signing_key=signing_key,
        lease_ttl=float(old.get("lease_ttl") or 30.0),
        extra_procedures=tuple(old.get("extra") or ()) + extra,
        forks=int(fleet.get("forks") or 8),
        batch=int(fleet.get("batch") or 1),
        max_failures=int(fleet.get("max_failures") or 0),
        argv=tuple(plan.argv),
        resumes=plan.run_id,
        earlier=earlier,
        continue_args=tuple(continue_args),
    )
    done = sorted(t for t, o in earlier.items() if o.outcome == "ok" and o.exit_code == 0)
    say(f"continuing rollout {plan.run_id}: done on {', '.join(done) or 'no target'} (not run again)", err=as_json)
    _run_fleet(request, as_json)


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


def _print_json(data: Mapping[str, Any]) -> None:
    """One JSON object on stdout (ASCII-escaped, so safe on a terminal); silent if stdout is gone."""
    try:
        click.echo(json.dumps(data, default=str))
    except OSError:
        from engine.cli.console import silence

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


if __name__ == "__main__":
    main()
