"""Where a run goes: endpoints from `--redis URL` or an inventory file, with secrets resolved late.

Passwords never come from the command line: an inventory names an environment variable or a file,
and `--redis` takes the password from REDISCLI_AUTH as redis-cli does.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from engine.errors import SourceError, UsageError
from engine.spec.params import parse_duration

DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class TlsSettings:
    """How a rediss:// target proves itself: the CA that signed its certificate, the name on it, our own cert."""

    ca_file: str | None = None  # None: the system's trusted CAs
    cert_file: str | None = None  # client certificate, when the server asks for one (tls-auth-clients)
    key_file: str | None = None
    server_name: str | None = None  # sent as SNI and checked against the certificate; default: the URL's host


def tls_context(settings: TlsSettings) -> ssl.SSLContext:
    """A verifying client context: certificates are always checked, and so is the server's name."""
    context = ssl.create_default_context(cafile=settings.ca_file)
    if settings.cert_file:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    return context


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
    tls_settings: TlsSettings = field(default_factory=TlsSettings)

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
    # the host of each Redis node (keyed "HOST:PORT" as the deployment names it), for `ssh: {on: node}`;
    # a node not listed is reached on its own host with the settings above
    nodes: dict[str, SshEndpoint] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def for_node(self, address: str) -> SshEndpoint:
        """The SSH endpoint of the host a Redis node (HOST:PORT) runs on: listed in `nodes`, else its own host."""
        listed = self.nodes.get(address)
        if listed is not None:
            return listed
        host = address.rpartition(":")[0].strip("[]")
        return replace(self, host=host, nodes={})


@dataclass(frozen=True)
class HttpEndpoint:
    base_url: str
    timeout: float = 5.0
    health_path: str = "/health"


@dataclass(frozen=True)
class SentinelSpec:
    """Where Sentinel answers and which master to ask it for; its password is its own (not the data nodes')."""

    addresses: tuple[tuple[str, int], ...]
    master: str
    password: str | None = field(default=None, repr=False)
    password_source: str | None = None


def parse_address(text: str, where: str) -> tuple[str, int]:
    """HOST:PORT (a Sentinel's, a node's); a clear error otherwise."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or not _HOST.fullmatch(host):
        raise UsageError(f"{where}: {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Target:
    name: str
    environment: str | None = None
    redis: RedisEndpoint | None = None
    ssh: SshEndpoint | None = None
    http: HttpEndpoint | None = None
    password_file: str | None = None  # where the Redis password lives, for procedures that rotate it
    sentinel: SentinelSpec | None = None  # the deployment is found through Sentinel (redis.url: credentials, db)

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
            **({"ssh_nodes": {a: e.address for a, e in self.ssh.nodes.items()}} if self.ssh and self.ssh.nodes else {}),
            **(
                {
                    "sentinel": {
                        "addresses": [f"{h}:{p}" for h, p in self.sentinel.addresses],
                        "master": self.sentinel.master,
                    }
                }
                if self.sentinel
                else {}
            ),
        }


CREDENTIAL_ADVICE = (
    "a URL never carries a credential (it would show in ps, shell history and transcripts): give the "
    "password through REDISCLI_AUTH (--redis) or the inventory's password_env / password_file"
)
_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}")


def _carries_credential(url: str) -> bool:
    """user:password@ (also percent-encoded), a query, a fragment or ;params: where URLs hide secrets."""
    rest = url.partition("://")[2]
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    userinfo = netloc.rpartition("@")[0] if "@" in netloc else ""
    return ":" in unquote(userinfo) or any(c in rest for c in "?#;")


def url_problem(url: str) -> str | None:
    """What is wrong with a target URL, or None. Never quotes the URL: its user part or query may be a secret."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "is not a URL: expected redis://[user@]host[:port][/db] or rediss://..."
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if _carries_credential(url):
        return f"carries a credential or options (in its user part, query or fragment; not shown): {CREDENTIAL_ADVICE}"
    if scheme.lower() not in ("redis", "rediss"):
        shown = f"'{scheme}://'" if _SCHEME.fullmatch(scheme) else "another scheme"
        return f"must start with redis:// or rediss://, not {shown}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "has an invalid host or port (not shown)"
    host = netloc.rpartition("@")[2]
    host = host[: host.find("]") + 1] if host.startswith("[") else host.partition(":")[0]
    if not host or not _HOST.fullmatch(host):
        return "has an invalid host name (not shown)"
    if port == 0:
        return "has an invalid port"
    db_text = parts.path.lstrip("/") or "0"
    if not db_text.isascii() or not db_text.isdigit() or "/" in db_text or len(db_text) > 5:  # no int() of 5,000 digits
        return "names its database with something other than a number (the path after the host; not shown)"
    return None


