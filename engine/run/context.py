"""What a step kind may use while it plans and runs: connections, the operator, progress, the redactor."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.printable import printable
from engine.records import BlastRadius

if TYPE_CHECKING:
    from engine.adapters.http import HttpAdapter
    from engine.adapters.local import LocalFiles
    from engine.adapters.redis_routing import RoutedRedisAdapter
    from engine.adapters.ssh import SshAdapter
    from engine.run.operator import Operator
    from engine.spec.model import Procedure, Step
    from engine.targets import Target
    from engine.transcript.redact import Redactor


class Connections:
    """Opened on first use, closed once at the end; every adapter shares the run's mutation policy."""

    def __init__(
        self,
        target: Target,
        *,
        allow_mutation: bool,
        on_host_key_accepted: Callable[[dict[str, str]], None] = lambda e: None,
        on_topology_changed: Callable[[dict[str, Any]], None] = lambda e: None,
    ):
        self.target = target
        self.on_topology_changed = on_topology_changed
        self.allow_mutation = allow_mutation
        self.on_host_key_accepted = on_host_key_accepted
        self._redis: RoutedRedisAdapter | None = None
        self._ssh: SshAdapter | None = None
        self._ssh_nodes: dict[str, SshAdapter] = {}

    @property
    def seed_timed_out(self) -> bool:
        """Discovery's seed (no Sentinel) accepted the connection and never answered: a hung server."""
        return self._redis is not None and self._redis.seed_timed_out

    def redis(self) -> RoutedRedisAdapter:
        # the ignore below: connect() returns the routed adapter itself, typed as its base class
        return self._routed().connect()  # type: ignore[return-value]

    def _routed(self) -> RoutedRedisAdapter:
        if self.target.redis is None:
            raise UsageError(f"target '{self.target.name}' has no redis endpoint")
        if self._redis is None:
            from engine.adapters.redis_routing import RoutedRedisAdapter

            self._redis = RoutedRedisAdapter(
                self.target.redis,
                allow_mutation=self.allow_mutation,
                sentinel=self.target.sentinel,
                record=self.on_topology_changed,
            )
        return self._redis

    def deployment(self) -> RoutedRedisAdapter:
        """The deployment as discovered at run start (its nodes, `nodes_for`), without connecting to it."""
        return self._routed()

    def discover(self) -> dict[str, Any]:
        """The deployment behind the target, for the transcript; what failed instead when it cannot be found.

        Never raises for an unreachable deployment: service-down procedures must still run.
        """
        adapter = self._routed()
        try:
            topology = adapter.discover()
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}", "seed": adapter.endpoint.url}
        return {"topology": topology.as_json()}

    def ssh(self, node: str | None = None) -> SshAdapter:
        """The target's host; with `node` (a Redis node's HOST:PORT), the host that node runs on
        (the inventory's `ssh.nodes`, else the node's own host), connected on first use."""
        if self.target.ssh is None:
            raise UsageError(f"target '{self.target.name}' has no ssh endpoint")
        adapter = self._ssh_nodes.get(node) if node is not None else self._ssh
        if adapter is None:
            from engine.adapters.ssh import SshAdapter

            endpoint = self.target.ssh if node is None else self.target.ssh.for_node(node)
            adapter = SshAdapter(
                endpoint, allow_mutation=self.allow_mutation, on_host_key_accepted=self.on_host_key_accepted
            )
            if node is None:
                self._ssh = adapter
            else:
                self._ssh_nodes[node] = adapter
        adapter.connect()
        return adapter

    def local(self) -> LocalFiles:
        """Files on the operator's machine, writes refused in a dry-run."""
        from engine.adapters.local import LocalFiles

        return LocalFiles(allow_mutation=self.allow_mutation)

    def http(self) -> HttpAdapter:
        """HTTP requests, anything but GET/HEAD refused in a dry-run."""
        from engine.adapters.http import HttpAdapter

        return HttpAdapter(allow_mutation=self.allow_mutation)

    def close(self) -> None:
        for adapter in (self._redis, self._ssh, *self._ssh_nodes.values()):
            if adapter is not None:
                try:
                    adapter.close()
                except Exception:  # closing must never hide the run's real outcome
                    pass


class Progress:
    """A one-line counter on a terminal (stderr); silent when stderr is not one."""

    def __init__(self, label: str, total: int | None, enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.done = 0
        self.started = time.monotonic()
        self._last = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last > 0.2:
            self._last = now
            rate = self.done / max(now - self.started, 1e-6)
            total = f"/{self.total:,}" if self.total else ""
            self._write(f"\r  {printable(self.label)}: {self.done:,}{total} ({rate:,.0f}/s) ")

    def finish(self) -> None:
        if self.enabled and self._last:
            self._write("\r" + " " * 100 + "\r")

    def _write(self, text: str) -> None:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except OSError:  # the terminal went away: the count is only a courtesy
            self.enabled = False


@dataclass
class StepContext:
    connections: Connections
    operator: Operator
    redactor: Redactor
    procedure: Procedure
    step: Step
    dry_run: bool
    values: dict[str, Any]
    call_procedure: Callable[[str, dict[str, Any]], Any]
    show_progress: bool = False
    recorded_change: Callable[[str], BlastRadius | None] = lambda step_id: None  # restore: blast of a step

    @contextmanager
    def progress(self, label: str, total: int | None = None) -> Iterator[Progress]:
        bar = Progress(label, total, self.show_progress)
        try:
            yield bar
        finally:
            bar.finish()
