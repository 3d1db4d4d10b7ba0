"""`--sandbox`: a throwaway redis-server with a small SomaBrain-like keyspace, as a run target."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import UsageError
from engine.sandbox import RedisServer, SandboxUnavailable, SeedSummary, seed_somabrain
from engine.targets import RedisEndpoint, Target


@dataclass
class Sandbox:
    server: RedisServer
    summary: SeedSummary
    target: Target

    def stop(self) -> None:
        self.server.stop()


def start_sandbox() -> Sandbox:
    try:
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
