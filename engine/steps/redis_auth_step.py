"""`redis_auth:` steps: the credential work of a Redis password rotation, with the password never shown.

- `generate: {length}`: a strong random password, as a *secret value*: `{{ name.value }}` is the
  password where a step needs it; everything that prints or serialises the value itself (console,
  transcript, `--json`) sees `[SECRET:name]`, and the password is registered with the run's
  redactor before the step ends, so it is masked wherever else it might turn up.
- `add: {password}`: `ACL SETUSER default ><password>`: the default user accepts the new password
  *alongside* the old one (the first phase of a crash-safe rotation).
- `rotate: {password, kill_sessions}`: one MULTI/EXEC: `CONFIG SET requirepass <password>` (the
  new password becomes the only one) and `CLIENT KILL USER default SKIPME yes` (every session
  opened with the old password, except this run's, is cut in the same instant: an attacker's open
  session gets no window to read the new password with CONFIG GET).
- `check: {password | initial, username}`: AUTH + PING on a fresh connection, never the run's
  pool -> `{accepted, error, username}`. `initial: true` checks the credential this run started
  with (inventory or REDISCLI_AUTH), which no template ever sees.
- `use: {password}`: switch the run's own connection to a password, after checking on a fresh
  connection that the server accepts it (a refused password leaves the run's connection alone).
- `sessions: {}`: CLIENT LIST as data: every client, and the sessions authenticated as the default
  user other than this run's own (what a rotation's kill cuts), for the audit and its verification.

These commands go through this kind rather than `redis:` steps for two reasons: the `redis:` kind
measures a blast radius with `COMMAND GETKEYS <the whole command>`, which would show the new password
in clear to any MONITOR session (Redis redacts ACL SETUSER's arguments, not COMMAND GETKEYS's), and
CONFIG SET requirepass + CLIENT KILL must be one transaction.
"""

from __future__ import annotations

import secrets
import string
from typing import TYPE_CHECKING, Any

from engine.errors import ActionFailed, UsageError
from engine.spec.model import Effect
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.adapters.redis import RedisAdapter
    from engine.run.context import StepContext

DEFAULT_USER = "default"  # requirepass is the default user's password
ALPHABET = string.ascii_letters + string.digits + "-_"  # URL-, shell- and redis.conf-safe
MIN_LENGTH, MAX_LENGTH = 16, 256
SHOWN_SESSIONS = 20

_PASSWORD = {
    "type": "string",
    "description": "The password, e.g. '{{ new_password.value }}' (a generated secret's `.value`).",
}
SCHEMA = {
    "type": "object",
    "description": "Redis credentials, the password never shown. Exactly one of: generate, add, rotate, check, use.",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "generate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"length": {"type": "integer", "minimum": MIN_LENGTH, "maximum": MAX_LENGTH, "default": 32}},
            "description": "A random password -> a secret value: `{{ <register>.value }}` is the password, "
            "anything else (console, transcript, --json) shows [SECRET:<register>].",
        },
        "add": {
            "type": "object",
            "additionalProperties": False,
            "required": ["password"],
            "properties": {"password": _PASSWORD},
            "description": "ACL SETUSER default ><password>: accepted alongside the current password (destructive).",
        },
        "rotate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["password"],
            "properties": {
                "password": _PASSWORD,
                "kill_sessions": {
                    "type": "boolean",
                    "default": True,
                    "description": "Also CLIENT KILL USER default SKIPME yes, in the same MULTI/EXEC.",
                },
            },
            "description": "MULTI; CONFIG SET requirepass <password>; CLIENT KILL USER default SKIPME yes; EXEC "
            "-> {requirepass, sessions_killed} (destructive).",
        },
        "check": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "password": _PASSWORD,
                "username": {"type": "string"},
                "initial": {"const": True, "description": "The credential this run started with."},
            },
            "oneOf": [{"required": ["password"]}, {"required": ["initial"]}],
            "description": "AUTH + PING on a fresh connection -> {accepted, error, username}.",
        },
        "use": {
            "type": "object",
            "additionalProperties": False,
            "required": ["password"],
            "properties": {"password": _PASSWORD},
            "description": "Later steps connect with this password (checked first) -> {switched, client_id}.",
        },
        "sessions": {
            "type": "object",
            "additionalProperties": False,
            "properties": {},
            "description": "CLIENT LIST -> {own_id, total, count, ids, replicas, monitors, pubsub, sessions, clients}: "
            "`sessions`/`ids` are the default user's connections other than this run's.",
        },
    },
}


class SecretValue:
    """A secret a step produced. `.value` is the secret; str(), repr() and JSON show `[SECRET:name]`."""

    __slots__ = ("_name", "_value")

    def __init__(self, name: str, value: str):
        self._name = name
        self._value = value

    @property
    def value(self) -> str:
        return self._value

    @property
    def name(self) -> str:
        return self._name

    @property
    def length(self) -> int:
        return len(self._value)

    def __str__(self) -> str:
        return f"[SECRET:{self._name}]"

    __repr__ = __str__


