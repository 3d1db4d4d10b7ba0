"""Throwaway deployments: a primary with replicas watched by Sentinels, and a Cluster with replicas.

Real redis-server processes (Sentinels are `redis-server --sentinel`), free ports, temp dirs; every
process started is stopped on every way out, including a failed start.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.sandbox.redis_server import RedisCluster, RedisServer, _PortTaken, _quote, find_binary, free_port
from engine.topology.parse import cluster_nodes, pairs

MASTER_NAME = "somabrain"
READY_TIMEOUT = 120.0  # a safety net for a broken start on a busy machine, not a timing expectation
# Sentinel refreshes a replica's INFO every 10 s and stops choosing it after 30 s without: ready well inside that
PROMOTABLE_INFO_AGE_MS = 20_000


@dataclass
class Replicated:
    """A primary, its replicas and the Sentinels watching it (`master_name`)."""

    primary: RedisServer
    replicas: list[RedisServer]
    sentinels: list[RedisServer] = field(default_factory=list)
    master_name: str = MASTER_NAME

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(s.host, s.port) for s in self.sentinels]

    def stop(self) -> None:
        for server in [*self.sentinels, *self.replicas, self.primary]:
            server.stop()

    def __enter__(self) -> Replicated:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_replicated(replicas: int = 2, sentinels: int = 3, password: str | None = None) -> Replicated:
    """Primary + replicas (in sync before this returns) + Sentinels that see every replica."""
    started: list[RedisServer] = []
    try:
        primary = RedisServer.start(password=password)
        started.append(primary)
        followers = []
        for _ in range(replicas):
            replica = RedisServer.start(password=password, replica_of=(primary.host, primary.port))
            started.append(replica)
            followers.append(replica)
        _wait_in_sync(primary, followers)
        watchers = []
        for _ in range(sentinels):
            sentinel = start_sentinel(primary, quorum=max(1, sentinels // 2 + 1))
            started.append(sentinel)
            watchers.append(sentinel)
        deployment = Replicated(primary, followers, watchers)
        _wait_sentinels_see(deployment)
        return deployment
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise


def start_sentinel(primary: RedisServer, *, master_name: str = MASTER_NAME, quorum: int = 2) -> RedisServer:
    """One Sentinel monitoring `primary`, quick to notice a failure (1 s) so tests of failover are short."""
    binary = find_binary("redis-server")
    directory = Path(tempfile.mkdtemp(prefix="runbook-sentinel-"))
    try:
        for _attempt in range(5):
            port = free_port(primary.host)
            lines = [
                "# written by engine.sandbox.topologies",
                f"port {port}",
                f"bind {primary.host}",
                f"dir {_quote(str(directory))}",
                "daemonize no",
                f"pidfile {_quote(str(directory / 'redis.pid'))}",
                f"logfile {_quote(str(directory / 'redis.log'))}",
                "protected-mode no",
                f"sentinel monitor {master_name} {primary.host} {primary.port} {quorum}",
                f"sentinel down-after-milliseconds {master_name} 1000",
                f"sentinel failover-timeout {master_name} 5000",
                f"sentinel parallel-syncs {master_name} 1",
            ]
            if primary.password:
                lines.append(f"sentinel auth-pass {master_name} {_quote(primary.password)}")
            sentinel = RedisServer(
                host=primary.host, port=port, password=None, directory=directory, owns_directory=True, lines=lines
            )
            sentinel.extra_args = ("--sentinel",)
            sentinel.config_path.write_text("\n".join(lines) + "\n")
            try:
                sentinel._launch(binary)
                return sentinel
            except _PortTaken:
                continue
        raise RuntimeError("redis-server --sentinel could not find a free port after 5 attempts")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def start_cluster(primaries: int = 3, replicas: int = 1) -> RedisCluster:
    """A Cluster of `primaries` shards with `replicas` each, every replica in sync."""
    cluster = RedisCluster.start(nodes=primaries * (1 + replicas), replicas=replicas)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not _cluster_agrees(cluster, primaries, primaries * replicas):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"cluster did not settle ({primaries} shards, {replicas} replicas each) after {READY_TIMEOUT:.0f}s"
                )
            time.sleep(0.05)
        return cluster
    except BaseException:
        cluster.stop()
        raise


def _cluster_agrees(cluster: RedisCluster, primaries: int, replicas: int) -> bool:
    """Every node sees the same shape (gossip has settled) and every replica's link is up."""
    for node in cluster.nodes:
        with node.client() as client:
            view = cluster_nodes(client.execute_command("CLUSTER", "NODES"))
            info = client.info("replication")
        owning = [n for n in view if n.role == "primary" and n.slots]
        following = [n for n in view if n.role == "replica"]
        if len(owning) != primaries or len(following) != replicas or any(n.health != "online" for n in view):
            return False
        if info.get("role") == "slave" and info.get("master_link_status") != "up":
            return False
    return True


def _wait_in_sync(primary: RedisServer, replicas: list[RedisServer]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        states = []
        for replica in replicas:
            with replica.client() as client:
                states.append(client.info("replication").get("master_link_status") == "up")
        with primary.client() as client:
            connected = int(client.info("replication").get("connected_slaves", 0))
        if all(states) and connected == len(replicas):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"replicas of {primary.url} not in sync after {READY_TIMEOUT:.0f}s")
        time.sleep(0.05)


def _promotable(fields: dict[str, Any]) -> bool:
    """A replica as SENTINEL REPLICAS shows it, that Sentinel would choose from: no flag but `slave`, its link
    to the primary up, and its own INFO read lately (`info-refresh`, ms ago: huge before the first)."""
    return (
        fields.get("flags") == "slave"
        and fields.get("master-link-status") == "ok"
        and int(fields.get("info-refresh", 1 << 62)) < PROMOTABLE_INFO_AGE_MS
    )


def _wait_sentinels_see(deployment: Replicated) -> None:
    """Every Sentinel knows the other Sentinels (discovered through hello messages) and every replica as one
    it could promote: linked to the primary, answering, and with an INFO of its own read. A replica a Sentinel
    only heard of from the primary's INFO is not yet a candidate, and a failover asked then fails with
    NOGOODSLAVE (seen on a loaded machine right after the world started)."""
    deadline = time.monotonic() + READY_TIMEOUT
    want_replicas = len(deployment.replicas)
    want_others = len(deployment.sentinels) - 1
    while True:
        ready = True
        for sentinel in deployment.sentinels:
            with sentinel.client() as client:
                fields = pairs(client.execute_command("SENTINEL", "MASTER", deployment.master_name))
                ready = ready and int(fields.get("num-other-sentinels", 0)) >= want_others
                replicas = [pairs(r) for r in client.execute_command("SENTINEL", "REPLICAS", deployment.master_name)]
                ready = ready and sum(_promotable(r) for r in replicas) >= want_replicas
        if ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"sentinels did not see the whole deployment after {READY_TIMEOUT:.0f}s")
        time.sleep(0.1)
