"""Where a run goes: endpoints from `--redis URL` or an inventory file, with secrets resolved late.

Passwords never come from the command line: an inventory names an environment variable or a file,
and `--redis` takes the password from REDISCLI_AUTH as redis-cli does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from engine.errors import SourceError, UsageError
from engine.spec.params import parse_duration

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class RedisEndpoint:
    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_source: str | None = None  # "REDISCLI_AUTH", "env:NAME", "file:/path": named in the redactor
    tls: bool = False
    timeout: float = DEFAULT_TIMEOUT

    @property
    def url(self) -> str:
        """The endpoint as an operator reads it: never with the password."""
        user = f"{self.username}@" if self.username else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{user}{self.host}:{self.port}/{self.db}"


@dataclass(frozen=True)
class ServiceCommands:
    start: str | None = None
    stop: str | None = None
    restart: str | None = None
    status: str | None = None
    logs: str | None = None


@dataclass(frozen=True)
class SshEndpoint:
    host: str
    port: int = 22
    user: str = "root"
    key_file: str | None = None
    known_hosts: str | None = None
    host_key_policy: str = "strict"  # strict | accept-new
    timeout: float = DEFAULT_TIMEOUT
    service: ServiceCommands = field(default_factory=ServiceCommands)
    paths: dict[str, str] = field(default_factory=dict)
    service_user: str | None = None

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class HttpEndpoint:
    base_url: str
    timeout: float = 5.0
    health_path: str = "/health"


@dataclass(frozen=True)
class Target:
    name: str
    environment: str | None = None
    redis: RedisEndpoint | None = None
    ssh: SshEndpoint | None = None
    http: HttpEndpoint | None = None
    password_file: str | None = None  # where the Redis password lives, for procedures that rotate it

    @property
    def full_name(self) -> str:
        """What a destructive step asks the operator to type: production/cache and staging/cache differ."""
        return f"{self.environment}/{self.name}" if self.environment else self.name

    def describe(self) -> dict[str, Any]:
        """For the transcript header and the template variable `target`: no secrets in here."""
        return {
            "name": self.name,
            "environment": self.environment,
            "redis": self.redis.url if self.redis else None,
            "ssh": self.ssh.address if self.ssh else None,
            "http": self.http.base_url if self.http else None,
        }


def redis_from_url(
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    environ: dict[str, str] | None = None,
    password: str | None = None,
    password_source: str | None = None,
) -> RedisEndpoint:
    """`redis://[user@]host[:port][/db]`; a password inside the URL is refused (it would be on argv)."""
    environ = os.environ if environ is None else environ
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise UsageError(f"--redis: expected redis:// or rediss:// URL, got '{url}'")
    if parts.password:
        raise UsageError(
            "--redis: the URL contains a password; put it in the REDISCLI_AUTH environment "
            "variable or in an inventory (password_env / password_file) instead"
        )
    try:
        port = parts.port or 6379
    except ValueError:
        raise UsageError(f"--redis: invalid port in '{url}'") from None
    db_text = parts.path.lstrip("/") or "0"
    if not (db_text.isascii() and db_text.isdigit() and len(db_text) <= 5):  # 5,000 digits: no int()
        raise UsageError(f"--redis: database must be a number, got '{db_text}'")
    if password is None and environ.get("REDISCLI_AUTH"):
        password, password_source = environ["REDISCLI_AUTH"], "REDISCLI_AUTH"
    return RedisEndpoint(
        host=parts.hostname or "127.0.0.1",
        port=port,
        db=int(db_text),
        username=unquote(parts.username) if parts.username else None,
        password=password,
        password_source=password_source,
        tls=parts.scheme == "rediss",
        timeout=timeout,
    )


def load_inventory(path: str | Path) -> dict[str, Any]:
    """Read and validate an inventory file; errors name file:line:column and the field."""
    from engine.spec.schema import validate_against
    from engine.spec.yamlsource import read_yaml_file

    path = Path(path)
    located = read_yaml_file(path)  # size, depth, aliases and numbers bounded: exit 2, never a hang
    errors = validate_against("inventory.schema.json", located)
    if errors:
        raise UsageError(f"invalid inventory {path}", errors)
    return {"file": str(path), "data": located.data}


def target_from_inventory(inventory: dict[str, Any], name: str, *, environ: dict[str, str] | None = None) -> Target:
    """Pick `name` (or `environment/name`) and resolve its secrets from the environment or files."""
    environ = os.environ if environ is None else environ
    file, data = inventory["file"], inventory["data"]
    envs = data.get("environments", {})
    wanted_env, _, wanted = name.rpartition("/")
    matches = [
        (env, tname, t)
        for env, body in envs.items()
        for tname, t in body.get("targets", {}).items()
        if tname == wanted and (not wanted_env or env == wanted_env)
    ]
    if not matches:
        known = sorted(f"{env}/{t}" for env, body in envs.items() for t in body.get("targets", {}))
        raise UsageError(f"{file}: no target '{name}' (known: {', '.join(known) or 'none'})")
    if len(matches) > 1:
        raise UsageError(
            f"{file}: target '{name}' is in several environments; say "
            + " or ".join(f"'{env}/{t}'" for env, t, _ in matches)
        )
    env, tname, body = matches[0]
    base = Path(file).resolve().parent
    redis = ssh = http = None
    password_file = None
    if "redis" in body:
        spec = body["redis"]
        password, source = None, None
        if "password_env" in spec:
            var = spec["password_env"]
            if var not in environ:
                raise UsageError(f"{file}: target {tname}: environment variable {var} (password_env) is not set")
            password, source = environ[var], f"env:{var}"
        elif "password_file" in spec:
            pfile = _resolve_path(base, spec["password_file"])
            password_file = str(pfile)
            try:
                password, source = pfile.read_text(encoding="utf-8").strip(), f"file:{pfile}"
            except OSError as exc:
                raise UsageError(f"{file}: target {tname}: cannot read password_file {pfile}: {exc.strerror}") from None
        timeout = parse_duration(spec.get("timeout", DEFAULT_TIMEOUT))
        redis = redis_from_url(spec["url"], timeout=timeout, environ={}, password=password, password_source=source)
    if "ssh" in body:
        spec = body["ssh"]
        ssh = SshEndpoint(
            host=spec["host"],
            port=int(spec.get("port", 22)),
            user=spec.get("user", "root"),
            key_file=str(_resolve_path(base, spec["key_file"])) if spec.get("key_file") else None,
            known_hosts=str(_resolve_path(base, spec["known_hosts"])) if spec.get("known_hosts") else None,
            host_key_policy=spec.get("host_key_policy", "strict"),
            timeout=parse_duration(spec.get("timeout", DEFAULT_TIMEOUT)),
            service=ServiceCommands(**spec.get("service", {})),
            paths=dict(spec.get("paths", {})),
            service_user=spec.get("service_user"),
        )
    if "http" in body:
        spec = body["http"]
        http = HttpEndpoint(
            base_url=spec["base_url"].rstrip("/"),
            timeout=parse_duration(spec.get("timeout", 5.0)),
            health_path=spec.get("health_path", "/health"),
        )
    return Target(name=tname, environment=env, redis=redis, ssh=ssh, http=http, password_file=password_file)


def _resolve_path(base: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def missing_facets(target: Target, requires: tuple[str, ...], file: str) -> list[SourceError]:
    return [
        SourceError(file, None, None, "requires", f"the target '{target.name}' has no {facet} endpoint")
        for facet in requires
        if getattr(target, facet, None) is None
    ]
