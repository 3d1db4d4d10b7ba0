"""Shared fixtures: real redis-server / sshd processes from engine.sandbox, torn down after each test.

Factories rather than ready-made servers, so a test can ask for exactly the shape it needs (password,
cluster, several hosts) and still have everything stopped for it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.sandbox.redis_server import RedisCluster, RedisServer, SandboxUnavailable, find_binary
from engine.sandbox.seed import SeedSummary, seed_somabrain
from engine.sandbox.sshd import SshHost
from engine.sandbox.topologies import Replicated, start_replicated

INTEGRATION_DIR = Path(__file__).parent / "integration"


def require_binary(name: str) -> str:
    """Path of `name`; a missing binary skips the test locally but fails it under CI=true."""
    try:
        return find_binary(name)
    except SandboxUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


# `make test` runs the suite in several processes (pytest-xdist --dist loadfile --no-loadscope-reorder): each
# file is one unit of work, so a module fixture (one `rehearse --all`) runs once, and files go out in collection
# order. Those that take minutes come first, so that none is begun last and runs on alone.
LONGEST_FILES_FIRST = (
    "test_rehearsal_mutation.py",
    "test_packaging.py",
    "test_postmortem_evidence.py",
    "test_fleets.py",
    "test_tenant_export_round_trips.py",
    "test_rehearsal.py",
    "test_rehearsal_integrity.py",
)
# Each runs up to 4 rehearsal worlds at once: they take turns (_one_rehearsal_file_at_a_time), as in one process.
REHEARSAL_FILES = ("test_rehearsal_mutation.py", "test_rehearsal.py", "test_rehearsal_integrity.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(Path(item.path).name, len(rank)))  # stable: the rest keep their order


def _run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This run's temp root: shared by the xdist workers (their own dirs are popen-gwN/ inside it)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(autouse=True, scope="module")
def _one_rehearsal_file_at_a_time(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """A rehearsal file holds a lock of the run's for all its tests: loadgroup could keep these files in one
    process, but under pytest 9.2 it ignores xdist_group marks (xdist 3.8 sets the old `_nodeid`)."""
    if Path(str(request.node.path)).name not in REHEARSAL_FILES:
        yield
        return
    with open(_run_root(tmp_path_factory) / "rehearsal.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, and by the kernel if the process dies
        yield


@pytest.fixture
def redis_server() -> Iterator[Callable[..., RedisServer]]:
    """Factory: `redis_server(**RedisServer.start kwargs)`; every server started is stopped afterwards."""
    require_binary("redis-server")
    started: list[RedisServer] = []

    def start(**kwargs: Any) -> RedisServer:
        server = RedisServer.start(**kwargs)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def redis_cluster() -> Iterator[Callable[..., RedisCluster]]:
    """Factory: `redis_cluster(nodes=3)`; clusters are stopped afterwards."""
    require_binary("redis-server")
    require_binary("redis-cli")
    started: list[RedisCluster] = []

    def start(**kwargs: Any) -> RedisCluster:
        cluster = RedisCluster.start(**kwargs)
        started.append(cluster)
        return cluster

    yield start
    for cluster in reversed(started):
        cluster.stop()


@pytest.fixture
def replicated_deployment() -> Iterator[Callable[..., Replicated]]:
    """Factory: `replicated_deployment(replicas=2, sentinels=0)`; every node and Sentinel is stopped afterwards."""
    require_binary("redis-server")
    started: list[Replicated] = []

    def start(**kwargs: Any) -> Replicated:
        deployment = start_replicated(**kwargs)
        started.append(deployment)
        return deployment

    yield start
    for deployment in reversed(started):
        deployment.stop()


@pytest.fixture
def sshd_host() -> Iterator[Callable[..., SshHost]]:
    """Factory: `sshd_host(**SshHost.start kwargs)`; every host is stopped afterwards."""
    require_binary("sshd")
    require_binary("ssh-keygen")
    started: list[SshHost] = []

    def start(**kwargs: Any) -> SshHost:
        host = SshHost.start(**kwargs)
        started.append(host)
        return host

    yield start
    for host in reversed(started):
        host.stop()


@pytest.fixture
def seeded_redis(redis_server: Callable[..., RedisServer]) -> tuple[RedisServer, SeedSummary]:
    """A fresh server holding the default SomaBrain-like keyspace, with its summary."""
    server = redis_server()
    with server.client() as client:
        summary = seed_somabrain(client)
    return server, summary


@pytest.fixture
def tmp_transcripts(tmp_path: Path) -> Path:
    """Where a test's runs write transcripts (created lazily by the code under test)."""
    return tmp_path / "transcripts"


@pytest.fixture
def health_endpoint() -> Iterator[Callable[..., Any]]:
    """Factory: a SomaBrain-like /health endpoint, `health_endpoint(redis_ok=callable)`; stopped afterwards."""
    from engine.sandbox.health import HealthServer

    started: list[HealthServer] = []

    def start(**kwargs: Any) -> HealthServer:
        server = HealthServer(**kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(autouse=True, scope="session")
def _suite_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The procedures the suite validates and the catalogs it reads are cached in a directory of the suite's
    own (engine/user_cache.py), not the user's ~/.cache/runbook; the CLI processes tests start inherit it."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(autouse=True, scope="session")
def _subprocess_bytecode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The `runbook` processes tests start (hundreds of them) load compiled modules from one cache for the run,
    instead of compiling the engine from source each time as PYTHONDONTWRITEBYTECODE=1 would make them do
    (~0.15 s of CPU per process). The cache lives in the run's temp root, shared by xdist workers (each writes
    a module atomically; a stale one is recompiled: the .pyc records its source's mtime and size)."""
    root = _run_root(tmp_path_factory)
    saved = {name: os.environ.get(name) for name in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