def redis_from_url(
    url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    environ: Mapping[str, str] | None = None,
    password: str | None = None,
    password_source: str | None = None,
    tls_settings: TlsSettings | None = None,
    where: str = "--redis",
) -> RedisEndpoint:
    """`redis://[user@]host[:port][/db]`; a credential or option inside the URL is refused, never echoed."""
    environ = os.environ if environ is None else environ
    problem = url_problem(url)
    if problem:
        raise UsageError(f"{where}: the URL {problem}")
    parts = urlsplit(url)
    if password is None and environ.get("REDISCLI_AUTH"):
        password, password_source = environ["REDISCLI_AUTH"], "REDISCLI_AUTH"
    tls = parts.scheme.lower() == "rediss"
    if tls_settings is not None and tls_settings != TlsSettings() and not tls:
        raise UsageError(f"{where}: tls settings need a rediss:// URL (a redis:// URL is plain TCP)")
    return RedisEndpoint(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        db=int(parts.path.lstrip("/") or "0"),
        username=unquote(parts.username) if parts.username else None,
        password=password,
        password_source=password_source,
        tls=tls,
        timeout=timeout,
        tls_settings=tls_settings or TlsSettings(),
    )


def load_inventory(path: str | Path) -> dict[str, Any]:
    """Read and validate an inventory file; errors name file:line:column and the field."""
    from engine.spec.schema import validate_against
    from engine.spec.yamlsource import read_yaml_file

    path = Path(path)
    located = read_yaml_file(path)  # size, depth, aliases and numbers bounded: exit 2, never a hang
    url_errors = _url_errors(located)
    quoted = {e.path for e in url_errors}
    errors = url_errors + [e for e in validate_against("inventory.schema.json", located) if e.path not in quoted]
    if errors:
        raise UsageError(f"invalid inventory {path}", errors)
    return {"file": str(path), "data": located.data}


def _url_errors(located: Any) -> list[SourceError]:
    """Every target URL checked before the schema is, whose pattern errors would quote the URL (and its secret)."""
    errors = []
    envs = located.data.get("environments") if isinstance(located.data, dict) else None
    for env, body in (envs or {}).items() if isinstance(envs, dict) else ():
        targets = body.get("targets") if isinstance(body, dict) else None
        for name, target in (targets or {}).items() if isinstance(targets, dict) else ():
            redis = target.get("redis") if isinstance(target, dict) else None
            url = redis.get("url") if isinstance(redis, dict) else None
            problem = url_problem(url) if isinstance(url, str) else None
            if problem:
                path = ("environments", env, "targets", name, "redis", "url")
                errors.append(located.error(path, f"the URL {problem}"))
            errors.extend(_node_key_errors(located, ("environments", env, "targets", name), target))
            http = target.get("http") if isinstance(target, dict) else None
            base = http.get("base_url") if isinstance(http, dict) else None
            if isinstance(base, str) and _carries_credential(base):
                path = ("environments", env, "targets", name, "http", "base_url")
                errors.append(
                    located.error(
                        path,
                        "the URL carries a credential or a query (not shown); it would reach "
                        "transcripts: an HTTP base_url is scheme://host[:port][/path]",
                    )
                )
    return errors