def generate_password(length: int = 32) -> str:
    """`length` characters from a 64-symbol alphabet (6 bits each: 32 characters = 192 bits)."""
    if not MIN_LENGTH <= int(length) <= MAX_LENGTH:
        raise UsageError(f"redis_auth.generate: length must be in [{MIN_LENGTH}, {MAX_LENGTH}], got {length}")
    return "".join(secrets.choice(ALPHABET) for _ in range(int(length)))


def password_text(value: Any, op: str) -> str:
    """The password a template gave: a secret value is unwrapped; an empty one is refused."""
    text = value.value if isinstance(value, SecretValue) else ("" if value is None else str(value))
    if not text:
        raise UsageError(f"redis_auth.{op}: the password is empty")
    if text.startswith("[SECRET:"):
        # `{{ name }}` instead of `{{ name.value }}`: setting the placeholder as the password would lock everyone out
        raise UsageError(f"redis_auth.{op}: got the placeholder {text}, not a password: use '{{{{ <name>.value }}}}'")
    return text


def parse_client_list(text: str) -> list[dict[str, str]]:
    """CLIENT LIST text -> one dict of its key=value fields per client (values kept as text)."""
    clients = []
    for line in str(text or "").splitlines():
        fields = dict(part.partition("=")[::2] for part in line.split(" ") if "=" in part)
        if fields:
            clients.append(fields)
    return clients


def sessions_of(clients: list[dict[str, str]], user: str, own_id: int | str | None) -> list[dict[str, str]]:
    """The sessions authenticated as `user`, except `own_id` (the connection that would send the kill) and
    this run's lease connection, which a renewal may have open just then (it reconnects by itself)."""
    from engine.adapters.redis import LEASE_CLIENT_NAME

    return [
        c
        for c in clients
        if c.get("user") == user and str(c.get("id")) != str(own_id) and c.get("name") != LEASE_CLIENT_NAME
    ]


def describe_sessions(sessions: list[dict[str, str]]) -> dict[str, Any]:
    """What a kill would cut, for the gate: counts by kind and the first addresses."""
    return {
        "user": DEFAULT_USER,
        "count": len(sessions),
        "replicas": sum("S" in c.get("flags", "") for c in sessions),
        "monitors": sum("O" in c.get("flags", "") for c in sessions),
        "pubsub": sum("P" in c.get("flags", "") for c in sessions),
        "clients": [
            f"id={c.get('id')} {c.get('addr')}" + (f" name={c['name']}" if c.get("name") else "")
            for c in sessions[:SHOWN_SESSIONS]
        ],
    }


AUDIT_FIELDS = ("id", "addr", "laddr", "name", "user", "age", "idle", "flags", "db", "cmd", "lib-name", "lib-ver")


def session_report(clients: list[dict[str, str]], own_id: int | str | None) -> dict[str, Any]:
    """Every client (audit fields only) and the default user's sessions besides `own_id`."""
    trimmed = [{k: c[k] for k in AUDIT_FIELDS if k in c} for c in clients]
    mine = sessions_of(trimmed, DEFAULT_USER, own_id)
    counts = {k: v for k, v in describe_sessions(mine).items() if k != "clients"}
    return {
        **counts,
        "own_id": int(str(own_id)) if str(own_id).isdigit() else own_id,
        "total": len(trimmed),
        "ids": [int(c["id"]) for c in mine if str(c.get("id", "")).isdigit()],
        "sessions": mine,
        "clients": trimmed,
    }


def check_credential(adapter: RedisAdapter, username: str | None, password: str | None) -> dict[str, Any]:
    """AUTH + PING on a connection of its own: whether the server accepts this credential right now."""
    return adapter.check_credential(username, password).as_data()


def _generate(spec: dict[str, Any], ctx: StepContext) -> Action:
    length = int(spec.get("length", 32))
    name = ctx.step.register or ctx.step.id

    def execute() -> SecretValue:
        password = generate_password(length)
        ctx.redactor.add(name, password)  # before anything could print it
        return SecretValue(name, password)

    return Action(Effect.READ, "local", f"generate a {length}-character password (not shown)", execute)


def _add(spec: dict[str, Any], ctx: StepContext, adapter: RedisAdapter) -> Action:
    password = password_text(spec.get("password"), "add")
    argv = ["ACL", "SETUSER", DEFAULT_USER, ">" + password]

    def execute() -> dict[str, Any]:
        adapter.send_secret(argv)
        return {"user": DEFAULT_USER, "passwords": adapter.password_count(DEFAULT_USER)}

    return Action(
        Effect.DESTRUCTIVE,
        adapter.endpoint.url,
        " ".join(ctx.redactor.argv(argv)),
        execute,
        measure=lambda: {"acl_user": DEFAULT_USER, "passwords_now": adapter.password_count(DEFAULT_USER)},
        changes=lambda blast, result: [{"kind": "command", "command": f"ACL SETUSER {DEFAULT_USER} (password added)"}],
    )


