"""`effect: read` on an ssh step is proven from the command, against a real OpenSSH sshd.

The broken input of issue 12: an ssh step labelled `read` whose command copies a file over
dump.rdb ran for real in a dry-run and without the gate in a real run. Here the label is rejected by
`validate` when the command is written out; when the command only appears at run time (inventory
shell text reaching the step through a template), the dry-run does not run it, the SSH adapter
refuses it itself, and a real run puts it before the gate as a write.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.adapters.ssh import SshAdapter
from engine.errors import MutationRefused
from engine.sandbox.sshd import install_redis_service, inventory_for, write_inventory
from engine.spec.model import Effect
from engine.steps.local_step import write_file
from engine.targets import ServiceCommands, SshEndpoint
from tests.integration.cli_support import events, of_type, runbook, transcript_path

ORIGINAL = b"REDIS0011-the-dump-as-it-was"
EVIL = b"REDIS0011-what-the-copy-would-put-there"

LITERAL = """\
id: test/read-that-copies
title: A read that copies
section: test
description: an ssh step mislabelled read
requires: [ssh]
steps:
  - id: copy
    name: Look at the dump
    effect: read
    ssh:
      run: "cp {evil} {dump}"
"""

# Inventory shell text reaching a step through `item`: `validate` sees one quoted word, run time
# sees the real command.
SMUGGLED = """\
id: test/read-that-copies-at-run-time
title: A read that copies at run time
section: test
description: an ssh step labelled read whose rendered command copies
requires: [ssh]
steps:
  - id: copy
    name: Print the restart command
    effect: read
    foreach: "{{ [service.restart] }}"
    ssh:
      run: "echo {{ item }}"
    register: printed
  - id: after
    name: Still reads afterwards
    effect: read
    ssh:
      run: "cat -- {{ paths.rdb }} | wc -c"
"""

LOCAL = """\
id: test/local-read-that-writes
title: A local read that writes
section: test
description: a local write mislabelled read
steps:
  - id: copy
    name: Look at the dump
    effect: read
    local:
      write: {{path: "{dump}", content: "evil"}}
