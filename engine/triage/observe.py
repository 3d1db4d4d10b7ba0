"""One round of read-only looks at a Redis, shared by every procedure's symptoms.

One INFO all, one CONFIG GET *, one CLIENT LIST, one SLOWLOG GET, one LATENCY LATEST, one ACL LOG, through the
Redis adapter with allow_mutation=False: whatever a symptom asks, nothing here can change the target.
Each read is recorded in the transcript as a read step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from engine.errors import RunbookError
from engine.targets import RedisEndpoint

SECRET_CONFIG = frozenset({"requirepass", "masterauth", "masteruser", "tls-key-file-pass", "tls-client-key-file-pass"})
SLOWLOG_ENTRIES = 128
ACL_LOG_ENTRIES = 128

Record = Callable[[str, str, float, Any, str | None], None]  # step id, command, ms, result, error


def _number(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def observe(endpoint: RedisEndpoint, record: Record = lambda *a: None) -> dict[str, Any]:
    """The findings every symptom expression sees (see engine.triage.symptoms.FINDINGS)."""
    from engine.adapters.redis import RedisAdapter

    findings: dict[str, Any] = {
        "reachable": False,
        "auth_failed": False,
        "error": "",
        "info": {},
        "config": {},
        "clients": [],
        "slowlog": [],
        "latency": [],
        "acl_log": [],
        "keys": 0,
        "expires": 0,
        "now": time.time(),
    }
    adapter = RedisAdapter(endpoint, allow_mutation=False)
    try:
        started = time.monotonic()
        try:
            adapter.connect()
        except RunbookError as exc:
            findings["error"] = str(exc)
            findings["auth_failed"] = "authentication" in str(exc).lower() or "NOAUTH" in str(exc)
            record("connect", "PING", _ms(started), None, str(exc))
            return findings
        findings["reachable"] = True
        record("connect", "PING", _ms(started), "PONG", None)
        reads: list[tuple[str, str, Callable[[], Any]]] = [
            ("info", "INFO all", lambda: adapter.info("all")),
            ("config", "CONFIG GET *", lambda: adapter.config_get("*")),
            ("clients", "CLIENT LIST", adapter.client_list),
            ("slowlog", f"SLOWLOG GET {SLOWLOG_ENTRIES}", lambda: adapter.slowlog(SLOWLOG_ENTRIES)),
            ("latency", "LATENCY LATEST", lambda: adapter.call(["LATENCY", "LATEST"])),
            ("acl_log", f"ACL LOG {ACL_LOG_ENTRIES}", lambda: adapter.acl_log(ACL_LOG_ENTRIES)),
        ]
        for name, command, read in reads:
            started = time.monotonic()
            try:
                value = read()
            except RunbookError as exc:  # a read this server refuses (renamed, ACL): the symptoms go without
                record(name, command, _ms(started), None, str(exc))
                continue
            value = _clean(name, value)
            findings[name] = value
            record(name, command, _ms(started), _summary(name, value), None)
        for key, db in findings["info"].items():
            if key.startswith("db") and isinstance(db, dict):
                findings["keys"] += int(db.get("keys", 0))
                findings["expires"] += int(db.get("expires", 0))
        findings["now"] = time.time()
        return findings
    finally:
        adapter.close()


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)


def _clean(name: str, value: Any) -> Any:
    if name == "config":
        return {k: v for k, v in dict(value).items() if k not in SECRET_CONFIG}
    if name == "clients":
        return [{k: _number(v) for k, v in client.items()} for client in value]
    if name == "acl_log":  # flat and typed: {count, reason, context, object, username, age_seconds, addr}
        out = []
        for entry in value:
            info = entry.get("client-info")
            out.append(
                {
                    "count": int(entry.get("count", 0)),
                    "reason": str(entry.get("reason", "")),
                    "context": str(entry.get("context", "")),
                    "object": str(entry.get("object", "")),
                    "username": str(entry.get("username", "")),
                    "age_seconds": float(entry.get("age-seconds", 0.0)),
                    "addr": str(info.get("addr", "")) if isinstance(info, dict) else "",
                }
            )
        return out
    if name == "slowlog":
        out = []
        for entry in value:
            command = entry.get("command", "")
            if isinstance(command, bytes):
                command = command.decode("utf-8", "replace")
            out.append({**entry, "command": str(command)})
        return out
    return value


def _summary(name: str, value: Any) -> Any:
    """What the transcript keeps of a read: INFO and CONFIG in full, lists as counts (a leak is 10k clients)."""
    if name in ("clients", "slowlog", "acl_log"):
        return {"count": len(value)}
    return value
