"""Shared conditions on real replicated deployments, held by the test until it leaves the block."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from engine.sandbox.topologies import Replicated

PASSWORD = "now-required"


@contextmanager
def replica_link_down(deployment: Replicated, replica_index: int = 0) -> Iterator[None]:
    """The primary starts requiring a password its replicas do not know: their links drop and stay down
    (every reconnection is refused) until the block ends and the password is removed again."""
    replica = deployment.replicas[replica_index]
    with deployment.primary.client() as client:
        client.config_set("requirepass", PASSWORD)
        client.execute_command("CLIENT", "KILL", "TYPE", "replica")
    try:
        with replica.client() as client:
            while client.info("replication")["master_link_status"] == "up":
                time.sleep(0.01)
        yield
    finally:
        primary = redis.Redis(host=deployment.primary.host, port=deployment.primary.port, password=PASSWORD)
        primary.config_set("requirepass", "")
        primary.close()
