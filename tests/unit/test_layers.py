"""The layers: step kinds reach a protocol only through its adapter (engine/adapters/), never around it.

Every import of every module under engine/steps/ is read from its source (imports inside functions and
under TYPE_CHECKING included), so a kind that opens its own Redis connection, socket, process or SSH
session, or leans on the test sandbox, fails here rather than in a rehearsal that forgot the dry-run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STEPS = Path(__file__).resolve().parents[2] / "engine" / "steps"

# A protocol's library, or a way to reach the outside world without an adapter's dry-run guard.
FORBIDDEN = (
    "redis",  # engine/adapters/redis.py, redis_routing.py
    "paramiko",  # engine/adapters/ssh.py
    "requests",
    "httpx",
    "http.client",  # engine/adapters/http.py
    "urllib.request",
    "socket",  # engine/adapters/tcp.py
    "ssl",
    "subprocess",  # local programs: engine/adapters/local.py, scratch_redis.py, engine/backup/rdb.py
    "engine.sandbox",  # throwaway test servers, never a production path
    "engine.adapters.redis_replication",  # the replication socket: RedisAdapter.full_sync
)
# The redis-py client behind the adapter: a kind that reaches for it goes around the guard and the error table.
FORBIDDEN_ATTRIBUTES = frozenset({"client", "raw_client", "connection_pool", "_pool", "_client", "_raw", "_wrap"})


def _modules() -> list[Path]:
    return sorted(STEPS.glob("*.py"))


def _imported(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in `tree`, relative ones resolved against `package`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[: len(parts) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                found.append((node.lineno, str(node.args[0].value)))
    return found


def _forbidden(name: str) -> str | None:
    for banned in FORBIDDEN:
        if name == banned or name.startswith(banned + "."):
            return banned
    return None


def test_there_are_step_modules_to_check() -> None:
    names = {p.stem for p in _modules()}
    assert {"redis_step", "tenant_data_step", "monitor_step", "redis_auth_step", "rdb_step", "tcp_step"} <= names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_a_step_module_imports_no_protocol_library_nor_the_sandbox(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [f"{path.name}:{line}: imports {name}" for line, name in _imported(tree, "engine.steps") if _forbidden(name)]
    assert not bad, "step kinds go through engine/adapters/:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_a_step_module_never_reaches_for_the_client_behind_an_adapter(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [
        f"{path.name}:{node.lineno}: .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES
    ]
    assert not bad, "call the adapter's own methods, not the redis-py client behind it:\n" + "\n".join(bad)


def _check(source: str) -> list[str]:
    tree = ast.parse(source)
    return [name for _, name in _imported(tree, "engine.steps") if _forbidden(name)]


def test_the_walk_sees_imports_inside_functions_relative_ones_and_by_name() -> None:
    """The checker itself: each way a kind could import a forbidden module is seen (the test can fail)."""
    assert _check("def f():\n    import redis.exceptions\n") == ["redis.exceptions"]
    assert _check("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import paramiko\n") == ["paramiko"]
    assert _check("from ..sandbox.redis_server import RedisServer\n") == [
        "engine.sandbox.redis_server",
        "engine.sandbox.redis_server.RedisServer",
    ]
    assert _check("from engine import sandbox\n") == ["engine.sandbox"]
    assert _check("import importlib\nimportlib.import_module('socket')\n") == ["socket"]
    assert _check("from http import client\n") == ["http.client"]
    assert _check("from engine.adapters.tcp import probe\nimport redisx\n") == []
