"""One SSH host per Redis node of a sandbox deployment, each with its own service script, and the inventory
that maps every node to its host.

In production each Redis node lives on its own machine; here every redis-server listens on 127.0.0.1 and
each node's sshd on its own loopback address (127.0.0.x) with its own host key and client key, so the
inventory's `ssh.nodes` map is what routes a node's restart to the right host. A node's service script
restarts its redis-server on the config file Redis itself rewrites (CONFIG REWRITE, which Sentinel sends
after every reconfiguration), so a restarted node comes back as a replica of the primary of the moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.sandbox.redis_server import RedisServer
from engine.sandbox.sshd import ServiceCommands, SshHost, install_redis_service
from engine.sandbox.topologies import Replicated


@dataclass(frozen=True)
class NodeHost:
    """A Redis node, the SSH host it "runs on", and that host's service commands for it."""

    server: RedisServer
    ssh: SshHost
    service: ServiceCommands

    @property
    def address(self) -> str:
        return f"{self.server.host}:{self.server.port}"


@dataclass(frozen=True)
class NodeHosts:
    """Every node's host; `stop` stops the sshds only (the deployment stops its own servers)."""

    hosts: tuple[NodeHost, ...]

    def of(self, server: RedisServer) -> NodeHost:
        return next(h for h in self.hosts if h.server is server)

    def stop(self) -> None:
        for host in self.hosts:
            host.ssh.stop()

    def __enter__(self) -> NodeHosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_node_hosts(servers: list[RedisServer]) -> NodeHosts:
    """An sshd per server on its own loopback address, with a service script driving that server."""
    started: list[NodeHost] = []
    try:
        for server in servers:
            ssh = SshHost.start()
            try:
                started.append(NodeHost(server, ssh, install_redis_service(ssh, server)))
            except BaseException:
                ssh.stop()
                raise
        return NodeHosts(tuple(started))
    except BaseException:
        for host in started:
            host.ssh.stop()
        raise


def _ssh_settings(host: NodeHost) -> dict[str, Any]:
    service = host.service
    return {
        "host": host.ssh.address,
        "port": host.ssh.port,
        "user": host.ssh.user,
        "key_file": str(host.ssh.key_file),
        "known_hosts": str(host.ssh.known_hosts),
        "timeout": "10s",
        "service": {
            "start": service.start,
            "stop": service.stop,
            "restart": service.restart,
            "status": service.status,
            "logs": service.logs,
        },
        "paths": {
            "rdb": str(service.rdb_path),
            "aof_dir": str(service.aof_dir),
            "log": str(service.log_file),
            "data_dir": str(service.data_dir),
        },
        "service_user": service.service_user,
    }


def ssh_nodes(hosts: NodeHosts) -> dict[str, Any]:
    """The inventory's `ssh.nodes`: every node's HOST:PORT -> its host's ssh settings."""
    return {host.address: _ssh_settings(host) for host in hosts.hosts}


def inventory_for_replicated(
    deployment: Replicated,
    hosts: NodeHosts,
    *,
    name: str = "cache",
    environment: str = "sandbox",
    through_sentinel: bool = True,
) -> dict[str, Any]:
    """A target found through the deployment's Sentinels (else from its primary), whose `ssh.nodes` names
    each node's host. The target's own `ssh` settings are the primary's host's (where a step without `on:`
    runs)."""
    redis: dict[str, Any] = {"url": deployment.primary.url, "timeout": "10s"}
    if through_sentinel:
        redis["sentinel"] = {
            "addresses": [f"{h}:{p}" for h, p in deployment.sentinel_addresses],
            "master": deployment.master_name,
        }
    if deployment.primary.password is not None:
        redis["password_file"] = str(deployment.primary.write_password_file())
    ssh = _ssh_settings(hosts.of(deployment.primary))
    ssh["nodes"] = ssh_nodes(hosts)
    return {"environments": {environment: {"targets": {name: {"redis": redis, "ssh": ssh}}}}}
