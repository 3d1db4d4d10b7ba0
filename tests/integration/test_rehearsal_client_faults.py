"""The client faults troubleshoot-connection's scenarios rely on, against a real redis-server.

`fill_clients` must leave the server full to the last connection (the next client refused, the held ones
still served) and `blocked_client` with a `count` must block that many workers; both are released at
teardown. `stalled_reader` (emergency-oom's) must hold its replies in memory that no eviction frees.
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


def test_stalled_reader_holds_its_replies_in_memory_no_eviction_frees():
    world = World.start(WorldSpec(ssh=False, http=False, config={"maxmemory": "8mb", "maxmemory-policy": "noeviction"}))
    try:
        faults.apply(world, {"redis": ["SET", "tenant:acme:cache:a", "x" * 2048]})
        reader = {"name": "stalled", "command": ["GET", "tenant:acme:cache:a"], "bytes": "12mb"}
        faults.apply(world, {"stalled_reader": reader})
        assert world.vars["output_buffer_bytes"] >= 12 * 1024 * 1024
        with world.client() as client:
            client.config_set("maxmemory-policy", "allkeys-lru")
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                client.set("tenant:acme:cache:b", "y")  # every key evicted, the buffer still over the limit
            assert client.dbsize() == 0
            assert int(client.info("memory")["mem_clients_normal"]) > 8 * 1024 * 1024  # over the limit on its own
    finally:
        world.stop()
