"""Redis through redis-py, with the dry-run guard where commands leave the process.

Every byte redis-py writes to the socket passes `GuardedConnection.send_packed_command`. When the
adapter is read-only, the commands in those bytes are decoded and any whose server-derived effect
is not `read` is refused there, before the write. Nothing above this layer (a step, a helper, a
pipeline, a bug) can get a change through a rehearsal. In every mode, a command that would change
the connection itself (SELECT, SWAPDB, RESET, CLIENT REPLY, a MULTI left open, ...) is refused there
too: the connection stays on the target URL's database, as the gate and the transcript say.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection, ConnectionPool, SSLConnection
from redis.retry import Retry

from engine.adapters.redis_effects import (
    HANDSHAKE,
    STATE_FIRST_WORDS,
    CommandInfo,
    always_read,
    classify,
    command_name,
    connection_state_command,
    decode_resp_commands,
    parse_command_table,
    state_changes_in_packet,
)
from engine.errors import ActionFailed, MutationRefused, TargetError, UsageError
from engine.spec.model import Effect
from engine.targets import RedisEndpoint, TlsSettings, tls_context

Guard = Callable[[list[bytes]], None]


class ConnectionStateRefused(UsageError):
    """A step tried to change the connection itself (SELECT, MULTI, CLIENT REPLY, ...): exit 2, nothing sent."""


def refusal(command: str, url: str) -> ConnectionStateRefused:
    return ConnectionStateRefused(
        f"{command} is not a step command: it changes the connection's own state (database, user, protocol, "
        f"reply mode, transaction or subscriptions), which the engine owns; refused before it reached {url}. "
        "To work in another database, run against a target whose URL names it (redis://host:port/N)."
    )


class _GuardMixin:
    """Checks every write to the socket: connection state always, effects in a rehearsal."""

    def __init__(
        self,
        *args: Any,
        effect_guard: Guard | None = None,
        pinned_url: str = "",
        tls: TlsSettings | None = None,
        **kwargs: Any,
    ):
        self._effect_guard = effect_guard
        self._pinned_url = pinned_url
        self._tls = tls
        self._handshaking = False
        self.names_checked = False  # set by pipeline_calls for one write whose command names it checked
        super().__init__(*args, **kwargs)
        self._pinned_db = self.db  # type: ignore[attr-defined]

    def on_connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        # The library's own handshake (HELLO, AUTH, CLIENT SETINFO, SELECT of the target's db) touches no data.
        self._handshaking = True
        try:
            super().on_connect_check_health(*args, **kwargs)  # type: ignore[misc]
        finally:
            self._handshaking = False

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self._handshaking:
            data = bytes(command) if isinstance(command, bytes | bytearray) else b"".join(bytes(c) for c in command)
            if self.db != self._pinned_db:  # type: ignore[attr-defined]
                raise refusal(f"a database other than {self._pinned_db}", self._pinned_url)
            changed = None if self.names_checked else state_changes_in_packet(data)
            if changed is not None:
                raise refusal(changed, self._pinned_url)
            if self._effect_guard is not None:
                for argv in decode_resp_commands(data):
                    self._effect_guard(argv)
        super().send_packed_command(command, check_health)  # type: ignore[misc]


class GuardedConnection(_GuardMixin, Connection):
    pass


class GuardedSSLConnection(_GuardMixin, SSLConnection):
    def _wrap_socket_with_ssl(self, sock: Any) -> Any:
        """The inventory's CA, client certificate and server name (SNI and the name checked) for this target."""
        settings = self._tls or TlsSettings()
        try:
            return tls_context(settings).wrap_socket(sock, server_hostname=settings.server_name or self.host)  # type: ignore[attr-defined]
        except TimeoutError:  # TCP is up, the TLS hello got no answer: a plain port waits for a newline
            sock.close()
            raise redis.ConnectionError(
                f"TLS handshake timed out with {self.host}:{self.port}: no TLS answer to our hello"  # type: ignore[attr-defined]
            ) from None