"""


@dataclass(frozen=True)
class World:
    host: Any
    service: Any
    dump: Path
    evil: Path
    inventory: Path


@pytest.fixture
def host_world(redis_server, sshd_host, tmp_path):
    redis = redis_server()
    host = sshd_host()
    service = install_redis_service(host, redis)
    dump = Path(service.rdb_path)
    dump.write_bytes(ORIGINAL)
    evil = tmp_path / "evil.rdb"
    evil.write_bytes(EVIL)
    data = inventory_for(redis, host, service)
    facet = data["environments"]["sandbox"]["targets"]["sandbox"]["ssh"]
    facet["service"]["restart"] = f"sync; cp {evil} {dump}"  # shell text with a write after an operator
    inventory = write_inventory(tmp_path / "inventory.yaml", data)
    return World(host, service, dump, evil, inventory)


def _run(procedure: Path, inventory: Path, tmp_path: Path, *args: str):
    return runbook(
        "run",
        str(procedure),
        "--inventory",
        str(inventory),
        "--target",
        "sandbox",
        "--transcripts-dir",
        str(tmp_path / "t"),
        *args,
    )


def _step(result, step_id: str, kind: str = "step.finished") -> dict:
    return next(e for e in of_type(events(transcript_path(result)), kind) if e["step"]["id"] == step_id)


def test_cp_over_dump_labelled_read_is_rejected_by_validate(host_world, tmp_path):
    w = host_world
    procedure = tmp_path / "copy.yaml"
    procedure.write_text(LITERAL.format(evil=w.evil, dump=w.dump))
    result = runbook("validate", str(procedure))
    assert result.code == 2, result.output
    line = LITERAL.splitlines().index('      run: "cp {evil} {dump}"') + 1
    assert f"{procedure}:{line}:7: steps[0].ssh.run: effect: read, but 'cp' is not a read-only program" in (
        result.output
    )
    for args in (["--dry-run"], ["--yes"]):
        ran = _run(procedure, w.inventory, tmp_path, *args)
        assert ran.code == 2, ran.output
        assert "'cp' is not a read-only program" in ran.output
    assert w.dump.read_bytes() == ORIGINAL


def test_a_template_that_renders_a_copy_is_not_run_in_a_dry_run(host_world, tmp_path):
    w = host_world
    procedure = tmp_path / "smuggled.yaml"
    procedure.write_text(SMUGGLED)
    assert runbook("validate", str(procedure)).code == 0  # one quoted word as far as validate can see
    result = _run(procedure, w.inventory, tmp_path, "--dry-run")
    assert result.code == 0, result.output
    assert w.dump.read_bytes() == ORIGINAL
    started = _step(result, "copy", "step.started")
    assert started["effect"] == "write" and started["command"] == f"echo sync; cp {w.evil} {w.dump}"
    assert _step(result, "copy")["outcome"] == "predicted"
    assert _step(result, "after")["outcome"] == "ok"  # proven reads still run in the dry-run


def test_a_template_that_renders_a_copy_is_gated_in_a_real_run(host_world, tmp_path):
    w = host_world
    procedure = tmp_path / "smuggled.yaml"
    procedure.write_text(SMUGGLED)
    refused = _run(procedure, w.inventory, tmp_path)  # nobody at the terminal to approve it
    assert refused.code == 3, refused.output
    assert w.dump.read_bytes() == ORIGINAL
    asked = _step(refused, "copy", "approval.requested")
    assert asked["effect"] == "write"
    assert "effect: read, but 'cp' is not a read-only program" in asked["blast_radius"]["not_read_only"]
    assert _step(refused, "copy")["outcome"] == "refused"

    approved = _run(procedure, w.inventory, tmp_path, "--yes")
    assert approved.code == 0, approved.output
    assert _step(approved, "copy", "approval.given")["method"]
    assert w.dump.read_bytes() == EVIL  # it was a change, and it ran only once approved


def test_the_ssh_adapter_refuses_what_is_not_proven_read_only(host_world):
    w = host_world
    endpoint = SshEndpoint(
        host=w.host.address,
        port=w.host.port,
        user=w.host.user,
        key_file=str(w.host.key_file),
        known_hosts=str(w.host.known_hosts),
        service=ServiceCommands(status=w.service.status, logs=w.service.logs),
    )
    copy = f"cp {w.evil} {w.dump}"
    dry = SshAdapter(endpoint, allow_mutation=False)
    try:
        for effect in Effect:  # whatever label the caller gives it
            with pytest.raises(MutationRefused, match=r"'cp' is not a read-only program|refused to run a \w+ command"):
                dry.run(copy, effect=effect)
        with pytest.raises(MutationRefused, match="output redirection '>' writes a file"):
            dry.run(f"cat {w.evil} > {w.dump}", effect=Effect.READ)
        assert w.dump.read_bytes() == ORIGINAL
        assert dry.run(f"cat -- {w.dump}", effect=Effect.READ).stdout == ORIGINAL.decode()
        assert dry.run(w.service.status, effect=Effect.READ).exit_status == 0  # the inventory's: read by contract
    finally:
        dry.close()
    real = SshAdapter(endpoint, allow_mutation=True)
    try:
        with pytest.raises(MutationRefused, match="labelled read that is not proven read-only"):
            real.run(copy, effect=Effect.READ)
        assert w.dump.read_bytes() == ORIGINAL
        assert real.run(copy, effect=Effect.WRITE).exit_status == 0  # declared a change (and gated upstream)
        assert w.dump.read_bytes() == EVIL
    finally:
        real.close()


def test_local_write_labelled_read_is_rejected_and_refused_in_a_dry_run(host_world, tmp_path):
    w = host_world
    procedure = tmp_path / "local.yaml"
    procedure.write_text(LOCAL.format(dump=w.dump))
    result = runbook("validate", str(procedure))
    assert result.code == 2, result.output
    assert "steps[0].effect: declared 'read' but this local step is write" in result.output
    with pytest.raises(MutationRefused, match="dry-run: refused to write"):
        write_file(w.dump, "evil", 0o600, allow_mutation=False)
    assert w.dump.read_bytes() == ORIGINAL


def test_a_commands_whole_output_is_read_even_past_its_exit_status(host_world):
    """sshd may send the exit status before the last of the output it still reads from the command's pipes;
    the output is whole at the channel's EOF. A command that leaves a process holding its pipes never sends
    one: its output is still returned, EOF_GRACE_S after the exit status, not at the command's timeout."""
    from engine.adapters import ssh as ssh_adapter

    w = host_world
    endpoint = SshEndpoint(
        host=w.host.address, port=w.host.port, user=w.host.user,
        key_file=str(w.host.key_file), known_hosts=str(w.host.known_hosts),
    )  # fmt: skip
    adapter = SshAdapter(endpoint, allow_mutation=True)
    try:
        for _ in range(5):  # a burst at the very end, as a df after a few lines of wc
            done = adapter.run("head -c 3000000 /dev/zero | tr '\\0' x; echo; echo END", effect=Effect.WRITE)
            assert done.exit_status == 0 and done.stdout == "x" * 3_000_000 + "\nEND\n"
        started = time.monotonic()
        held = adapter.run("sleep 20 & echo started", effect=Effect.WRITE, timeout=50)
        assert held.exit_status == 0 and held.stdout == "started\n"
        assert time.monotonic() - started < 50  # not the command's timeout: the grace after its exit status
        assert ssh_adapter.EOF_GRACE_S < 50
    finally:
        adapter.close()
