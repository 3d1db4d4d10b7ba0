"""A throwaway copy of production for one rehearsal: Redis, its host over SSH, and the API that uses it.

The world is real processes: a redis-server in a temp dir, an OpenSSH host on a loopback address whose
service script starts and stops that Redis (standing in for systemctl), and a small HTTP endpoint that
answers like SomaBrain's /health by pinging the same Redis. An inventory file ties them together.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine.sandbox import RedisServer, SshHost, install_redis_service, inventory_for, write_inventory
from engine.sandbox.health import HealthServer
from engine.sandbox.sshd import ServiceCommands


@dataclass
class WorldSpec:
    password: bool = False
    appendonly: bool = False
    config: dict[str, str] = field(default_factory=dict)
    ssh: bool = True
    http: bool = True


class World:
    def __init__(self, spec: WorldSpec):
        self.spec = spec
        self.directory = Path(tempfile.mkdtemp(prefix="runbook-rehearsal-"))
        self.backups = self.directory / "backups"
        self.backups.mkdir()
        self.password_file = self.directory / "redis.pass"
        self.original_password: str | None = None
        self.redis: RedisServer | None = None
        self.ssh: SshHost | None = None
        self.service: ServiceCommands | None = None
        self.http: HealthServer | None = None
        self.inventory_path = self.directory / "inventory.yaml"
        self.vars: dict[str, Any] = {}  # facts faults record for params and checks (backup paths, ...)
        self._resources: list[Any] = []  # connections and threads faults keep alive until teardown
        self._stop_event = threading.Event()
        # globs of the keys a background client of the scenario writes (an eviction storm's writer): the
        # world changes by itself there, so the dry-run and gate checks look past them (snapshot.py)
        self.background_writes: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------------
    @classmethod
    def start(cls, spec: WorldSpec) -> World:
        world = cls(spec)
        try:
            world._start()
        except BaseException:
            world.stop()
            raise
        return world

    def _start(self) -> None:
        password = None
        if self.spec.password:
            from engine.spec.template import random_password

            password = self.original_password = random_password(24)
            self.password_file.write_text(password)
            self.password_file.chmod(0o600)
        config = {k: str(v) for k, v in self.spec.config.items()}
        self.redis = RedisServer.start(password=password, config=config, appendonly=self.spec.appendonly)
        if self.spec.ssh:
            self.ssh = SshHost.start()
            self.service = install_redis_service(self.ssh, self.redis)
        if self.spec.http:
            self.http = HealthServer(self.ping)
        data = inventory_for(
            self.redis,
            self.ssh,
            self.service,
            http_base_url=self.http.base_url if self.http else None,
            name="rehearsal",
            environment="sandbox",
            password_file=self.password_file if password else None,
        )
        if self.ssh is not None:
            data["environments"]["sandbox"]["targets"]["rehearsal"]["ssh"]["paths"]["backups"] = str(self.backups)
        write_inventory(self.inventory_path, data)

    def stop(self) -> None:
        self._stop_event.set()
        if self.redis is not None and self.spec.password:
            try:  # a rotation changed it: shut down with the password that works, not wait 5 s for a kill
                self.redis.password = self.current_password
            except OSError:
                pass
        for resource in reversed(self._resources):
            try:
                if isinstance(resource, threading.Thread):
                    resource.join(timeout=5)
                else:
                    resource.close()
            except Exception:
                pass
        for part in (self.http, self.ssh, self.redis):
            if part is not None:
                try:
                    part.stop()
                except Exception:
                    pass
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- access ------------------------------------------------------------------------------------
    @property
    def current_password(self) -> str | None:
        """The password the server wants now: rotation writes the new one to the password file."""
        if not self.spec.password:
            return None
        return self.password_file.read_text().strip()

    def client(self, password: str | bool | None = True, **kwargs: Any) -> redis.Redis:
        """A client to the world's Redis; password=True means the current one."""
        assert self.redis is not None
        secret = self.current_password if password is True else (password or None)
        return redis.Redis(
            host=self.redis.host,
            port=self.redis.port,
            password=secret,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
            **kwargs,
        )

    def ping(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def keep(self, resource: Any) -> Any:
        self._resources.append(resource)
        return resource

    @property
    def stopping(self) -> threading.Event:
        return self._stop_event

    def template_values(self) -> dict[str, Any]:
        """What scenario params may refer to as `world.*`: paths and facts, never a password."""
        assert self.redis is not None
        return {
            "data_dir": str(self.redis.directory),
            "rdb": str(self.redis.directory / "dump.rdb"),
            "backups_dir": str(self.backups),
            "directory": str(self.directory),
            **self.vars,
        }
