"""Per-node SSH: the inventory's ssh.nodes (read, merged, checked with file:line), the node's own host for a
node not listed, the `on:` rules of an ssh step, and the order of a rolling restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import UsageError
from engine.spec.loader import check_file
from engine.targets import load_inventory, target_from_inventory
from engine.topology.grade import restart_order

INVENTORY = """\
environments:
  prod:
    targets:
      cache:
        redis:
          sentinel: {addresses: ["10.0.0.9:26379"], master: somabrain}
        ssh:
          host: 10.0.0.1
          user: ops
          key_file: keys/ops
          service:
            restart: sudo systemctl restart redis-server
            status: systemctl is-active redis-server
          paths: {log: /var/log/redis/redis-server.log}
          nodes:
{nodes}
"""


def _inventory(tmp_path: Path, nodes: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY.replace("{nodes}", nodes))
    return path


def test_a_node_entry_is_read_over_the_target_settings(tmp_path: Path):
    path = _inventory(
        tmp_path,
        '            "127.0.0.1:7001": {host: 127.0.0.3, port: 2201, service: {restart: /opt/bin/svc restart}}\n'
        '            "10.0.0.2:6379": {paths: {log: /srv/redis.log}}\n',
    )
    ssh = target_from_inventory(load_inventory(path), "cache", environ={}).ssh
    assert ssh is not None
    listed = ssh.for_node("127.0.0.1:7001")
    assert (listed.host, listed.port, listed.user) == ("127.0.0.3", 2201, "ops")
    assert listed.key_file == str(tmp_path / "keys/ops")  # relative to the inventory, from the target's
    assert listed.service.restart == "/opt/bin/svc restart"
    assert listed.service.status == "systemctl is-active redis-server"  # merged one by one
    # an entry without host: the node's own host; paths merged
    own = ssh.for_node("10.0.0.2:6379")
    assert (own.host, own.port) == ("10.0.0.2", 22)
    assert own.paths == {"log": "/srv/redis.log"}
    # a node not listed: its own host, with the target's settings (production: one host per node)
    other = ssh.for_node("10.0.0.5:6380")
    assert (other.host, other.user, other.service.restart) == ("10.0.0.5", "ops", "sudo systemctl restart redis-server")
    assert other.nodes == {}


def test_the_transcript_names_each_nodes_host(tmp_path: Path):
    path = _inventory(tmp_path, '            "127.0.0.1:7001": {host: 127.0.0.3, port: 2201}\n')
    target = target_from_inventory(load_inventory(path), "cache", environ={})
    assert target.describe()["ssh_nodes"] == {"127.0.0.1:7001": "ops@127.0.0.3:2201"}


@pytest.mark.parametrize(
    ("nodes", "line", "message"),
    [
        ('            "cache-1": {host: 127.0.0.3}\n', 16, "'cache-1' is not a Redis node's HOST:PORT"),
        ('            "127.0.0.1:99999": {host: 127.0.0.3}\n', 16, "'127.0.0.1:99999' is not a Redis node's HOST:PORT"),
        (
            '            "127.0.0.1:7001": {host: 127.0.0.3}\n            "127.0.0.1:07001": {host: 127.0.0.4}\n',
            17,
            "the node '127.0.0.1:07001' is listed twice (also as '127.0.0.1:7001')",
        ),
        ('            "127.0.0.1:7001": {hots: 127.0.0.3}\n', 16, "unknown field 'hots'"),
    ],
)
def test_a_bad_node_entry_is_reported_with_its_file_and_line(tmp_path: Path, nodes: str, line: int, message: str):
    path = _inventory(tmp_path, nodes)
    with pytest.raises(UsageError) as caught:
        load_inventory(path)
    (error,) = caught.value.errors
    assert error.file == str(path) and error.line == line, error
    assert "ssh.nodes" in str(error) and message in str(error), error


PROCEDURE = """\
id: test/ssh-on
title: t
section: t
description: t
requires: [redis, ssh]
steps:
  - id: restart
    name: restart
    ssh:
{body}
    confirm: restart?
"""


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("      service: restart\n      on: node\n", 11, "on: node needs `node: HOST:PORT`"),
        ('      service: restart\n      node: "127.0.0.1:7001"\n', 11, "`node:` is only for on: node"),
        (
            '      run: "{{ service.restart }}"\n      on: node\n      node: "127.0.0.1:7001"\n',
            10,
            "with on:, {{ service.* }} and {{ paths.* }} name the target's own host",
        ),
        ("      run: uptime\n      service: status\n", 9, "exactly one of: run, service"),
    ],
)
def test_an_ssh_step_on_a_node_is_checked_before_it_runs(tmp_path: Path, body: str, line: int, message: str):
    path = tmp_path / "ssh-on.yaml"
    path.write_text(PROCEDURE.replace("{body}", body))
    _, errors, _ = check_file(path)
    assert any(e.line == line and message in str(e) for e in errors), errors


def test_a_valid_ssh_step_on_a_node():
    assert not check_file(Path("procedures/redis/rolling-restart.yaml"))[1]


def _topology(kind: str, nodes: list[tuple[str, str]]) -> dict:
    return {"kind": kind, "seed": nodes[0][0], "nodes": [{"address": a, "role": r} for a, r in nodes]}


def test_a_rolling_restart_goes_through_the_replicas_by_address_then_the_primary():
    topology = _topology(
        "sentinel",
        [
            ("10.0.0.10:6379", "primary"),
            ("10.0.0.9:6380", "replica"),
            ("10.0.0.10:6380", "replica"),
            ("10.0.0.9:10000", "replica"),
            ("redis-b.internal:6379", "replica"),
        ],
    )
    order = restart_order(topology)
    # numerically (10.0.0.9 before 10.0.0.10, port 6380 before 10000), names after addresses
    assert order["replicas"] == ["10.0.0.9:6380", "10.0.0.9:10000", "10.0.0.10:6380", "redis-b.internal:6379"]
    assert order["primary"] == "10.0.0.10:6379"
    assert order["order"] == [*order["replicas"], "10.0.0.10:6379"]


@pytest.mark.parametrize(
    "topology",
    [
        None,
        _topology("cluster", [("10.0.0.1:7000", "primary"), ("10.0.0.2:7000", "replica")]),
    ],
)
def test_no_rolling_order_without_a_primary_with_replicas(topology):
    assert restart_order(topology) == {"replicas": [], "primary": None, "order": []}


def test_two_primaries_give_no_primary_to_restart_last():
    order = restart_order(_topology("replicated", [("a:1", "primary"), ("b:1", "primary"), ("c:1", "replica")]))
    assert order["primary"] is None and order["order"] == ["c:1"]
