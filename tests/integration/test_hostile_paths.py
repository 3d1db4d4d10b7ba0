"""Files the engine writes outside exports: timeline output, notes, transcripts. A planted symlink is never
followed, and the file it points to is never touched."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from engine.adapters.http import MAX_BODY, request
from engine.spec.model import Effect
from tests.integration.cli_support import runbook


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


def _note(tmp_path, *extra):
    return runbook("note", "alert fired", "--incident", "INC-9", "--transcripts-dir", str(tmp_path / "t"), *extra)


def test_timeline_output_through_a_planted_symlink_is_refused(tmp_path, victim):
    assert _note(tmp_path).code == 0
    for name in ("timeline.md", "timeline.html", "timeline.json"):
        out = tmp_path / name
        out.symlink_to(victim)
        result = runbook("timeline", "--incident", "INC-9", "--transcripts-dir", str(tmp_path / "t"), "-o", str(out))
        assert result.code == 2, result.output
        assert "Traceback" not in result.output
        assert victim.read_text() == "precious\n" and out.is_symlink()


def test_timeline_output_replaces_a_regular_file_whole(tmp_path):
    assert _note(tmp_path).code == 0
    out = tmp_path / "timeline.md"
    out.write_text("old")
    result = runbook("timeline", "--incident", "INC-9", "--transcripts-dir", str(tmp_path / "t"), "-o", str(out))
    assert result.code == 0, result.output
    assert "alert fired" in out.read_text() and not out.is_symlink()


def test_a_notes_file_that_is_a_symlink_is_never_written_through(tmp_path, victim):
    notes = tmp_path / "t" / "incidents" / "INC-9" / "notes.jsonl"
    notes.parent.mkdir(parents=True)
    notes.symlink_to(victim)
    result = _note(tmp_path)
    assert result.code != 0 and "Traceback" not in result.output
    assert victim.read_text() == "precious\n"


def test_a_transcript_path_that_is_a_symlink_is_refused(redis_server, tmp_path, victim):
    server = redis_server()
    link = tmp_path / "run.jsonl"
    link.symlink_to(victim)
    result = runbook("run", "redis/health-check", "--redis", server.url, "--transcript", str(link))
    assert result.code == 2, result.output
    assert victim.read_text() == "precious\n"
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nowhere.jsonl")
    result = runbook("run", "redis/health-check", "--redis", server.url, "--transcript", str(dangling))
    assert result.code == 2, result.output
    assert not (tmp_path / "nowhere.jsonl").exists()


class _Hostile(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("body", [b"[" * 100_000, b"x" * (MAX_BODY + 10)])
def test_a_hostile_health_endpoint_gives_text_not_a_crash(body):
    handler = type("Handler", (_Hostile,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/health"
        result = request("GET", url, timeout=30, effect=Effect.READ, allow_mutation=False)
    finally:
        server.shutdown()
    assert result["json"] is None and len(result["text"]) <= 4096
    json.dumps(result)
