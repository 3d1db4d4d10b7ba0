"""A throwaway copy of production for one rehearsal: Redis, its host over SSH, and the API that uses it.

The world is real processes: a redis-server in a temp dir, an OpenSSH host on a loopback address whose
service script starts and stops that Redis (standing in for systemctl), and a small HTTP endpoint that
answers like SomaBrain's /health by pinging the same Redis. An inventory file ties them together.

A world may be a deployment instead of one server (`topology`): `replicated` is a primary, its replicas
and the Sentinels watching it (the inventory names the Sentinels and the master name, as production
would); `cluster` is a Redis Cluster (the inventory names one seed node). A replicated world that asks
for ssh gets one SSH host per node (engine/sandbox/node_hosts.py) and the inventory's `ssh.nodes`, so a
procedure can restart each node on its own host. Every process is stopped on every way out, a failed
start included.
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
from engine.sandbox.node_hosts import NodeHosts, ssh_nodes, start_node_hosts
from engine.sandbox.sshd import ServiceCommands
from engine.topology.grade import _address_key

TOPOLOGIES = ("standalone", "replicated", "cluster")
# Set on every node of a deployment: a replica loads a full sync from the socket (no dump.rdb written behind
# the procedure's back, so the file checks stay exact), and a cluster notices a dead node in seconds.
DEPLOYMENT_CONFIG = {"repl-diskless-load": "swapdb"}
CLUSTER_CONFIG = {"cluster-node-timeout": "2000"}


@dataclass
class WorldSpec:
    password: bool = False
    appendonly: bool = False
    config: dict[str, str] = field(default_factory=dict)
    ssh: bool | None = None  # default: a standalone world has its host; a deployment does not
    http: bool | None = None
    topology: str = "standalone"
    replicas: int | None = None  # replicated: 2; cluster: per primary, 1
    sentinels: int | None = None  # replicated: 3
    primaries: int | None = None  # cluster: 3

    @property
    def wants_ssh(self) -> bool:
        return self.ssh if self.ssh is not None else self.topology == "standalone"

    @property
    def wants_http(self) -> bool:
        return self.http if self.http is not None else self.topology == "standalone"

    def problems(self) -> list[str]:
        """What cannot be built (said before any process starts)."""
        out = []
        if self.topology not in TOPOLOGIES:
            out.append(f"topology: {self.topology!r} is not one of {', '.join(TOPOLOGIES)}")
        if self.topology != "replicated" and self.sentinels is not None:
            out.append("sentinels: only a replicated world has Sentinels")
        if self.topology != "cluster" and self.primaries is not None:
            out.append("primaries: only a cluster world has several primaries")
        if self.topology == "standalone" and self.replicas is not None:
            out.append("replicas: a standalone world has none (topology: replicated or cluster)")
        if self.topology == "cluster" and self.password:
            out.append("password: a cluster world has no password (not supported yet)")
        return out


class World:
    def __init__(self, spec: WorldSpec):
        self.spec = spec
        self.directory = Path(tempfile.mkdtemp(prefix="runbook-rehearsal-"))
        self.backups = self.directory / "backups"
        self.backups.mkdir()
        # the operator's side, outside the world: where a read step writes a file by design (backup-tenant's
        # export); neither the dry-run snapshot nor the gate's fingerprint looks here, the scenario's checks do
        self.local = Path(tempfile.mkdtemp(prefix="runbook-rehearsal-local-"))
        self.password_file = self.directory / "redis.pass"
        self.original_password: str | None = None
        self.redis: RedisServer | None = None  # the node the target names: the server, the primary, a cluster seed
        self.deployment: Any = None  # Replicated or RedisCluster (engine.sandbox.topologies) when not standalone
        self.nodes: list[RedisServer] = []  # every data node (the server alone in a standalone world)
        self.sentinels: list[RedisServer] = []
        self.master_name: str | None = None
        self.roles_at_start: dict[str, str] = {}  # HOST:PORT -> primary | replica, as built
        self.replica_of_at_start: dict[str, str] = {}  # replica HOST:PORT -> its primary's, as built
        self.ssh: SshHost | None = None  # the target's host: a replicated world's primary's host
        self.service: ServiceCommands | None = None
        self.node_hosts: NodeHosts | None = None  # a replicated world with ssh: every node's own host
        self.run_ids_at_start: dict[str, str] = {}  # HOST:PORT -> run_id, as built (restarted_nodes())
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
        problems = self.spec.problems()
        if problems:
            raise ValueError("world: " + "; ".join(problems))
        password = None
        if self.spec.password:
            from engine.spec.template import random_password

            password = self.original_password = random_password(24)
            self.password_file.write_text(password)
            self.password_file.chmod(0o600)
        config = {k: str(v) for k, v in self.spec.config.items()}
        if self.spec.topology == "standalone":
            self.redis = RedisServer.start(password=password, config=config, appendonly=self.spec.appendonly)
            self.nodes = [self.redis]
            self.roles_at_start = {address(self.redis): "primary"}
        else:
            self._start_deployment(password, config)
        assert self.redis is not None
        if self.spec.wants_ssh and self.spec.topology == "replicated":
            self.node_hosts = start_node_hosts(self.nodes)
            own = self.node_hosts.of(self.redis)
            self.ssh, self.service = own.ssh, own.service
        elif self.spec.wants_ssh:
            self.ssh = SshHost.start()
            self.service = install_redis_service(self.ssh, self.redis)
        if self.spec.wants_http:
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
        target = data["environments"]["sandbox"]["targets"]["rehearsal"]
        if self.ssh is not None:
            target["ssh"]["paths"]["backups"] = str(self.backups)
        if self.node_hosts is not None:  # each node's restart goes to its own host, as in production
            target["ssh"]["nodes"] = ssh_nodes(self.node_hosts)
        if self.sentinels:  # the run's target model: found through Sentinel, as production names it
            target["redis"]["sentinel"] = {
                "addresses": [address(s) for s in self.sentinels],
                "master": self.master_name,
            }
        write_inventory(self.inventory_path, data)
        for node in self.nodes:
            with self.client(node=node) as client:
                self.run_ids_at_start[address(node)] = client.info("server")["run_id"]

    def _start_deployment(self, password: str | None, config: dict[str, str]) -> None:
        from engine.sandbox.topologies import start_cluster, start_replicated

        if self.spec.topology == "replicated":
            replicas = 2 if self.spec.replicas is None else self.spec.replicas
            sentinels = 3 if self.spec.sentinels is None else self.spec.sentinels
            self.deployment = start_replicated(replicas=replicas, sentinels=sentinels, password=password)
            self.redis = self.deployment.primary
            self.nodes = list(self.deployment.servers)
            self.sentinels = list(self.deployment.sentinels)
            self.master_name = self.deployment.master_name if self.sentinels else None
            extra = dict(DEPLOYMENT_CONFIG)
        else:
            primaries = 3 if self.spec.primaries is None else self.spec.primaries
            replicas = 1 if self.spec.replicas is None else self.spec.replicas
            self.deployment = start_cluster(primaries=primaries, replicas=replicas)
            self.nodes = list(self.deployment.nodes)
            self.redis = self.nodes[0]
            extra = {**DEPLOYMENT_CONFIG, **CLUSTER_CONFIG}
        if self.spec.appendonly:
            extra["appendonly"] = "yes"
        for node in self.nodes:  # a deployment's servers are started by topologies.py: the world's settings go after
            with node.client() as client:
                for name, value in {**extra, **config}.items():
                    client.config_set(name, value)
                client.config_rewrite()  # in its config file too: a node restarted by a procedure keeps them
                role = client.execute_command("ROLE")
            self.roles_at_start[address(node)] = "primary" if role[0] == "master" else "replica"
            if role[0] == "slave":
                self.replica_of_at_start[address(node)] = f"{role[1]}:{role[2]}"

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
        for part in (self.http, self.node_hosts, self.ssh, self.deployment or self.redis):
            if part is not None:
                try:
                    part.stop()
                except Exception:
                    pass
        shutil.rmtree(self.directory, ignore_errors=True)
        shutil.rmtree(self.local, ignore_errors=True)

    # -- access ------------------------------------------------------------------------------------
    @property
    def current_password(self) -> str | None:
        """The password the server wants now: rotation writes the new one to the password file."""
        if not self.spec.password:
            return None
        return self.password_file.read_text().strip()

    def client(
        self, password: str | bool | None = True, node: RedisServer | str | None = None, **kwargs: Any
    ) -> redis.Redis:
        """A client to the world's Redis, or to one `node` of its deployment (a server or HOST:PORT);
        password=True means the current one. Refused (redis.ConnectionError, as a dead port would) for a
        node whose process is gone (`gone`)."""
        if isinstance(node, str):
            host, _, port = node.rpartition(":")
        else:
            server = node or self.redis
            assert server is not None
            host, port = server.host, str(server.port)
        if self.gone(node):
            raise redis.ConnectionError(f"{host}:{port}: this world's process for the node is gone")
        secret = self.current_password if password is True else (password or None)
        return redis.Redis(
            host=host,
            port=int(port),
            password=secret,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
            **kwargs,
        )

    def gone(self, node: RedisServer | str | None = None) -> bool:
        """This world's process for `node` (the world's Redis when None; a data node or Sentinel, as a server
        or HOST:PORT) is gone: killed by a fault, or stopped. The node is down whatever answers on its port:
        a free port is anybody's, and a server another test or rehearsal started there would answer for it
        (seen in CI: a killed shard's primary "up" before a dry-run, the port's new owner gone after it)."""
        if isinstance(node, str):
            server = next((s for s in [*self.nodes, *self.sentinels] if address(s) == node), None)
        else:
            server = node or self.redis
        return server is not None and not server.running

    def data_client(self) -> Any:
        """A client that writes the dataset: a cluster client (keys go to their slot's owner) or the primary's."""
        if self.spec.topology == "cluster":
            assert self.redis is not None
            return redis.RedisCluster(host=self.redis.host, port=self.redis.port, decode_responses=True)
        return self.client()

    def node(self, where: str) -> RedisServer:
        """A data node by its HOST:PORT."""
        for server in self.nodes:
            if address(server) == where:
                return server
        raise LookupError(f"no node {where} in this world (nodes: {', '.join(address(n) for n in self.nodes)})")

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until every replica that is up has its link up and has applied everything its primary sent
        (after seeding: the world is captured once it stopped changing by itself)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            behind = [address(n) for n in self.nodes if self._behind(n)]
            if not behind:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"replicas not in sync after {timeout:.0f}s: {', '.join(behind)}")
            time.sleep(0.05)

    def _behind(self, node: RedisServer) -> bool:
        try:
            with self.client(node=node) as client:
                info = client.info("replication")
                if info.get("role") != "slave":
                    return False
                if info.get("master_link_status") != "up":
                    return True
            with self.client(node=f"{info['master_host']}:{info['master_port']}") as client:
                return int(client.info("replication")["master_repl_offset"]) != int(info["slave_repl_offset"])
        except redis.RedisError:
            return False  # a node that is down is no replica to wait for

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
        """What scenario params may refer to as `world.*`: paths and facts, never a password.

        A deployment adds its shape as it was built: `primary` (HOST:PORT of the primary, a cluster's
        seed), `replicas` (by address), `replica_of` (replica -> its primary), `nodes` (every data node),
        `sentinels`, `master_name`, and `run_ids` (node -> its run_id at start)."""
        assert self.redis is not None
        return {
            "data_dir": str(self.redis.directory),
            "rdb": str(self.redis.directory / "dump.rdb"),
            "backups_dir": str(self.backups),
            "local_dir": str(self.local),
            "directory": str(self.directory),
            "topology": self.spec.topology,
            "primary": address(self.redis),
            # by address (host, then port): the order a rolling restart takes them in
            "replicas": sorted((a for a, r in self.roles_at_start.items() if r == "replica"), key=_address_key),
            "replica_of": dict(self.replica_of_at_start),
            "nodes": [address(n) for n in self.nodes],
            "sentinels": [address(s) for s in self.sentinels],
            "master_name": self.master_name,
            "run_ids": dict(self.run_ids_at_start),
            **self.vars,
        }


def address(server: RedisServer) -> str:
    """HOST:PORT, the way the engine's topology names a node."""
    return f"{server.host}:{server.port}"
