"""One operator per target: a run that changes a target holds a lease on it until it ends.

Two on-call engineers running the same destructive procedure against the same Redis at the same moment
is what goes wrong in incidents with many hands. The lease lives where every operator already looks,
with no new infrastructure: a small key with a TTL in the target Redis itself (`SET NX PX` with a
random token; renewed and released only by its holder, through compare-and-set scripts), or, when that
Redis cannot be reached (the service-down procedures), a file in the team's shared transcripts
directory. A run killed by `kill -9` leaves a lease that expires by itself after its TTL.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from engine.errors import TargetError

KEY = "runbook:lease"
DEFAULT_TTL = 30.0
MAX_FILE = 64 * 1024

_RENEW = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if current == false and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
REVOKED_MS = 24 * 3600 * 1000  # a stolen lease stays lost for its old holder, even once the thief released it
# Renewing: ours -> extend; gone (evicted by an allkeys-* policy under memory pressure, or expired while
# the server was paused) -> ours again, unless it was stolen from us (the thief leaves a revocation
# key naming our token, which outlives its own release); someone else's -> lost.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: what a refused operator is told, and what both transcripts record."""

    operator: str
    run_id: str
    procedure: str
    incident: str | None
    since: str
    host: str = ""
    token: str = ""

    def describe(self) -> str:
        incident = f", incident {self.incident}" if self.incident else ""
        return f"{self.operator} (run {self.run_id}, {self.procedure}{incident}, since {self.since})"

    def public(self) -> dict[str, Any]:
        """The holder without its token: the token is what lets a run renew or release; it stays secret."""
        return {k: v for k, v in asdict(self).items() if k != "token"}


class LeaseHeld(Exception):
    def __init__(self, holder: Holder, where: str):
        super().__init__(f"target is leased by {holder.describe()} [{where}]")
        self.holder = holder
        self.where = where


class Store(Protocol):
    where: str

    def acquire(self, holder: Holder, ttl_ms: int, steal: bool) -> Holder | None: ...
    def renew(self, token: str, ttl_ms: int) -> bool: ...
    def release(self, token: str) -> bool: ...


class RedisStore:
    """The lease as a key in the target Redis. `call(argv)` is the run's own (live) Redis adapter."""

    def __init__(self, call: Callable[[list[Any]], Any], key: str = KEY):
        self._call = call
        self.key = key
        self.where = f"redis key {key}"
        self._values: dict[str, str] = {}  # token -> the exact value written (the scripts compare it)

    def acquire(self, holder: Holder, ttl_ms: int, steal: bool) -> Holder | None:
        """None when taken; else the current holder (nothing changed) unless `steal`, then the one replaced."""
        value = json.dumps(asdict(holder), sort_keys=True)
        if self._call(["SET", self.key, value, "NX", "PX", ttl_ms]):
            return None
        current = _holder(self._call(["GET", self.key]))
        if not steal:
            return current
        if current is not None and current.token:
            self._call(["SET", self._revoked(current.token), "1", "PX", REVOKED_MS])
        self._call(["SET", self.key, value, "PX", ttl_ms])
        return current

    def _revoked(self, token: str) -> str:
        return f"{self.key}:revoked:{token}"

    def renew(self, token: str, ttl_ms: int) -> bool:
        return bool(self._call(["EVAL", _RENEW, 2, self.key, self._revoked(token), self._value_of(token), ttl_ms]))

    def release(self, token: str) -> bool:
        return bool(self._call(["EVAL", _RELEASE, 1, self.key, self._value_of(token)]))

    def _value_of(self, token: str) -> str:
        return self._values.get(token, "")

    def remember(self, holder: Holder) -> None:
        self._values[holder.token] = json.dumps(asdict(holder), sort_keys=True)


