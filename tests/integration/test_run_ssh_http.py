"""ssh and http steps against a real OpenSSH sshd on a loopback address and a real HTTP server."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.sandbox.sshd import install_redis_service, inventory_for, write_inventory
from engine.transcript.verify import verify_transcript
from tests.integration.cli_support import events, of_type, runbook, transcript_path

PROCEDURE = """\
id: test/ssh-probe
title: SSH probe
section: test
description: runs commands on the target host
requires: [ssh, http]
params:
  word:
    type: string
    default: "a b;echo INJECTED"
steps:
  - id: uname
    name: Who is the host
    effect: read
    ssh:
      run: "echo host-says-{{ word }}; echo err-line >&2"
    register: out
    show: "{{ out.lines[0] }}"
    expect:
      - that: out.exit_status == 0
        message: the command failed
  - id: status
    name: Service status
    effect: read
    ssh:
      run: "{{ service.status }}"
      check: false
    register: status
    expect:
      - that: "'running' in status.stdout"
        message: Redis is not running
  - id: health
    name: SomaBrain health
    http:
      path: /health
    register: health
    expect:
      - that: health.status == 200 and health.json.redis == "ok"
        message: SomaBrain cannot reach Redis
  - id: touch
    name: Write a marker file
    ssh:
      run: "touch {{ paths.data_dir }}/marker-{{ word }}"
    confirm: Create a marker file on the host?
"""


@pytest.fixture
def http_base(health_endpoint):
    return health_endpoint().base_url


@pytest.fixture
def world(redis_server, sshd_host, http_base, tmp_path):
    redis = redis_server()
    host = sshd_host()
    service = install_redis_service(host, redis)
    procedure = tmp_path / "probe.yaml"
    procedure.write_text(PROCEDURE)
    return redis, host, service, procedure, http_base


def _inventory(tmp_path: Path, redis, host, service, http_base, known_hosts: Path | None = None, **kwargs) -> Path:
    data = inventory_for(redis, host, service, http_base_url=http_base, **kwargs)
    if known_hosts is not None:
        data["environments"]["sandbox"]["targets"]["sandbox"]["ssh"]["known_hosts"] = str(known_hosts)
    return write_inventory(tmp_path / "inventory.yaml", data)


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


def test_ssh_and_http_steps_capture_output_and_quote_values(world, tmp_path):
    redis, host, service, procedure, http_base = world
    inventory = _inventory(tmp_path, redis, host, service, http_base)
    result = _run(procedure, inventory, tmp_path, "--yes", "--json")
    assert result.code == 0, result.output
    steps = {s["id"]: s for s in result.json()["steps"]}
    # the param's shell metacharacters arrived as one quoted word: no second command ran
    assert steps["uname"]["result"]["stdout"] == "host-says-a b;echo INJECTED\n"
    assert steps["uname"]["result"]["stderr"] == "err-line\n"
    assert "running" in steps["status"]["result"]["stdout"]
    assert steps["health"]["result"]["json"] == {"status": "ok", "redis": "ok"}
    assert (redis.directory / "marker-a b;echo INJECTED").exists()
    path = transcript_path(result)
    evts = events(path)
    output = of_type(evts, "step.output")[0]
    assert "host-says-a b;echo INJECTED" in output["output"] and "err-line" in output["output"]
    started = next(e for e in of_type(evts, "step.started") if e["step"]["id"] == "touch")
    assert started["effect"] == "destructive" and started["where"] == f"ssh {host.user}@{host.address}:{host.port}"
    assert "'a b;echo INJECTED'" in started["command"]
    assert verify_transcript(path).ok


def test_ssh_write_is_refused_in_dry_run(world, tmp_path):
    redis, host, service, procedure, http_base = world
    inventory = _inventory(tmp_path, redis, host, service, http_base)
    result = _run(procedure, inventory, tmp_path, "--dry-run")
    assert result.code == 0, result.output
    assert not list(redis.directory.glob("marker-*"))
    touch = next(e for e in of_type(events(transcript_path(result)), "step.finished") if e["step"]["id"] == "touch")
    assert touch["outcome"] == "predicted"


def test_unknown_host_key_is_refused(world, tmp_path):
    redis, host, service, procedure, http_base = world
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    inventory = _inventory(tmp_path, redis, host, service, http_base, known_hosts=empty)
    result = _run(procedure, inventory, tmp_path, "--yes")
    assert result.code == 4, result.output
    assert "is not in" in result.output and "refusing to connect" in result.output
    assert empty.read_text() == ""


def test_changed_host_key_is_refused_even_with_accept_new(world, tmp_path):
    redis, host, service, procedure, http_base = world
    other = tmp_path / "other_known_hosts"
    # a different ed25519 key recorded for this host:port
    fake = "AAAAC3NzaC1lZDI1NTE5AAAAIHZhbGlkLWxvb2tpbmcta2V5LWZvci10ZXN0cy1vbmx5"
    other.write_text(f"[{host.address}]:{host.port} ssh-ed25519 {fake}\n")
    inventory = _inventory(tmp_path, redis, host, service, http_base, known_hosts=other, host_key_policy="accept-new")
    result = _run(procedure, inventory, tmp_path, "--yes")
    assert result.code == 4, result.output
    assert "CHANGED" in result.output


def test_accept_new_trusts_on_first_use_and_records_it(world, tmp_path):
    redis, host, service, procedure, http_base = world
    known = tmp_path / "tofu_known_hosts"
    inventory = _inventory(tmp_path, redis, host, service, http_base, known_hosts=known, host_key_policy="accept-new")
    result = _run(procedure, inventory, tmp_path, "--yes")
    assert result.code == 0, result.output
    accepted = of_type(events(transcript_path(result)), "host_key.accepted")
    assert len(accepted) == 1 and accepted[0]["policy"] == "accept-new"
    assert accepted[0]["host"] == f"[{host.address}]:{host.port}"
    assert host.host_public_key.split()[1] in known.read_text()
