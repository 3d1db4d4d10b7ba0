"""`--sandbox [standalone|replicated|cluster]`: throwaway redis-servers with a small SomaBrain-like keyspace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from engine.errors import UsageError
from engine.sandbox import RedisServer, SandboxUnavailable, SeedSummary, seed_somabrain
from engine.targets import RedisEndpoint, SentinelSpec, Target

TOPOLOGIES = ("standalone", "replicated", "cluster")


@dataclass
class Sandbox:
    server: RedisServer  # the node the target names (the primary; a cluster's first node)
    summary: SeedSummary
    target: Target
    deployment: Any = None  # Replicated or RedisCluster when not standalone
    topology: str = "standalone"

    def stop(self) -> None:
        if self.deployment is not None:
            self.deployment.stop()
        else:
            self.server.stop()

    def describe(self) -> str:
        if self.topology == "replicated":
            d = self.deployment
            return (
                f"primary {self.server.host}:{self.server.port}, {len(d.replicas)} replicas, "
                f"{len(d.sentinels)} sentinels (master {d.master_name})"
            )
        if self.topology == "cluster":
            return f"cluster of {len(self.deployment.nodes)} nodes, seed {self.server.host}:{self.server.port}"
        return f"redis-server on {self.server.host}:{self.server.port}"


def start_sandbox(topology: str = "standalone") -> Sandbox:
    if topology not in TOPOLOGIES:
        raise UsageError(f"--sandbox {topology!r}: one of {', '.join(TOPOLOGIES)}")
    try:
        if topology == "replicated":
            return _replicated()
        if topology == "cluster":
            return _cluster()
        server = RedisServer.start()
    except SandboxUnavailable as exc:
        raise UsageError(f"--sandbox: {exc}") from None
    try:
        client = server.client()
        summary = seed_somabrain(client)
        client.close()
    except Exception:
        server.stop()
        raise
    endpoint = RedisEndpoint(host=server.host, port=server.port)
    return Sandbox(server, summary, Target(name="sandbox", redis=endpoint))


def _replicated() -> Sandbox:
    from engine.sandbox.topologies import start_replicated

    deployment = start_replicated(replicas=2, sentinels=3)
    try:
        primary = deployment.primary
        with primary.client() as client:
            summary = seed_somabrain(client)
        sentinel = SentinelSpec(tuple(deployment.sentinel_addresses), deployment.master_name)
        endpoint = RedisEndpoint(host=primary.host, port=primary.port)
        target = Target(name="sandbox", redis=endpoint, sentinel=sentinel)
        return Sandbox(primary, summary, target, deployment, "replicated")
    except BaseException:
        deployment.stop()
        raise


def _cluster() -> Sandbox:
    from engine.sandbox.topologies import start_cluster

    deployment = start_cluster(primaries=3, replicas=1)
    try:
        seed = deployment.nodes[0]
        client = redis.RedisCluster(host=seed.host, port=seed.port, decode_responses=True)
        try:
            summary = seed_somabrain(client)  # spread across the shards by slot
        finally:
            client.close()
        endpoint = RedisEndpoint(host=seed.host, port=seed.port)
        return Sandbox(seed, summary, Target(name="sandbox", redis=endpoint), deployment, "cluster")
    except BaseException:
        deployment.stop()
        raise