class FileStore:
    """The lease as a file in the shared transcripts directory, for when the target Redis is down."""

    def __init__(self, directory: Path, target: str):
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in target) or "target"
        self.path = Path(directory) / "leases" / f"{safe}.json"
        self.where = f"file {self.path}"
        self._mine: list[Holder] = []

    def acquire(self, holder: Holder, ttl_ms: int, steal: bool) -> Holder | None:
        self._mine.append(holder)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps({**asdict(holder), "expires": time.time() + ttl_ms / 1000})
        for _ in range(3):
            try:
                self._create(record)
                return None
            except FileExistsError:
                current, expires = self._read()
                if current is not None and expires > time.time() and not steal:
                    return current
                if steal and current is not None and current.token:
                    self._revoked(current.token).touch()
                self._replace(record)  # expired (a killed run) or stolen: take it over
                return current if steal else None
        raise TargetError(f"lease file {self.path} keeps changing under us")

    def renew(self, token: str, ttl_ms: int) -> bool:
        current, _ = self._read()
        if current is None:  # removed (or released by a thief): ours again unless it was stolen from us
            mine = next((h for h in self._mine if h.token == token), None)
            if mine is None or self._revoked(token).exists():
                return False
            try:
                self._create(json.dumps({**asdict(mine), "expires": time.time() + ttl_ms / 1000}))
            except FileExistsError:
                return False  # someone took it in between
            return True
        if current.token != token:
            return False
        self._replace(json.dumps({**asdict(current), "expires": time.time() + ttl_ms / 1000}))
        return True

    def release(self, token: str) -> bool:
        current, _ = self._read()
        if current is None or current.token != token:
            return False
        self.path.unlink(missing_ok=True)
        return True

    def _revoked(self, token: str) -> Path:
        return self.path.with_name(f".{self.path.name}.revoked-{token}")

    def _create(self, record: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags, 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(record)

    def _replace(self, record: str) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(8)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(temporary, flags, 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(record)
        os.replace(temporary, self.path)

    def _read(self) -> tuple[Holder | None, float]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None, 0.0
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_FILE)
        try:
            parsed = json.loads(data)
            expires = float(parsed.pop("expires"))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None, 0.0  # a damaged lease file protects nobody: treat it as expired
        return _holder(json.dumps(parsed)), expires


def _holder(raw: Any) -> Holder | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace"))
        fields = {k: str(v) if v is not None else None for k, v in data.items() if k in Holder.__annotations__}
        # the ignore below: the file's fields, by name; a missing one is the TypeError caught below
        return Holder(**fields)  # type: ignore[arg-type]
    except (ValueError, TypeError, AttributeError, RecursionError):  # JSON but no object, or nested past the limit
        return Holder(operator="(unreadable lease)", run_id="?", procedure="?", incident=None, since="?")


class Lease:
    """Taken before the first change, renewed in the background, released at the end."""

    def __init__(self, store: Store, holder: Holder, ttl: float = DEFAULT_TTL):
        self.store = store
        self.holder = holder
        self.ttl_ms = max(1000, int(ttl * 1000))
        self.held = False
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, steal: bool = False) -> Holder | None:
        """Take it; LeaseHeld if someone else holds it (unless `steal`). Returns the holder it replaced."""
        if isinstance(self.store, RedisStore):
            self.store.remember(self.holder)
        replaced = self.store.acquire(self.holder, self.ttl_ms, steal)
        if replaced is not None and not steal:
            raise LeaseHeld(replaced, self.store.where)
        self.held = True
        self._thread = threading.Thread(target=self._renew, name="runbook-lease", daemon=True)
        self._thread.start()
        return replaced

    def still_held(self) -> bool:
        """Renew now and say whether the lease is still ours: asked before every approval, not left to the timer."""
        if self.lost or not self.held:
            return False
        try:
            if not self.store.renew(self.holder.token, self.ttl_ms):
                self.lost = True
        except Exception:  # unreachable store: the lease stands until it expires
            pass
        return not self.lost

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self.store.renew(self.holder.token, self.ttl_ms):
                    self.lost = True
                    return
            except Exception:
                continue

    def release(self) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.held:
            return False
        self.held = False
        try:
            return self.store.release(self.holder.token)
        except Exception:
            return False


def new_holder(operator: str, run_id: str, procedure: str, incident: str | None, host: str) -> Holder:
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Holder(operator, run_id, procedure, incident, since, host, secrets.token_hex(16))
