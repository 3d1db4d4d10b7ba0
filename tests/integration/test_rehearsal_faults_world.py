"""Faults of a standalone world that need a real server to show they inject what they say."""

from __future__ import annotations

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
