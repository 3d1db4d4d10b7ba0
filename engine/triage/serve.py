"""`runbook serve`: Alertmanager webhooks in, a diagnosis and a dry-run out; never a change.

The HTTP side only checks and queues (token, size, rate, shape) and answers at once; one worker
thread does the triage: a `detected` note at the alert's startsAt, `diagnose`, then the first
matched procedure as a dry-run in a subprocess (`runbook run --dry-run`: the adapters refuse writes).
One triage per alert group: a repeated notification of the same group is acknowledged, not re-run.
"""

from __future__ import annotations

import hmac
import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from engine.errors import UsageError
from engine.triage import webhook

OPERATOR = "runbook-serve"
PATH = "/alertmanager"
TRIAGE_FILE = "triage.json"
MIN_TOKEN = 16


@dataclass(frozen=True)
class ServeConfig:
    inventory: Path
    token: str
    transcripts_dir: Path
    host: str = "127.0.0.1"
    port: int = 9095
    max_body: int = 256 << 10
    rate: float = 5.0
    burst: int = 20
    run_timeout: float = 600.0


def load_token(token_file: Path | None) -> str:
    """From --token-file / RUNBOOK_SERVE_TOKEN_FILE, else RUNBOOK_SERVE_TOKEN; never from argv."""
    if token_file is not None:
        from engine import fsutil

        try:
            token = fsutil.read_text(token_file, max_bytes=4096, what="the token file").strip()
        except OSError as exc:
            raise UsageError(f"--token-file {token_file}: {exc.strerror}") from None
    else:
        token = os.environ.get("RUNBOOK_SERVE_TOKEN", "").strip()
    if len(token) < MIN_TOKEN:
        raise UsageError(
            f"serve needs a bearer token of at least {MIN_TOKEN} characters: --token-file FILE "
            "(or RUNBOOK_SERVE_TOKEN_FILE), or RUNBOOK_SERVE_TOKEN"
        )
    return token