def _node_key_errors(located: Any, path: tuple[Any, ...], target: Any) -> list[SourceError]:
    """Each key of `ssh.nodes` is a Redis node's HOST:PORT, as the deployment names it; at most once."""
    ssh = target.get("ssh") if isinstance(target, dict) else None
    nodes = ssh.get("nodes") if isinstance(ssh, dict) else None
    if not isinstance(nodes, dict):
        return []
    errors: list[SourceError] = []
    seen: dict[tuple[str, int], str] = {}
    for key in nodes:
        where = (*path, "ssh", "nodes", key)
        try:
            address = parse_address(key, "key")
        except UsageError:
            errors.append(located.error(where, f"{key!r} is not a Redis node's HOST:PORT (as the deployment names it)"))
            continue
        if address in seen:
            errors.append(located.error(where, f"the node {key!r} is listed twice (also as {seen[address]!r})"))
        seen[address] = key
    return errors


def target_from_inventory(inventory: dict[str, Any], name: str, *, environ: Mapping[str, str] | None = None) -> Target:
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
    sentinel: SentinelSpec | None = None
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
            password, source = _read_password_file(pfile, f"{file}: target {tname}"), f"file:{pfile}"
        timeout = parse_duration(spec.get("timeout", DEFAULT_TIMEOUT))
        if "sentinel" in spec:
            sentinel = _sentinel_spec(spec["sentinel"], base, environ, f"{file}: target {tname}: redis.sentinel")
        redis = redis_from_url(
            # the ignore below: no url means a sentinel (the schema requires one of them), so `sentinel` is set
            spec.get("url") or "redis://{}:{}".format(*sentinel.addresses[0]),  # type: ignore[union-attr]
            timeout=timeout,
            environ={},
            password=password,
            password_source=source,
            tls_settings=_tls_settings(base, spec.get("tls") or {}, f"{file}: target {tname}: redis.tls"),
            where=f"{file}: target {tname}: redis.url",
        )
    if "ssh" in body:
        ssh = _ssh_endpoint(body["ssh"], base)
    if "http" in body:
        spec = body["http"]
        http = HttpEndpoint(
            base_url=spec["base_url"].rstrip("/"),
            timeout=parse_duration(spec.get("timeout", 5.0)),
            health_path=spec.get("health_path", "/health"),
        )
    return Target(
        name=tname,
        environment=env,
        redis=redis,
        ssh=ssh,
        http=http,
        password_file=password_file,
        sentinel=sentinel,
    )


def _ssh_endpoint(spec: dict[str, Any], base: Path) -> SshEndpoint:
    """The target's `ssh` facet, and each entry of its `nodes` map read over the facet's settings (a node
    entry without `host` is the node's own host)."""
    facet = _ssh_settings(spec, base, SshEndpoint(host=spec["host"]))
    nodes = {}
    for key, entry in (spec.get("nodes") or {}).items():
        host, port = parse_address(key, "ssh.nodes")  # checked with its file:line when the inventory was read
        nodes[f"{host}:{port}"] = _ssh_settings(entry or {}, base, replace(facet, host=host))
    return replace(facet, nodes=nodes)


def _ssh_settings(spec: dict[str, Any], base: Path, default: SshEndpoint) -> SshEndpoint:
    """`spec` over `default`: service commands and paths are merged one by one."""
    return SshEndpoint(
        host=spec.get("host", default.host),
        port=int(spec.get("port", default.port)),
        user=spec.get("user", default.user),
        key_file=str(_resolve_path(base, spec["key_file"])) if spec.get("key_file") else default.key_file,
        known_hosts=str(_resolve_path(base, spec["known_hosts"])) if spec.get("known_hosts") else default.known_hosts,
        host_key_policy=spec.get("host_key_policy", default.host_key_policy),
        timeout=parse_duration(spec["timeout"]) if "timeout" in spec else default.timeout,
        service=ServiceCommands(**{**vars(default.service), **spec.get("service", {})}),
        paths={**default.paths, **spec.get("paths", {})},
        service_user=spec.get("service_user", default.service_user),
    )


def _sentinel_spec(spec: dict[str, Any], base: Path, environ: Mapping[str, str], where: str) -> SentinelSpec:
    addresses = tuple(parse_address(a, f"{where}.addresses") for a in spec["addresses"])
    password, source = None, None
    if "password_env" in spec:
        var = spec["password_env"]
        if var not in environ:
            raise UsageError(f"{where}: environment variable {var} (password_env) is not set")
        password, source = environ[var], f"env:{var}"
    elif "password_file" in spec:
        pfile = _resolve_path(base, spec["password_file"])
        password, source = _read_password_file(pfile, where), f"file:{pfile}"
    return SentinelSpec(addresses, spec["master"], password, source)


