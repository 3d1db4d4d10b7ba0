"""Hostile files against the real CLI and a real redis-server (issue 16, items 1, 3, 4 and 15).

Each class of input is generated here: a forged export that reaches into other tenants, symlinks
planted where the engine writes, and FIFOs, /dev/zero, directories and oversized files where it
reads. Every run has a subprocess timeout: a hang fails the test instead of blocking it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
import redis

from engine import fsutil
from engine.sandbox.seed import seed_somabrain
from engine.sandbox.sshd import inventory_for, write_inventory
from tests.integration.cli_support import events, of_type, runbook, transcript_path

TIMEOUT = 180  # generous for a busy machine; a hang is what it catches
GLOBEX = "tenant:globex:wm:active"
GLOBAL = "somabrain:global:config"
HEADER = "title: T\nsection: test\ndescription: test procedure\nrequires: [redis]\n"


@pytest.fixture
def seeded(redis_server):
    server = redis_server()
    seed_somabrain(server.client())
    server.client().hset(GLOBAL, mapping={"model": "v3", "owner": "platform"})
    return server


def run(server, tmp_path, procedure, *args, procedures: Path | None = None):
    extra = ("--procedures", str(procedures)) if procedures else ()
    return runbook(
        "run",
        procedure,
        "--redis",
        server.url,
        *extra,
        "--transcripts-dir",
        str(tmp_path / "transcripts"),
        "--json",
        *args,
        timeout=TIMEOUT,
    )


def export(server, tmp_path, tenant="acme") -> Path:
    out = tmp_path / f"export-{tenant}"
    out.mkdir()
    result = run(server, tmp_path, "redis/backup-tenant", "--var", f"tenant={tenant}", "--var", f"output={out}")
    assert result.code == 0, result.output
    (path,) = out.iterdir()
    return path


def forge(path: Path, extra: dict[str, bytes]) -> None:
    """Add key records to an export and recompute its counts and checksum, as an attacker would."""
    lines = path.read_bytes().splitlines(keepends=True)
    header, body = json.loads(lines[0]), lines[1:-1]
    for key, payload in extra.items():
        record = {"key": key, "type": "string", "pttl": -1, "dump": base64.b64encode(payload).decode()}
        body.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")
    header["keys"] = len(body)
    header["types"]["string"] = header["types"].get("string", 0) + len(extra)
    head = json.dumps(header, separators=(",", ":")).encode() + b"\n"
    digest = hashlib.sha256(head + b"".join(body)).hexdigest()
    trailer = json.dumps({"trailer": "runbook-keys", "keys": len(body), "sha256": digest}, separators=(",", ":"))
    path.write_bytes(head + b"".join(body) + trailer.encode() + b"\n")


def hostile_payload(server) -> bytes:
    raw = redis.Redis(host=server.host, port=server.port)
    raw.set("scratch", "owned by the attacker")
    payload = raw.dump("scratch")
    raw.delete("scratch")
    return payload


def snapshot(client, *keys) -> dict:
    return {k: (client.type(k), client.dump(k)) for k in keys}


def started_steps(result) -> list[str]:
    return [e["step"]["id"] for e in of_type(events(transcript_path(result)), "step.started")]


# -- item 1: a restore writes only inside its tenant ----------------------------------------------
def test_a_forged_export_reaching_into_other_tenants_restores_nothing(seeded, tmp_path):
    client = seeded.client()
    path = export(seeded, tmp_path)
    forge(path, {GLOBEX: hostile_payload(seeded), GLOBAL: hostile_payload(seeded)})
    raw = redis.Redis(host=seeded.host, port=seeded.port)
    before = snapshot(raw, GLOBEX, GLOBAL, "tenant:acme:wm:active")
    client.hset("tenant:acme:wm:active", "goal", "changed since the export")
    changed = snapshot(raw, "tenant:acme:wm:active")

    result = run(seeded, tmp_path, "redis/restore-tenant", "--var", f"input={path}", "--var", "tenant=acme",
                 "--var", "replace=true", "--yes")  # fmt: skip
    assert result.code == 1, result.output  # the inspect step's expectation: the file is not honest
    assert "outside tenant:acme:*" in result.output and "globex: 1" in result.output
    assert "(none): 1" in result.output  # somabrain:global:config, counted under no tenant
    assert snapshot(raw, GLOBEX, GLOBAL) == {k: before[k] for k in (GLOBEX, GLOBAL)}
    assert snapshot(raw, "tenant:acme:wm:active") == changed  # not even the tenant's own keys
    assert "restore" not in started_steps(result)


def test_the_import_step_itself_refuses_before_the_gate(seeded, tmp_path):
    """Without an inspect step in front, the import refuses at planning: exit 2, no approval asked."""
    path = export(seeded, tmp_path)
    forge(path, {GLOBEX: hostile_payload(seeded)})
    procedures = tmp_path / "procedures"
    procedures.mkdir()
    (procedures / "restore.yaml").write_text(
        f"id: test/restore\n{HEADER}steps:\n  - id: restore\n    name: Restore\n"
        f"    tenant_data: {{import: {{input: '{path}', replace: true}}}}\n    confirm: Restore?\n"
    )
    raw = redis.Redis(host=seeded.host, port=seeded.port)
    before = snapshot(raw, GLOBEX)
    result = run(seeded, tmp_path, "test/restore", "--yes", procedures=procedures)
    assert result.code == 2, result.output
    assert "1 of its 32 keys lie outside tenant:acme:*" in result.output and "nothing restored" in result.output
    assert snapshot(raw, GLOBEX) == before
    assert not of_type(events(transcript_path(result)), "approval.requested")


def test_an_honest_export_of_another_tenant_is_refused(seeded, tmp_path):
    client = seeded.client()
    path = export(seeded, tmp_path, tenant="globex")
    globex = sorted(client.scan_iter("tenant:globex:*"))
    client.delete(*globex)
    acme = snapshot(client, *client.scan_iter("tenant:acme:*"))
    result = run(seeded, tmp_path, "redis/restore-tenant", "--var", f"input={path}", "--var", "tenant=acme",
                 "--var", "replace=true", "--yes")  # fmt: skip
    assert result.code == 2, result.output
    assert f"{len(globex)} of its {len(globex)} keys lie outside tenant:globex:* and tenant:acme:*" in result.output
    assert not list(client.scan_iter("tenant:globex:*"))  # nothing restored
    assert snapshot(client, *acme) == acme
    assert not of_type(events(transcript_path(result)), "approval.requested")


def test_the_blast_radius_counts_every_key_by_tenant(seeded, tmp_path):
    client = seeded.client()
    path = export(seeded, tmp_path)
    client.delete("tenant:acme:cache:1")
    result = run(seeded, tmp_path, "redis/restore-tenant", "--var", f"input={path}", "--var", "tenant=acme",
                 "--var", "replace=true", "--dry-run")  # fmt: skip
    assert result.code == 0, result.output
    (started,) = [e for e in of_type(events(transcript_path(result)), "step.finished") if e["step"]["id"] == "restore"]
    blast = started["blast_radius"]
    assert blast["by_tenant"] == {"acme": 31} and blast["existing_by_tenant"] == {"acme": 30}
    assert blast["scope"] == ["tenant:acme:*"]


# -- item 3 and 15: files the engine writes --------------------------------------------------------
@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
def test_an_export_never_writes_through_a_symlink_at_its_output(seeded, tmp_path, dry_run):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "out" / "acme.keys.jsonl"
    link.parent.mkdir()
    link.symlink_to(victim)
    args = ("--var", "tenant=acme", "--var", f"output={link}", *(("--dry-run",) if dry_run else ()))
    result = run(seeded, tmp_path, "redis/backup-tenant", *args)
    assert result.code == 2, result.output
    assert "exists already" in result.output and "never overwrites" in result.output
    assert victim.read_text() == "precious" and link.is_symlink()
    assert sorted(p.name for p in link.parent.iterdir()) == ["acme.keys.jsonl"]  # no temp file left


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("nodir/", "names a directory that does not exist"),
        ("missing/acme.keys.jsonl", "does not exist: create it first"),
        ("nodir", "neither an existing directory nor a file name ending in .jsonl"),
    ],
)
def test_an_export_to_a_directory_that_does_not_exist_is_refused(seeded, tmp_path, output, message):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = runbook(
        "run", "redis/backup-tenant", "--redis", seeded.url, "--transcripts-dir", str(tmp_path / "t"),
        "--var", "tenant=acme", "--var", f"output={output}", cwd=cwd, timeout=TIMEOUT,
    )  # fmt: skip
    assert result.code == 2, result.output
    assert message in result.output
    assert list(cwd.iterdir()) == []


def test_a_local_write_never_writes_through_a_symlink(seeded, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "password"
    link.symlink_to(victim)
    procedures = tmp_path / "procedures"
    procedures.mkdir()
    (procedures / "w.yaml").write_text(
        f"id: test/w\n{HEADER}steps:\n  - id: write\n    name: Write\n"
        f"    local: {{write: {{path: '{link}', content: new-secret}}}}\n    confirm: Write?\n"
    )
    result = run(seeded, tmp_path, "test/w", "--yes", procedures=procedures)
    assert result.code == 2, result.output
    assert "is a symbolic link: refusing to write through or replace it" in result.output
    assert victim.read_text() == "precious" and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# -- item 4: files the engine reads ----------------------------------------------------------------
def hostile_input(kind: str, tmp_path: Path, suffix: str, cap: int | None) -> str:
    """A path of the given kind: a FIFO with no writer, /dev/zero, a directory, a sparse oversized file."""
    if kind == "dev-zero":
        return "/dev/zero"
    path = tmp_path / f"hostile-{kind}{suffix}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        assert cap is not None
        with open(path, "wb") as fh:
            fh.truncate(cap + 1)  # sparse: no disk used
    return str(path)


KINDS = ["fifo", "dev-zero", "directory", "oversized"]
WHY = {
    "fifo": "is a FIFO (named pipe), not a regular file",
    "dev-zero": "is a character device, not a regular file",
    "directory": "is a directory, not a regular file",
    "oversized": "allowed",
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_hostile_restore_input_is_refused(seeded, tmp_path, kind):
    path = hostile_input(kind, tmp_path, ".keys.jsonl", fsutil.KEY_EXPORT_MAX_BYTES)
    result = run(seeded, tmp_path, "redis/restore-tenant", "--var", f"input={path}", "--var", "tenant=acme", "--yes")
    assert result.code == 2, result.output
    assert WHY[kind] in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("kind", KINDS)
def test_a_hostile_config_baseline_is_refused(seeded, tmp_path, kind):
    path = hostile_input(kind, tmp_path, ".yaml", fsutil.LOCAL_READ_MAX_BYTES)
    result = run(seeded, tmp_path, "redis/config-show", "--var", f"baseline={path}")
    assert result.code == 2, result.output
    assert WHY[kind] in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("kind", KINDS)
def test_a_hostile_password_file_is_refused(redis_server, tmp_path, kind):
    server = redis_server()
    path = hostile_input(kind, tmp_path, ".pass", fsutil.PASSWORD_FILE_MAX_BYTES)
    inventory = write_inventory(tmp_path / "inv.yaml", inventory_for(server, None, None, password_file=Path(path)))
    result = runbook(
        "run", "redis/health-check", "--inventory", str(inventory), "--target", "sandbox",
        "--transcripts-dir", str(tmp_path / "t"), timeout=TIMEOUT,
    )  # fmt: skip
    assert result.code == 2, result.output
    assert "cannot read password_file" in result.output and WHY[kind] in result.output


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_hostile_rdb_to_verify_is_refused(seeded, tmp_path, kind):
    path = hostile_input(kind, tmp_path, ".rdb", None)
    result = run(seeded, tmp_path, "redis/backup-verify", "--var", f"path={path}")
    assert result.code == 2, result.output
    assert WHY[kind] in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("mode", "warned"), [(0o644, True), (0o640, True), (0o604, True), (0o620, True), (0o600, False), (0o400, False)]
)
def test_a_password_file_readable_by_others_gets_a_warning_never_the_content(redis_server, tmp_path, mode, warned):
    server = redis_server(password="s3cret-Pa55-for-the-test")
    path = tmp_path / "redis.pass"
    path.write_text(server.password)
    path.chmod(mode)
    inventory = write_inventory(tmp_path / "inv.yaml", inventory_for(server, None, None, password_file=path))
    result = runbook(
        "run", "redis/health-check", "--inventory", str(inventory), "--target", "sandbox",
        "--transcripts-dir", str(tmp_path / "t"), timeout=TIMEOUT,
    )  # fmt: skip
    assert result.code in (0, 1), result.output  # it ran: the warning does not stop it
    assert ("can be read or changed by other users" in result.stderr) is warned
    if warned:
        assert f"mode {mode:o}" in result.stderr and f"chmod 600 {path}" in result.stderr
    assert server.password not in result.output