def _rotate(spec: dict[str, Any], ctx: StepContext, adapter: RedisAdapter) -> Action:
    password = password_text(spec.get("password"), "rotate")
    kill = bool(spec.get("kill_sessions", True))
    config_set = ["CONFIG", "SET", "requirepass", password]
    kill_argv = ["CLIENT", "KILL", "USER", DEFAULT_USER, "SKIPME", "yes"]
    name = ctx.redactor.name_of(password) or "new-password"
    parts = ["MULTI", " ".join(ctx.redactor.argv(config_set)), *([" ".join(kill_argv)] if kill else []), "EXEC"]
    shown = "; ".join(parts)

    def measure() -> dict[str, Any]:
        current = adapter.config_get("requirepass").get("requirepass")
        masked = "[SECRET:redis-credential]"
        out: dict[str, Any] = {
            "config": {"requirepass": {"current": masked if current else "", "new": f"[SECRET:{name}]"}}
        }
        if kill:
            own = adapter.call(["CLIENT", "ID"])
            clients = parse_client_list(adapter.call(["CLIENT", "LIST"]))
            out["sessions"] = describe_sessions(sessions_of(clients, DEFAULT_USER, own))
        return out

    def execute() -> dict[str, Any]:
        replies = adapter.transaction([config_set, *([kill_argv] if kill else [])])
        return {"requirepass": "changed", "sessions_killed": replies[1] if kill else 0}

    def changes(blast: dict[str, Any] | None, result: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"kind": "password_rotated", "name": "requirepass"}]
        if kill:
            count = (result or predict(blast))["sessions_killed"]
            out.append({"kind": "command", "command": " ".join(kill_argv), "count": count})
        return out

    def predict(blast: dict[str, Any] | None) -> dict[str, Any]:
        return {"requirepass": "changed", "sessions_killed": ((blast or {}).get("sessions") or {}).get("count", 0)}

    return Action(
        Effect.DESTRUCTIVE, adapter.endpoint.url, shown, execute, measure=measure, changes=changes, predict=predict
    )


def _check(spec: dict[str, Any], ctx: StepContext, adapter: RedisAdapter) -> Action:
    if spec.get("initial"):
        start = ctx.connections.target.redis
        username, password = (start.username, start.password) if start is not None else (None, None)
        what = "the run's initial credential"
    else:
        username, password = spec.get("username"), password_text(spec.get("password"), "check")
        what = "a credential"
    shown = f"check {what} on a new connection: AUTH{' ' + username if username else ''} [password not shown]; PING"
    return Action(Effect.READ, adapter.endpoint.url, shown, lambda: check_credential(adapter, username, password))


def _use(spec: dict[str, Any], ctx: StepContext, adapter: RedisAdapter) -> Action:
    password = password_text(spec.get("password"), "use")

    def execute() -> dict[str, Any]:
        verdict = check_credential(adapter, adapter.endpoint.username, password)
        if not verdict["accepted"]:
            if ctx.dry_run:  # nothing was rotated in a rehearsal: the run keeps the credential it has
                reason = "dry-run: the server does not know this password (nothing was rotated); connection kept"
                return {"switched": False, "reason": reason, "client_id": adapter.call(["CLIENT", "ID"])}
            raise ActionFailed(
                f"the server refused the password ({verdict['error']}): the run keeps its current connection"
            )
        adapter.set_password(password)
        return {"switched": True, "client_id": adapter.call(["CLIENT", "ID"])}

    return Action(
        Effect.READ, adapter.endpoint.url, "reconnect this run with the new password (not shown); CLIENT ID", execute
    )


def _sessions(spec: dict[str, Any], ctx: StepContext, adapter: RedisAdapter) -> Action:
    def execute() -> dict[str, Any]:
        own = adapter.call(["CLIENT", "ID"])
        return session_report(parse_client_list(adapter.call(["CLIENT", "LIST"])), own)

    return Action(Effect.READ, adapter.endpoint.url, "CLIENT ID; CLIENT LIST", execute)


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    ((op, spec),) = body.items()
    spec = spec or {}
    if op == "generate":
        return _generate(spec, ctx)
    adapter: RedisAdapter = ctx.connections.redis()
    ops = {"add": _add, "rotate": _rotate, "check": _check, "use": _use, "sessions": _sessions}
    return ops[op](spec, ctx, adapter)


def static_effect(body: dict[str, Any]) -> Effect:
    return Effect.DESTRUCTIVE if ("add" in body or "rotate" in body) else Effect.READ


def summary(body: dict[str, Any]) -> str:
    ((op, _),) = body.items()
    return {
        "generate": "generate a password (secret)",
        "add": "ACL SETUSER default >[new password]",
        "rotate": "MULTI; CONFIG SET requirepass [new password]; CLIENT KILL USER default SKIPME yes; EXEC",
        "check": "check a credential on a new connection",
        "use": "reconnect with the new password",
        "sessions": "CLIENT LIST: the default user's sessions",
    }[op]


class RedisAuthKind(StepKind):
    name = "redis_auth"
    schema = SCHEMA
    description = "Generate, add, rotate, check and switch to a Redis password; the password is never shown."

    plan = staticmethod(plan)
    static_effect = staticmethod(static_effect)
    summary = staticmethod(summary)


register(RedisAuthKind())