def _read_password_file(path: Path, where: str) -> str:
    """A regular file of at most PASSWORD_FILE_MAX_BYTES; one open to others gets a warning, as ssh gives."""
    import sys

    from engine import fsutil

    try:
        text = fsutil.read_text(path, max_bytes=fsutil.PASSWORD_FILE_MAX_BYTES, what="the password_file")
    except OSError as exc:
        raise UsageError(f"{where}: cannot read password_file {path}: {exc.strerror}") from None
    mode = fsutil.open_to_others(path)
    if mode is not None:
        print(
            f"runbook: warning: password_file {path} can be read or changed by other users "
            f"(mode {mode:o}); run: chmod 600 {path}",
            file=sys.stderr,
        )
    return text.strip()


def _tls_settings(base: Path, spec: dict[str, Any], where: str) -> TlsSettings:
    """The inventory's tls block, paths resolved next to the inventory and loaded once to fail early."""
    files = {key: str(_resolve_path(base, spec[key])) for key in ("ca_file", "cert_file", "key_file") if spec.get(key)}
    settings = TlsSettings(server_name=spec.get("server_name"), **files)
    if settings.key_file and not settings.cert_file:
        raise UsageError(f"{where}: key_file needs cert_file (the client certificate it belongs to)")
    if settings == TlsSettings():
        return settings  # nothing of ours to load (the system's CAs are loaded when a rediss:// connects)
    try:
        tls_context(settings)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
        raise UsageError(f"{where}: cannot load the CA file or client certificate/key: {reason}") from None
    return settings


def _resolve_path(base: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def missing_facets(target: Target, requires: tuple[str, ...], file: str) -> list[SourceError]:
    return [
        SourceError(file, None, None, "requires", f"the target '{target.name}' has no {facet} endpoint")
        for facet in requires
        if getattr(target, facet, None) is None
    ]


FLEET_CHARS = frozenset("*?[")


def is_pattern(name: str) -> bool:
    """A --target that names a group (`production/*`, `*/cache`) rather than one target."""
    return any(c in FLEET_CHARS for c in name)


def inventory_entries(inventory: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """(environment/name, tags) of every target, in the inventory's own order."""
    return [
        (f"{env}/{name}", tuple(body.get("tags") or ()))
        for env, envbody in inventory["data"].get("environments", {}).items()
        for name, body in envbody.get("targets", {}).items()
    ]


def _matches(term: str, full: str, tags: tuple[str, ...]) -> bool:
    """NAME, ENVIRONMENT/NAME or a glob of either, or a tag (`tag:NAME` or a bare tag)."""
    from fnmatch import fnmatchcase

    if term.startswith("tag:"):
        return term[4:] in tags
    name = full.rpartition("/")[2]
    return fnmatchcase(full, term) or ("/" not in term and fnmatchcase(name, term)) or term in tags


def select_targets(
    inventory: dict[str, Any],
    patterns: tuple[str, ...] | list[str],
    limit: tuple[str, ...] | list[str] = (),
    exclude: tuple[str, ...] | list[str] = (),
) -> list[str]:
    """The targets a fleet run goes to, in pattern order then inventory order, each once.

    A pattern that matches nothing is an error (a typo must not shrink a rollout silently); so is a
    selection that --limit/--exclude empty."""
    entries = inventory_entries(inventory)
    chosen: list[str] = []
    for pattern in patterns:
        found = [full for full, tags in entries if _matches(pattern, full, tags)]
        if not found:
            known = ", ".join(full for full, _ in entries) or "none"
            raise UsageError(f"{inventory['file']}: --target '{pattern}' matches no target (known: {known})")
        chosen.extend(full for full in found if full not in chosen)
    tags_of = dict(entries)
    if limit:
        chosen = [full for full in chosen if any(_matches(term, full, tags_of[full]) for term in limit)]
    if exclude:
        chosen = [full for full in chosen if not any(_matches(term, full, tags_of[full]) for term in exclude)]
    if not chosen:
        raise UsageError(f"{inventory['file']}: --limit/--exclude leave no target to run on")
    return chosen