class RateLimit:
    """A token bucket: `burst` requests at once, `rate` a second after that."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.last = float(burst), time.monotonic()
        self.lock = threading.Lock()

    def allow(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens < 1:
                return False
            self.tokens -= 1
            return True


class Triage:
    """The queue of alert groups to triage, and the worker that does it."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        self.jobs: queue.Queue[tuple[str, webhook.Notification] | None] = queue.Queue()
        self.worker = threading.Thread(target=self._work, name="runbook-triage", daemon=True)
        self.worker.start()

    def submit(self, notification: webhook.Notification) -> dict[str, Any]:
        incident = webhook.incident_id(notification.group_key)
        if not notification.firing:
            return {"incident": incident, "status": "ignored", "reason": "no firing alert"}
        from engine.timeline.incident import notes_path

        with self.lock:
            if incident in self.seen or notes_path(self.config.transcripts_dir, incident).exists():
                return {"incident": incident, "status": "duplicate"}
            self.seen.add(incident)
        self.jobs.put((incident, notification))
        return {"incident": incident, "status": "queued"}

    def stop(self) -> None:
        self.jobs.put(None)
        self.worker.join(timeout=self.config.run_timeout)

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            incident, notification = job
            try:
                report = self.triage(incident, notification)
            except Exception as exc:  # one bad alert never stops the service
                report = {"incident": incident, "error": f"{type(exc).__name__}: {exc}"}
            self._write_report(incident, report)
            print(f"runbook serve: {incident}: {report.get('summary') or report.get('error')}", file=sys.stderr)

    def triage(self, incident: str, notification: webhook.Notification) -> dict[str, Any]:
        from engine.targets import load_inventory, target_from_inventory
        from engine.timeline.notes import add_note
        from engine.triage.diagnose import diagnose

        firing = notification.firing
        first = min(firing, key=lambda a: a.starts_at or datetime.max.replace(tzinfo=UTC))
        now = datetime.now(UTC)
        started = min(first.starts_at or now, now)
        names = sorted({a.labels.get("alertname", "?") for a in firing})
        report: dict[str, Any] = {
            "incident": incident,
            "group_key": notification.group_key,
            "alerts": names,
            "starts_at": started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        inventory = load_inventory(self.config.inventory)
        target_name = next((t for a in firing if (t := webhook.map_target(a.labels, inventory["data"]))), None)
        where = f" on {target_name}" if target_name else ""
        add_note(
            self.config.transcripts_dir,
            incident,
            f"Alertmanager: {', '.join(names)} firing{where} (group {notification.group_key})",
            operator=OPERATOR,
            milestone="detected",
            at=started,
        )
        if target_name is None:
            labels = firing[0].labels
            report["error"] = (
                f"no inventory target for labels runbook_target={labels.get('runbook_target')!r} "
                f"redis={labels.get('redis')!r} instance={labels.get('instance')!r}"
            )
            return report
        report["target"] = target_name
        target = target_from_inventory(inventory, target_name)
        args = ["--inventory", str(self.config.inventory), "--target", target_name]
        diagnosis = diagnose(
            target,
            target_args=args,
            transcripts_dir=self.config.transcripts_dir,
            incident=incident,
            operator=OPERATOR,
            argv=["runbook", "serve", "(alert)", *names],
        )
        report["diagnosis"] = diagnosis.as_json()
        if not diagnosis.matches:
            report["summary"] = "diagnosis found nothing"
            return report
        match = diagnosis.matches[0]
        report["dry_run"] = self._dry_run(match.procedure, match.params, args, incident)
        report["summary"] = (
            f"{match.procedure} ranked first; dry-run exit {report['dry_run'].get('exit_code')}, "
            f"transcript {report['dry_run'].get('transcript')}"
        )
        add_note(
            self.config.transcripts_dir,
            incident,
            f"runbook serve: diagnosis ranks {match.procedure} first; rehearsed as a dry-run "
            f"(exit {report['dry_run'].get('exit_code')}); next: {diagnosis.as_json()['ranked'][0]['command']}",
            operator=OPERATOR,
        )
        return report

    def _dry_run(self, procedure: str, params: dict[str, Any], args: list[str], incident: str) -> dict[str, Any]:
        argv = [sys.executable, "-m", "engine.cli", "run", procedure, *args, "--dry-run", "--yes", "--json"]
        for name, value in params.items():
            argv += ["--var", f"{name}={value}"]
        argv += ["--incident", incident, "--operator", OPERATOR, "--transcripts-dir", str(self.config.transcripts_dir)]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.config.run_timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            return {"procedure": procedure, "exit_code": None, "error": f"timed out after {self.config.run_timeout}s"}
        result: dict[str, Any] = {"procedure": procedure, "exit_code": proc.returncode, "params": params}
        lines = proc.stdout.strip().splitlines()
        try:
            data = json.loads(lines[-1]) if lines else {}
            result["transcript"] = data.get("transcript")
            result["outcome"] = data.get("outcome")
        except (ValueError, RecursionError, AttributeError):
            result["error"] = (proc.stderr or proc.stdout)[-2000:]
        return result

    def _write_report(self, incident: str, report: dict[str, Any]) -> None:
        """incidents/<id>/triage.json, replaced atomically: a reader sees the whole report or none."""
        from engine.timeline.incident import notes_path

        path = notes_path(self.config.transcripts_dir, incident).with_name(TRIAGE_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(TRIAGE_FILE + ".partial")
        partial.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(partial, path)


def make_handler(config: ServeConfig, triage: Triage, limit: RateLimit) -> type[BaseHTTPRequestHandler]:
    expected = f"Bearer {config.token}".encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "runbook-serve"
        sys_version = ""
        timeout = 10  # a client that stops sending mid-body is dropped, not waited for

        def _reply(self, status: int, body: dict[str, Any], close: bool = False) -> None:
            data = (json.dumps(body) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="runbook"')
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._reply(200, {"status": "ok"})
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            if not limit.allow():
                self._reply(429, {"error": "too many requests"}, close=True)
                return
            given = self.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                self._reply(401, {"error": "a valid bearer token is required"}, close=True)
                return
            if self.path != PATH:
                self._reply(404, {"error": f"POST {PATH}"}, close=True)
                return
            length_text = self.headers.get("Content-Length")
            if length_text is None or not length_text.isdigit():
                self._reply(411, {"error": "Content-Length required"}, close=True)
                return
            length = int(length_text)
            if length > config.max_body:
                self._reply(413, {"error": f"payload over {config.max_body} bytes"}, close=True)
                return
            try:
                body = self.rfile.read(length)
            except OSError:
                self.close_connection = True
                return
            if len(body) != length:
                self._reply(400, {"error": "body shorter than Content-Length"}, close=True)
                return
            try:
                notification = webhook.parse(body)
            except webhook.BadPayload as exc:
                self._reply(400, {"error": f"not an Alertmanager notification: {exc}"})
                return
            self._reply(202, triage.submit(notification))

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"runbook serve: {self.address_string()} {format % args}\n")

    return Handler


class Server:
    """The HTTP server and its triage worker, for the CLI and for tests (port 0 picks a free one)."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.triage = Triage(config)
        handler = make_handler(config, self.triage, RateLimit(config.rate, config.burst))
        try:
            self.httpd = ThreadingHTTPServer((config.host, config.port), handler)
        except OSError as exc:
            self.triage.stop()
            raise UsageError(f"--listen {config.host}:{config.port}: {exc.strerror}") from None
        self.httpd.daemon_threads = True

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.triage.stop()


def run_server(config: ServeConfig) -> None:
    from engine.targets import load_inventory

    load_inventory(config.inventory)  # a bad inventory is exit 2 now, not a failed triage later
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # leave serve_forever; the queued triages finish before the exit

    signal.signal(signal.SIGTERM, stop)
    server = Server(config)
    host, port = server.address
    print(f"runbook serve: listening on http://{host}:{port}{PATH} (dry-run only)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.shutdown()
