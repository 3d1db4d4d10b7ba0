"""Faults of a standalone world that need a real server to show they inject what they say."""

from __future__ import annotations

import os
import time

import pytest

from engine.rehearsal import faults
from engine.rehearsal.world import World, WorldSpec
from tests.conftest import require_binary


@pytest.fixture(autouse=True)
def _binaries():
    require_binary("redis-server")


def test_failed_logins_leave_one_acl_log_entry_each_up_to_acllog_max_len():
    world = World.start(WorldSpec(password=True, ssh=False, http=False, config={"acllog-max-len": "1050"}))
    try:
        faults.apply(world, {"failed_logins": {"count": 1100}})
        assert world.vars["failed_logins"] == 1100 and world.vars["acl_log_entries"] == 1050
        with world.client() as client:
            log = client.execute_command("ACL", "LOG", 2000)
            assert client.ping()  # the attack's connection did not take the server's auth away
        assert len(log) == 1050
        assert {entry["reason"] for entry in log} == {"auth"}
        assert len({entry["username"] for entry in log}) == 1050  # one entry per user name tried
    finally:
        world.stop()


def test_file_size_limit_makes_a_bigger_save_fail_and_leaves_the_server_up():
    world = World.start(WorldSpec(ssh=False, http=False))
    try:
        with world.client() as client:
            value = os.urandom(100_000).hex()  # random: LZF cannot shrink the dump under 64 KiB
            client.set("big", value)
            saves = int(client.info("persistence")["rdb_saves"])
        faults.apply(world, {"file_size_limit": {"bytes": 65536}})
        assert world.vars["file_size_limit"] == 65536
        with world.client() as client:
            client.bgsave()
            deadline = time.monotonic() + 60  # a safety net: the child dies at its first write past the limit
            while int(client.info("persistence")["rdb_bgsave_in_progress"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            persistence = client.info("persistence")
            assert persistence["rdb_last_bgsave_status"] == "err" and int(persistence["rdb_saves"]) == saves + 1
            assert client.ping() and client.get("big") == value
    finally:
        world.stop()
