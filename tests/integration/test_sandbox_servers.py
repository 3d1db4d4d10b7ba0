"""The sandbox servers are what every other integration test stands on: prove they behave for real."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.exceptions import MovedError
from redis.retry import Retry

from engine.sandbox.redis_server import (
    RedisCluster,
    RedisServer,
    SandboxUnavailable,
    find_binary,
    pid_alive,
    port_is_open,
)
from engine.sandbox.seed import SeedSummary, seed_bulk, seed_somabrain
from engine.sandbox.sshd import SshHost, install_redis_service, inventory_for, write_inventory

PASSWORD = 'p@ss w0rd "quoted" \\ #x'


def _ssh(host: SshHost, known_hosts: Path | None = None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or host.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host.address,
        port=host.port,
        username=host.user,
        key_filename=str(host.key_file),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def _run(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, stdout, stderr = client.exec_command(command, timeout=30)
    code = stdout.channel.recv_exit_status()
    return code, stdout.read().decode() + stderr.read().decode()


@pytest.fixture
def ssh_client(sshd_host: Callable[..., SshHost]) -> Iterator[tuple[SshHost, paramiko.SSHClient]]:
    host = sshd_host()
    client = _ssh(host)
    yield host, client
    client.close()


def test_find_binary_missing_says_how_to_fix() -> None:
    with pytest.raises(SandboxUnavailable, match="not found on PATH; apt-get install"):
        find_binary("no-such-binary-runbook")


def test_redis_starts_on_free_port_and_answers(redis_server: Callable[..., RedisServer]) -> None:
    server = redis_server()
    assert server.port != 6379
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert server.config_path.is_file() and server.log_path.is_file()
    with server.client() as client:
        assert client.ping()
        client.set("k", "v")
        assert client.get("k") == "v"
        assert int(client.info("server")["process_id"]) == server.pid
        assert client.config_get("dir")["dir"] == str(server.directory)
        # CONFIG REWRITE needs the server to have been started from a config file.
        assert client.config_rewrite()


def test_password_is_required_and_never_in_url(redis_server: Callable[..., RedisServer]) -> None:
    server = redis_server(password=PASSWORD)
    assert PASSWORD not in server.url and "@" not in server.url
    anonymous = redis.Redis(host=server.host, port=server.port, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    wrong = redis.Redis(host=server.host, port=server.port, password="nope", retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    with server.client() as client:
        assert client.ping()


def test_config_option_lands(redis_server: Callable[..., RedisServer]) -> None:
    server = redis_server(config={"maxmemory": "64mb", "maxmemory-policy": "allkeys-lru"})
    with server.client() as client:
        assert client.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
        assert client.config_get("save")["save"] == ""


def test_seeding_matches_summary(seeded_redis: tuple[RedisServer, SeedSummary]) -> None:
    server, summary = seeded_redis
    with server.client() as client:
        assert client.dbsize() == summary.keys_total
        for tenant, count in summary.per_tenant.items():
            assert len(list(client.scan_iter(match=f"tenant:{tenant}:*", count=1000))) == count
        assert summary.per_tenant == {"acme": 31, "globex": 30, "initech": 30}
        leaks = set(summary.no_ttl_keys)
        assert len(leaks) == 6
        pipe = client.pipeline(transaction=False)
        keys = list(client.scan_iter(count=1000))
        for key in keys:
            pipe.ttl(key)
        for key, ttl in zip(keys, pipe.execute(), strict=True):
            if key in leaks:
                assert ttl == -1, key
            else:
                assert ttl > 0, key
        assert summary.big_keys == ("tenant:acme:cache:big:0",)
        assert client.hlen(summary.big_keys[0]) == 5000
        assert set(client.hkeys("tenant:acme:wm:active")) == {"context", "goal", "turns", "updated_at"}
        assert client.type("tenant:globex:wm:history") == "list"
        assert client.type("tenant:globex:cache:tags") == "set"
        assert 50 <= client.strlen("tenant:initech:cache:3") <= 2000
        # Same seed, same data: reseed into db 1 and compare.
        with server.client(db=1) as again:
            assert seed_somabrain(again) == summary
            for key in ("tenant:acme:cache:0", "tenant:initech:cache:leak:1"):
                assert again.get(key) == client.get(key)
            assert again.hgetall("tenant:globex:wm:2") == client.hgetall("tenant:globex:wm:2")


def test_seed_bulk_counts(redis_server: Callable[..., RedisServer]) -> None:
    server = redis_server()
    with server.client() as client:
        result = seed_bulk(client, keys=3000, tenants=4)
        assert result.keys == client.dbsize() == 3000
        assert result.by_type == {"string": 1200, "hash": 900, "list": 450, "set": 450}
        assert result.per_tenant == {f"t{n}": 750 for n in range(4)}
        assert 0.6 < result.with_ttl / 3000 < 0.8
        (key,) = client.scan_iter(match="tenant:t1:*:1", count=1000)
        area = key.split(":")[2]
        assert client.type(key) in (("string", "set") if area == "cache" else ("hash", "list"))


def test_kill_and_restart_keeps_snapshot(redis_server: Callable[..., RedisServer]) -> None:
    server = redis_server()
    port, directory = server.port, server.directory
    with server.client() as client:
        client.set("saved", "yes")
        client.save()
        client.set("unsaved", "lost")
    old_pid = server.pid
    server.kill()
    assert server.pid is None and not port_is_open(server.host, port)
    server.restart()
    assert (server.port, server.directory) == (port, directory)
    assert server.pid != old_pid
    with server.client() as client:
        assert client.get("saved") == "yes"
        assert client.get("unsaved") is None
    server.stop()
    server.stop()  # idempotent
    assert not port_is_open(server.host, port)
    assert not directory.exists()


def test_replica_follows_master(redis_server: Callable[..., RedisServer]) -> None:
    master = redis_server(password=PASSWORD)
    replica = redis_server(password=PASSWORD, replica_of=(master.host, master.port))
    with master.client() as m:
        m.set("replicated", "1")
        m.wait(1, 5000)
    with replica.client() as r:
        assert r.get("replicated") == "1"
        assert r.info("replication")["role"] == "slave"


def test_sshd_hosts_are_distinct_and_strictly_checked(
    sshd_host: Callable[..., SshHost],
) -> None:
    first, second = sshd_host(), sshd_host()
    assert first.address != second.address
    assert first.address.startswith("127.0.0.") and first.address != "127.0.0.1"
    assert first.host_public_key != second.host_public_key
    assert first.host_public_key.startswith("ssh-ed25519 AAAA")
    assert first.known_hosts.read_text() == f"[{first.address}]:{first.port} {first.host_public_key}\n"
    for host in (first, second):
        client = _ssh(host)
        try:
            assert _run(client, "echo hi") == (0, "hi\n")
        finally:
            client.close()
    # The first host's known_hosts does not vouch for the second: RejectPolicy refuses.
    with pytest.raises(paramiko.SSHException):
        _ssh(second, known_hosts=first.known_hosts).close()


def test_service_script_stops_and_starts_redis(
    redis_server: Callable[..., RedisServer],
    ssh_client: tuple[SshHost, paramiko.SSHClient],
    tmp_path: Path,
) -> None:
    host, ssh = ssh_client
    server = redis_server(password=PASSWORD)
    service = install_redis_service(host, server)
    with server.client() as client:
        client.set("survivor", "here")
        client.save()

    assert _run(ssh, service.status) == (0, f"active (running) pid {server.pid}\n")
    code, out = _run(ssh, service.stop)
    assert code == 0, out
    assert not port_is_open(server.host, server.port)
    with pytest.raises(redis.ConnectionError), server.client(socket_connect_timeout=1) as client:
        client.ping()
    assert _run(ssh, service.status) == (3, "inactive (dead)\n")

    code, out = _run(ssh, service.start)
    assert code == 0, out
    with server.client() as client:
        assert client.get("survivor") == "here"
    code, out = _run(ssh, service.status)
    assert code == 0 and out.startswith("active (running) pid ")
    script_pid = server.pid
    assert script_pid is not None and out == f"active (running) pid {script_pid}\n"

    code, out = _run(ssh, service.restart)
    assert code == 0, out
    assert server.pid not in (None, script_pid)
    code, out = _run(ssh, service.logs)
    assert code == 0 and "Ready to accept connections" in out

    assert service.rdb_path == server.directory / "dump.rdb" and service.rdb_path.is_file()
    inventory = inventory_for(server, host, service, http_base_url="http://127.0.0.1:9")
    path = write_inventory(tmp_path / "inventory.yaml", inventory)
    text = path.read_text()
    assert PASSWORD not in text
    target = yaml.safe_load(text)["environments"]["sandbox"]["targets"]["sandbox"]
    assert target["redis"] == {
        "url": server.url,
        "password_file": str(server.directory / "redis.pass"),
        "timeout": "10s",
    }
    assert (server.directory / "redis.pass").read_text() == PASSWORD
    assert target["ssh"]["host"] == host.address and target["ssh"]["port"] == host.port
    assert target["ssh"]["service"]["stop"] == service.stop
    assert target["ssh"]["paths"]["rdb"] == str(service.rdb_path)
    assert target["http"] == {"base_url": "http://127.0.0.1:9", "timeout": "5s"}
    only_redis = inventory_for(server, None, None, password_env="REDIS_PW")
    assert only_redis["environments"]["sandbox"]["targets"]["sandbox"] == {
        "redis": {"url": server.url, "password_env": "REDIS_PW", "timeout": "10s"}
    }

    # The fixture's RedisServer still cleans up a server the script started (not its child).
    pid = server.pid
    server.stop()
    assert not port_is_open(server.host, server.port)
    assert pid is not None and not pid_alive(pid)


def test_cluster_gives_moved(redis_cluster: Callable[..., RedisCluster]) -> None:
    cluster = redis_cluster()
    assert len(cluster.nodes) == 3
    for node in cluster.nodes:
        with node.client() as client:
            assert "cluster_state:ok" in client.execute_command("CLUSTER", "INFO")
    owner = cluster.node_for_key("runbook:moved")
    other = next(n for n in cluster.nodes if n is not owner)
    plain = redis.Redis(host=other.host, port=other.port, retry=Retry(NoBackoff(), 0))
    with pytest.raises(MovedError) as moved:
        plain.get("runbook:moved")
    plain.close()
    assert isinstance(moved.value, redis.ResponseError)
    assert moved.value.node_addr == (owner.host, owner.port)
