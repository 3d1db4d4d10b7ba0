"""The lease's own connection to the target Redis: a quiet database, a short timeout.

Why not the run's connection: the lease must not show up where the procedure measures the data (a
data-loss procedure counts DBSIZE; a key of ours in db 0 would read as "1 key left"), so it lives in
the highest-numbered database when the server has several (15 by default; a Cluster has only db 0).
And it must never stall the run: during `CLIENT PAUSE WRITE` (emergency-data-loss pauses writes) a
renewal or release would block until the pause ends, so calls here time out after LEASE_TIMEOUT and
the lease simply expires by its TTL. Each call opens and closes its own connection, with the password
the run uses *now*: a procedure that rotates the password and kills the old sessions (the security
breach procedure) neither kills a lease connection it did not predict nor locks the lease out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from engine.targets import RedisEndpoint

LEASE_TIMEOUT = 2.0


class LeaseRedis:
    """A callable `argv -> reply` for engine.run.lease.RedisStore; connects on first use."""

    def __init__(self, endpoint: RedisEndpoint, password: Callable[[], str | None] | None = None):
        self.endpoint = replace(endpoint, timeout=min(endpoint.timeout, LEASE_TIMEOUT))
        self.password = password or (lambda: endpoint.password)
        self.db: int | None = None
        self._table: Any = None  # the server's COMMAND table, read once (a renewal then costs one round trip)

    def __call__(self, argv: list[Any]) -> Any:
        from engine.adapters.redis import LEASE_CLIENT_NAME, RedisAdapter

        endpoint = replace(self.endpoint, password=self.password())
        if self.db is None:
            probe = RedisAdapter(endpoint, allow_mutation=True, client_name=LEASE_CLIENT_NAME).connect()
            try:
                self.db = self._quiet_db(probe)
                self._table = probe.command_table
            finally:
                probe.close()
        adapter = RedisAdapter(
            replace(endpoint, db=self.db), allow_mutation=True, client_name=LEASE_CLIENT_NAME, command_table=self._table
        )
        adapter.connect()
        try:
            return adapter.call(argv)
        finally:
            adapter.close()

    def _quiet_db(self, adapter: Any) -> int:
        try:
            if str(adapter.info("cluster").get("cluster_enabled", "0")) == "1":
                return 0
            databases = int(adapter.config_get("databases").get("databases", 1))
        except Exception:  # CONFIG renamed or refused (managed Redis): stay in the target's database
            return self.endpoint.db
        return databases - 1 if databases > 1 else self.endpoint.db

    @property
    def where(self) -> str:
        return f"redis key runbook:lease (db {self.db if self.db is not None else '?'})"

    def close(self) -> None:
        """Nothing stays open between calls."""
