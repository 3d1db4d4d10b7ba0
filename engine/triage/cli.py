"""`runbook diagnose`, `runbook alerts`, `runbook serve`: thin click shells over the triage core."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from engine.cli.errors import fail
from engine.cli.options import inventory_option, redis_url_option, transcripts_dir_option
from engine.errors import ExitCode, RunbookError, UsageError


def target_and_args(redis_url: str | None, inventory: Path | None, target: str | None, sandbox: bool):
    """The target to read, and the options that name it again in the printed next command."""
    from engine.run.session import RunRequest, resolve_target

    if sandbox:
        return None, ["--sandbox"]
    request = RunRequest(
        procedure="", redis_url=redis_url, inventory=str(inventory) if inventory else None, target=target
    )
    resolved = resolve_target(request)
    if redis_url:
        assert resolved.redis is not None
        return resolved, ["--redis", resolved.redis.url]
    return resolved, ["--inventory", str(inventory), "--target", str(target)]


@click.command()
@redis_url_option()
@inventory_option()
@click.option("--target", help="Target name in the inventory (NAME or ENVIRONMENT/NAME).")
@click.option("--sandbox", is_flag=True, help="Diagnose a throwaway seeded redis-server (a healthy one).")
@click.option("--incident", help="Incident id: the transcript and the printed commands carry it.")
@click.option(
    "--transcript", type=click.Path(path_type=Path), help="Transcript path (default: under --transcripts-dir)."
)
@transcripts_dir_option()
@click.option("--operator", help="Who is running this (default: the OS user).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the ranked procedures, evidence and commands.")
@click.option(
    "--procedures",
    "extra",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Also consider the symptoms of the procedures in this directory or file.",
)
def diagnose(
    redis_url: str | None,
    inventory: Path | None,
    target: str | None,
    sandbox: bool,
    incident: str | None,
    transcript: Path | None,
    transcripts_dir: Path,
    operator: str | None,
    as_json: bool,
    extra: tuple[Path, ...],
) -> None:
    """Read the target once and rank the procedures whose symptoms match, with the next command.

    \b
    Read-only: one INFO all, CONFIG GET *, CLIENT LIST, SLOWLOG GET, LATENCY LATEST, through an
    adapter that refuses any write. Exit 0: nothing found · 1: symptoms matched · 2: usage.
    """
    from engine.run.session import INCIDENT_ID
    from engine.spec.loader import Catalog
    from engine.triage.diagnose import diagnose as run_diagnose
    from engine.triage.diagnose import render_text

    box = None
    try:
        if incident is not None and not INCIDENT_ID.fullmatch(incident):
            raise UsageError(f"--incident {incident!r}: use letters, digits, '.', '_' and '-' (it names files)")
        if sum([bool(redis_url), bool(inventory or target), sandbox]) != 1:
            raise UsageError("say what to diagnose: --redis URL, --inventory FILE --target NAME, or --sandbox")
        resolved, args = target_and_args(redis_url, inventory, target, sandbox)
        if sandbox:
            from engine.run.sandbox_target import start_sandbox

            box = start_sandbox()
            resolved = box.target
        result = run_diagnose(
            resolved,
            target_args=args,
            transcripts_dir=transcripts_dir,
            catalog=Catalog(extra),
            transcript=transcript,
            incident=incident,
            operator=operator,
            argv=["runbook", *sys.argv[1:]],
        )
    except RunbookError as exc:
        fail(exc)
    except KeyboardInterrupt:
        click.echo("runbook: interrupted", err=True)
        sys.exit(130)
    finally:
        if box is not None:
            box.stop()
    click.echo(json.dumps(result.as_json(), indent=2, default=str) if as_json else render_text(result))
    sys.exit(result.exit_code)


@click.command()
@click.option("--format", "fmt", type=click.Choice(["prometheus"]), default="prometheus", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write here (default: stdout).")
@click.option("--url-base", metavar="URL", help="runbook_url annotation: URL + procedure id (e.g. your docs site).")
@click.option(
    "--diagnose-args",
    default="--inventory inventory.yaml --target {{ $labels.runbook_target }}",
    show_default=True,
    help="How the annotation's diagnose command names the target (Prometheus template).",
)
@click.option(
    "--procedures",
    "extra",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Also turn the symptoms of the procedures in this directory or file into rules.",
)
def alerts(fmt: str, output: Path | None, url_base: str | None, diagnose_args: str, extra: tuple[Path, ...]) -> None:
    """Prometheus alerting rules (redis_exporter metrics) from the procedures' symptoms and thresholds."""
    from engine.spec.loader import Catalog
    from engine.triage.alerts import prometheus_rules
    from engine.triage.diagnose import symptom_procedures

    try:
        procedures, thresholds = symptom_procedures(Catalog(extra))
        text = prometheus_rules(procedures, thresholds, url_base=url_base, diagnose_args=diagnose_args)
    except RunbookError as exc:
        fail(exc)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(UsageError(f"--output {output}: {exc.strerror}"))
    click.echo(f"wrote {text.count('- alert:')} rule(s) to {output}", err=True)


@click.command()
@click.option("--inventory", required=True, type=click.Path(path_type=Path), help="Targets alerts are mapped to.")
@click.option("--listen", default="127.0.0.1:9095", show_default=True, help="HOST:PORT to bind (loopback by default).")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="RUNBOOK_SERVE_TOKEN_FILE",
    help="File holding the bearer token Alertmanager sends (or set RUNBOOK_SERVE_TOKEN).",
)
@transcripts_dir_option()
@click.option("--max-body", type=click.IntRange(1024, 16 << 20), default=256 << 10, show_default=True)
@click.option("--rate", type=click.FloatRange(0.1, 1000), default=5.0, show_default=True, help="Requests per second.")
@click.option("--burst", type=click.IntRange(1, 1000), default=20, show_default=True)
def serve(
    inventory: Path,
    listen: str,
    token_file: Path | None,
    transcripts_dir: Path,
    max_body: int,
    rate: float,
    burst: int,
) -> None:
    """Receive Alertmanager webhooks; diagnose and dry-run the matched procedure (never a change).

    \b
    POST /alertmanager with `Authorization: Bearer <token>`. 401 wrong token · 413 too big ·
    400 malformed · 429 over the rate · 202 accepted (diagnosis runs in the background).
    """
    from engine.triage.serve import ServeConfig, load_token, run_server

    try:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--listen {listen!r}: expected HOST:PORT")
        config = ServeConfig(
            inventory=inventory,
            token=load_token(token_file),
            transcripts_dir=transcripts_dir,
            host=host,
            port=int(port),
            max_body=max_body,
            rate=rate,
            burst=burst,
        )
        run_server(config)
    except RunbookError as exc:
        fail(exc)
    except KeyboardInterrupt:
        sys.exit(ExitCode.OK)
