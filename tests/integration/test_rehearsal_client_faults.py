"""The client faults troubleshoot-connection's scenarios rely on, against a real redis-server.

`fill_clients` must leave the server full to the last connection (the next client refused, the held ones
still served) and `blocked_client` with a `count` must block that many workers; both are released at
teardown.
"""

from __future__ import annotations

import pytest
import redis

from engine.rehearsal import faults
from engine.rehearsal.world import World, WorldSpec


def test_fill_clients_holds_every_connection_maxclients_allows():
    world = World.start(WorldSpec(ssh=False, http=False, config={"maxclients": "12"}))
    try:
        faults.apply(world, {"fill_clients": {"name": "leaky-pool"}})
        assert world.vars["maxclients"] == 12
        assert world.vars["filled_clients"] == 12  # nothing else holds a connection in this world
        with pytest.raises(redis.ConnectionError, match="max number of clients reached"), world.client() as client:
            client.ping()
    finally:
        world.stop()


def test_blocked_client_blocks_count_workers_until_teardown():
    world = World.start(WorldSpec(ssh=False, http=False))
    try:
        faults.apply(world, {"blocked_client": {"name": "queue-worker", "count": 5}})
        assert world.vars["blocked_clients"] == 5
        with world.client() as client:
            workers = [c for c in client.client_list() if c.get("name") == "queue-worker"]
        assert len(workers) == 5 and all("b" in c["flags"] for c in workers)
    finally:
        world.stop()
