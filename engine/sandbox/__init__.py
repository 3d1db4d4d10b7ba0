"""Real, throwaway redis-server and sshd processes so procedures can be exercised end to end.

Nothing here mocks anything: tests and demos drive the same binaries production uses, on free ports
and loopback addresses, in temp dirs that disappear afterwards.
"""

from __future__ import annotations

from engine.sandbox.redis_server import (
    RedisCluster,
    RedisServer,
    SandboxUnavailable,
    find_binary,
    free_port,
)
from engine.sandbox.seed import BulkSummary, SeedSummary, seed_bulk, seed_somabrain
from engine.sandbox.sshd import (
    ServiceCommands,
    SshHost,
    install_redis_service,
    inventory_for,
    write_inventory,
)

__all__ = [
    "BulkSummary",
    "RedisCluster",
    "RedisServer",
    "SandboxUnavailable",
    "SeedSummary",
    "ServiceCommands",
    "SshHost",
    "find_binary",
    "free_port",
    "install_redis_service",
    "inventory_for",
    "seed_bulk",
    "seed_somabrain",
    "write_inventory",
]
