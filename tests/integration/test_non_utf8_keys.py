"""Key names that are not UTF-8 (a buggy or hostile writer): read, shown escaped, exported and restored byte
for byte; never an internal error."""

from __future__ import annotations

import pytest

from engine.transcript.verify import verify_transcript
from tests.integration.cli_support import runbook, transcript_path

BAD_KEYS = [b"tenant:acme:wm:\xff\xfe", b"tenant:acme:wm:\xc3(", b"tenant:acme:cache:\x80\x1b[5m", b"odd:\xed\xa0\x80"]


@pytest.fixture
def server(redis_server):
    server = redis_server()
    client = server.client(decode_responses=False)
    for i, key in enumerate(BAD_KEYS):
        client.set(key, b"value-%d" % i)
    client.set(b"tenant:acme:wm:fine", b"v", ex=3600)
    return server


def _run(server, tmp_path, procedure, *args):
    return runbook("run", procedure, "--redis", server.url, "--transcripts-dir", str(tmp_path / "t"), "--json", *args)


@pytest.mark.parametrize("procedure", ["redis/audit-ttl", "redis/memory-report", "redis/wm-list", "redis/health-check"])
def test_reads_over_non_utf8_keys_end_normally(server, tmp_path, procedure):
    result = _run(server, tmp_path, procedure)
    assert result.code in (0, 1), result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert "\x1b[5m" not in result.stderr  # shown escaped, never raw on a terminal-bound stream
    assert verify_transcript(transcript_path(result)).ok


def test_a_tenant_export_and_restore_keep_non_utf8_names_byte_for_byte(server, tmp_path):
    out = tmp_path / "exports"
    out.mkdir()
    exported = _run(server, tmp_path, "redis/backup-tenant", "--var", "tenant=acme", "--var", f"output={out}", "--yes")
    assert exported.code == 0, exported.output
    (export,) = out.iterdir()
    client = server.client(decode_responses=False)
    acme = sorted(k for k in client.keys(b"tenant:acme:*"))
    before = {k: client.get(k) for k in acme}
    client.delete(*acme)
    restored = _run(
        server, tmp_path, "redis/restore-tenant", "--var", f"input={export}", "--var", "tenant=acme", "--yes"
    )
    assert restored.code == 0, restored.output
    assert {k: client.get(k) for k in client.keys(b"tenant:acme:*")} == before
    assert client.get(b"odd:\xed\xa0\x80") == b"value-3"  # outside the tenant: untouched