class RedisAdapter:
    """One endpoint, one pool. `allow_mutation=False` makes every non-read command fail at the socket."""

    def __init__(self, endpoint: RedisEndpoint, *, allow_mutation: bool):
        self.endpoint = endpoint
        self.allow_mutation = allow_mutation
        self._table: dict[str, CommandInfo] | None = None
        self._always_read: frozenset[bytes] = frozenset()
        self._client: redis.Redis | None = None
        self._raw: redis.Redis | None = None
        self.server_info: dict[str, Any] = {}

    # -- connection ----------------------------------------------------------------------------
    def _guard(self, argv: list[bytes]) -> None:
        name = argv[0].lower()
        if name in self._always_read:  # TTL, TYPE, SCAN, ...: read whatever their arguments
            return
        full = command_name(argv, self._table)
        if full in HANDSHAKE or full.split("|")[0] == "command":
            return
        effect = classify(argv, self._table)
        if effect is not Effect.READ:
            shown = " ".join(a.decode("utf-8", "replace") for a in argv[:2])
            raise MutationRefused(
                f"dry-run: refused to send {shown} ({effect}) to {self.endpoint.url}: "
                "only read commands leave the process in a rehearsal"
            )

    def connect(self) -> RedisAdapter:
        if self._client is not None:
            return self
        pool = self._pool(decode_responses=True)
        client = redis.Redis(connection_pool=pool)
        try:
            client.ping()
            try:
                self._table = parse_command_table(client.execute_command("COMMAND"))
            except redis.ResponseError:  # a Sentinel may lack COMMAND: the fixed lists decide, unknown is destructive
                self._table = {}
            self._always_read = always_read(self._table)
            self.server_info = client.info("server")
        except redis.RedisError as exc:
            pool.disconnect()
            raise self._translate(exc, connecting=True) from None
        self._client = client
        return self

    def _pool(self, *, decode_responses: bool, **overrides: Any) -> ConnectionPool:
        ep = self.endpoint
        credentials = {"username": ep.username, "password": ep.password, **overrides}
        return ConnectionPool(
            connection_class=GuardedSSLConnection if ep.tls else GuardedConnection,
            host=ep.host,
            port=ep.port,
            db=ep.db,
            **credentials,
            socket_timeout=ep.timeout,
            socket_connect_timeout=ep.timeout,
            decode_responses=decode_responses,
            # a key that is not UTF-8 (bytes from a hostile or buggy writer) decodes to lone surrogates and
            # encodes back to the very same bytes: shown escaped, and a DEL of it deletes that key, no other
            encoding_errors="surrogateescape",
            effect_guard=None if self.allow_mutation else self._guard,
            pinned_url=ep.url,
            **({"tls": ep.tls_settings} if ep.tls else {}),
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),  # fail fast: the procedure decides whether to retry
        )

    def side_client(self, *, username: str | None, password: str | None, protocol: int = 2) -> redis.Redis:
        """A client of its own on the same endpoint (TLS settings and guards included), other credentials."""
        pool = self._pool(decode_responses=True, username=username, password=password, protocol=protocol)
        return redis.Redis(connection_pool=pool)

    def raw_client(self) -> redis.Redis:
        """A bytes-in, bytes-out client (DUMP payloads, binary values), behind the same guard."""
        self.connect()
        if self._raw is None:
            self._raw = redis.Redis(connection_pool=self._pool(decode_responses=False))
        return self._raw

    def set_password(self, password: str | None) -> None:
        """After the procedure itself rotated requirepass: new connections use the new password."""
        from dataclasses import replace

        self.close()
        self.endpoint = replace(self.endpoint, password=password)
        self.connect()

    @property
    def client(self) -> redis.Redis:
        return self.connect()._client  # type: ignore[return-value]

    def close(self) -> None:
        for client in (self._client, self._raw):
            if client is not None:
                client.connection_pool.disconnect()
        self._client = self._raw = None

    # -- effects -------------------------------------------------------------------------------
    def effect_of(self, argv: Sequence[str | bytes]) -> Effect:
        self.connect()
        return classify(argv, self._table)

    def command_table(self) -> dict[str, CommandInfo]:
        self.connect()
        return dict(self._table or {})

    def check_step_command(self, argv: Sequence[Any]) -> None:
        """Refuse a command that would change the connection (the step's own, maybe from a template)."""
        found = connection_state_command([_arg_bytes(a) for a in argv]) if argv else None
        if found is not None:
            raise refusal(found, self.endpoint.url)

    # -- calls ---------------------------------------------------------------------------------
    def call(self, argv: Sequence[Any]) -> Any:
        """One command, never one that changes the connection (also MONITOR and MULTI, which the socket
        guard lets through for the engine's own sampler and transactions)."""
        self.check_step_command(argv)
        reply = self._wrap(lambda: self._execute(argv))
        if argv and _arg_bytes(argv[0]).lower() == b"acl":  # LIST, GETUSER: password hashes never leave here
            from engine.transcript.redact import acl_reply

            return acl_reply(reply)
        return reply

    def _execute(self, argv: Sequence[Any]) -> Any:
        """Where a step's command is sent: this node (a deployment routes it, see redis_routing)."""
        return self.client.execute_command(*argv)

    def asking_call(self, argv: Sequence[Any]) -> Any:
        """ASKING then `argv` on one connection (a cluster's ASK redirect): ASKING only ever precedes this
        one command, so the connection is left as it was; the dry-run guard still sees both."""
        self.check_step_command(argv)
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.names_checked = True
            try:
                conn.send_packed_command([pack_commands([["ASKING"], list(argv)])])
            finally:
                conn.names_checked = False
            conn.read_response()
            return conn.read_response()
        except redis.ResponseError:
            raise
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def command_keys(self, argv: Sequence[Any]) -> list[Any]:
        """The keys in `argv`, as the server extracts them (COMMAND GETKEYS)."""
        return self._wrap(lambda: self.client.command_getkeys(*argv))

    def info(self, section: str | None = None) -> dict[str, Any]:
        return self._wrap(lambda: self.client.info(section) if section else self.client.info())

    def config_get(self, pattern: str = "*") -> dict[str, Any]:
        return self._wrap(lambda: self.client.config_get(pattern))

    def scan(self, match: str | None = None, count: int = 1000, type_: str | None = None) -> Iterator[list[str]]:
        """Pages of keys as SCAN returns them, so callers can pipeline per page."""
        cursor = 0
        while True:
            cursor, keys = self._wrap(lambda c=cursor: self.client.scan(c, match=match, count=count, _type=type_))
            if keys:
                yield keys
            if cursor == 0:
                return

    def pipeline_calls(self, calls: Sequence[Sequence[Any]]) -> list[Any]:
        """One round trip for many commands; per-command errors come back as exception objects.

        Keyspace scans send a pipeline per SCAN page, a million commands for a million keys, so this
        packs the protocol itself (one bytes join) and reads the raw replies (hiredis when installed)
        instead of going through redis-py's Pipeline, which costs several microseconds a command.
        Replies are as the server sends them (no redis-py response callbacks). The bytes still go
        through the guarded connection, so a dry-run checks every command in them.
        """
        if not calls:
            return []

        def run() -> list[Any]:
            pool = self.client.connection_pool
            conn = pool.get_connection()
            try:
                # The names are ours to see here, cheaper than scanning the bytes: when none of them can
                # change the connection, the socket guard skips its scan (the db pin is still checked).
                names = {_arg_bytes(n).decode("utf-8", "replace").lower() for n in {c[0] for c in calls if c}}
                conn.names_checked = not (names & STATE_FIRST_WORDS)
                try:
                    conn.send_packed_command([pack_commands(calls)])
                finally:
                    conn.names_checked = False
                parser = getattr(conn, "_parser", None)
                if parser is not None and hasattr(parser, "read_response"):
                    # the connection's own parser (hiredis when installed): error replies come back as
                    # exception objects; Connection.read_response adds several microseconds a reply
                    replies = [parser.read_response() for _ in range(len(calls))]
                    for reply in replies:
                        if isinstance(reply, redis.ConnectionError):
                            raise reply
                    return replies
                replies = []
                for _ in range(len(calls)):
                    try:
                        replies.append(conn.read_response())
                    except redis.ResponseError as exc:  # the reply was consumed: the stream stays in step
                        replies.append(exc)
                return replies
            except BaseException:
                conn.disconnect()  # an interrupted pipeline leaves unread replies: never reuse it
                raise
            finally:
                pool.release(conn)

        return self._wrap(run)

    def _wrap(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except MutationRefused:
            raise
        except redis.RedisError as exc:
            raise self._translate(exc, connecting=False) from None

    def _translate(self, exc: redis.RedisError, *, connecting: bool) -> TargetError:
        """redis-py's exception -> ours, with the runbook's advice matched on the server's full error text."""
        from engine.common_errors import error_text

        text = error_text(exc)
        url = self.endpoint.url
        if isinstance(exc, redis.BusyLoadingError):  # a ConnectionError subclass, but the server is up
            return TargetError(f"{url}: {text}", advice=explain_text(text))
        if isinstance(exc, redis.AuthenticationError):
            return TargetError(f"{url}: authentication failed: {text}", advice=explain_text(text))
        if isinstance(exc, redis.TimeoutError):
            return TargetError(f"{url}: timed out after {self.endpoint.timeout:g}s: {text}")
        if isinstance(exc, redis.ConnectionError):
            verb = "cannot connect" if connecting else "connection lost"
            if connecting and not self.endpoint.tls and _CLOSED_AT_ONCE.search(text):
                text = f"the server closed before answering a plain-text client ({text})"
            return TargetError(
                f"{url}: {verb}: {text}", advice=explain_text(text) or explain_text("Connection refused")
            )
        if connecting:
            return TargetError(f"{url}: {text}", advice=explain_text(text))
        return ActionFailed(text, advice=explain_text(text))


# How a TLS port answers a plain-text client: it drops the connection before any Redis reply.
_CLOSED_AT_ONCE = re.compile(r"Connection reset by peer|Connection closed by server|Error 104\b", re.IGNORECASE)


def _arg_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, int | float):
        return repr(value).encode()
    return str(value).encode("utf-8")


def pack_commands(calls: Sequence[Sequence[Any]]) -> bytes:
    """RESP arrays of bulk strings for many commands, in one buffer (the hot loop of keyspace scans)."""
    parts: list[bytes] = []
    add = parts.append
    for argv in calls:
        add(b"*%d\r\n" % len(argv))
        for arg in argv:
            data = arg.encode("utf-8", "surrogateescape") if type(arg) is str else _arg_bytes(arg)
            add(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def explain_text(message: str) -> str | None:
    """The runbook's Common Errors advice for a Redis error message, when there is one."""
    from engine.common_errors import explain

    found = explain(message)
    return f"{found.cause}. {found.solution}" if found else None
