"""Redis through redis-py, with the dry-run guard where commands leave the process.

Every byte redis-py writes to the socket passes `GuardedConnection.send_packed_command`. When the
adapter is read-only, the commands in those bytes are decoded and any whose server-derived effect
is not `read` is refused there, before the write. Nothing above this layer (a step, a helper, a
pipeline, a bug) can get a change through a rehearsal. In every mode, a command that would change
the connection itself (SELECT, SWAPDB, RESET, CLIENT REPLY, a MULTI left open, ...) is refused there
too: the connection stays on the target URL's database, as the gate and the transcript say.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from functools import partial
from typing import IO, TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection, ConnectionPool, SSLConnection
from redis.maint_notifications import MaintNotificationsConfig
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
from engine.adapters.redis_errors import Site, is_refused_credential, translate
from engine.errors import ActionFailed, MutationRefused, TargetError, UsageError
from engine.spec.model import Effect
from engine.targets import RedisEndpoint, TlsSettings, tls_context

if TYPE_CHECKING:
    from engine.keyspace.pacing import Activity

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
            return tls_context(settings).wrap_socket(sock, server_hostname=settings.server_name or self.host)
        except TimeoutError:  # TCP is up, the TLS hello got no answer: a plain port waits for a newline
            sock.close()
            raise redis.ConnectionError(
                f"TLS handshake timed out with {self.host}:{self.port}: no TLS answer to our hello"
            ) from None


# The name of the engine's own side connections (the lease's): not a session an operator's kill is about.
LEASE_CLIENT_NAME = "runbook-lease"

SCAN_BATCH_KEYS = 1000  # keys per pipeline of a keyspace export or restore
# ... of an export while other clients are active: a pipeline's commands run back to back as Redis reads them
# (16 KB at a time: a few hundred TYPE+PTTL+DUMP), so a production request waits for the rest of that read
BUSY_BATCH_KEYS = 20
MAX_SCAN_COUNT = 65536  # SCAN COUNT never grows past this, whatever the budget
SMALL_SCAN_COUNT = 10  # ... and never shrinks below this: what `redis-cli --scan` asks for
# Server time one SCAN may take: production traffic queues behind it (the keyspace scripts aim at the same
# 1.5 ms). A rare pattern among a million keys then costs a few hundred SCANs, not a few dozen: the
# operator's round trips are cheaper than a stalled primary. RUNBOOK_SCAN_BUDGET_MS raises it for a
# server known to be idle (a restore drill, a replica taken out of rotation).
SCAN_BUDGET_S = 0.0015
# ... and while no other client ran a command since our previous SCAN: a tenant's keys among a million
# then take a few dozen SCANs, and the first sign of another client brings the calls back to the budget.
SCAN_IDLE_BUDGET_S = 0.1
ACTIVITY_WINDOW_S = 0.1  # how long a scan watches the server's command count before its first call


def scan_budget_s() -> float:
    try:
        return max(0.0001, float(os.environ.get("RUNBOOK_SCAN_BUDGET_MS", "")) / 1000)
    except ValueError:
        return SCAN_BUDGET_S


@dataclass(frozen=True)
class CredentialCheck:
    """Whether the server accepted a credential on a fresh connection (the password is never kept)."""

    accepted: bool
    error: str | None
    username: str

    def as_data(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "error": self.error, "username": self.username}


@dataclass(frozen=True)
class MonitorSample:
    """What a bounded MONITOR saw: the parsed lines, how long it ran, which bound stopped it."""

    entries: tuple[Any, ...]
    seconds: float
    stopped_by: str  # "seconds" or "max_commands"


class RedisAdapter:
    """One endpoint, one pool. `allow_mutation=False` makes every non-read command fail at the socket."""

    def __init__(
        self,
        endpoint: RedisEndpoint,
        *,
        allow_mutation: bool,
        client_name: str | None = None,
        command_table: dict[str, CommandInfo] | None = None,
    ):
        self.endpoint = endpoint
        self.allow_mutation = allow_mutation
        self.client_name = client_name  # CLIENT SETNAME on connect: the engine's side connections say so
        # a caller that reconnects to the same server again and again (the lease) hands over the table it
        # already read: COMMAND is the costliest part of a connect (~250 KB of reply)
        self._table: dict[str, CommandInfo] | None = command_table
        self._always_read: frozenset[bytes] = frozenset()
        self._client: redis.Redis | None = None
        self._raw: redis.Redis | None = None
        self.server_info: dict[str, Any] = {}
        self.server_info_at = 0.0  # when (time.monotonic) INFO server was read, at connect
        self.commands_sent = 0  # by call() and pipeline_calls(): a scan tells its own commands from others'
        self.scan_notes: list[str] = []  # what each keyspace scan's pacing did, for the step's output

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
        try:  # no PING first: COMMAND (or INFO) opens the connection, a round trip saved on every run
            if self._table is None:
                try:
                    self._table = parse_command_table(client.execute_command("COMMAND"))
                except redis.ResponseError:  # a Sentinel may lack COMMAND: fixed lists decide, unknown is destructive
                    self._table = {}
            self._always_read = always_read(self._table)
            self.server_info = client.info("server")
            self.server_info_at = time.monotonic()
        except redis.RedisError as exc:
            pool.disconnect()
            raise self._translate(exc, connecting=True) from None
        self._client = client
        return self

    def _pool(self, *, decode_responses: bool, **overrides: Any) -> ConnectionPool:
        ep = self.endpoint
        credentials = {"username": ep.username, "password": ep.password, **overrides}
        tls: dict[str, Any] = {"tls": ep.tls_settings} if ep.tls else {}
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
            client_name=self.client_name,
            **tls,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),  # fail fast: the procedure decides whether to retry
            # the handshake is HELLO (and AUTH, SETNAME, SELECT) only: redis-py would also send CLIENT SETINFO
            # twice and CLIENT MAINT_NOTIFICATIONS (moving endpoints of a managed service, not ours to follow),
            # each a round trip of its own on every connection: 9 of a tenant export's 50 through a network
            driver_info=None,
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )

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

    @property
    def command_table(self) -> dict[str, CommandInfo] | None:
        """What COMMAND said at connect (None before), for a later connection to the same server."""
        return self._table

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
        self.commands_sent += 1
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
        conn: Any = pool.get_connection()  # a GuardedConnection (names_checked)
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

    def client_list(self) -> list[dict[str, Any]]:
        """CLIENT LIST, one dict of fields per client."""
        return self._wrap(self.client.client_list)

    def slowlog(self, count: int) -> list[dict[str, Any]]:
        """SLOWLOG GET `count`, newest first."""
        return self._wrap(lambda: self.client.slowlog_get(count))

    def acl_log(self, count: int) -> list[dict[str, Any]]:
        """ACL LOG `count`: the latest refusals (denied commands, failed AUTHs)."""
        return self._wrap(lambda: self.client.acl_log(count))

    def scan(self, match: str | None = None, count: int = 1000, type_: str | None = None) -> Iterator[list[str]]:
        """Pages of keys as SCAN returns them, so callers can pipeline per page."""
        cursor = 0
        while True:
            cursor, keys = self._wrap(partial(self.client.scan, cursor, match=match, count=count, _type=type_))
            if keys:
                yield keys
            if cursor == 0:
                return

    def pipeline_calls(self, calls: Sequence[Sequence[Any]], *, binary: bool = False) -> list[Any]:
        """One round trip for many commands; per-command errors come back as exception objects.

        Keyspace scans send a pipeline per SCAN page, a million commands for a million keys, so this
        packs the protocol itself (one bytes join) and reads the raw replies (hiredis when installed)
        instead of going through redis-py's Pipeline, which costs several microseconds a command.
        Replies are as the server sends them (no redis-py response callbacks). The bytes still go
        through the guarded connection, so a dry-run checks every command in them. `binary`: replies
        as bytes, never decoded (DUMP payloads, key names that are not UTF-8).
        """
        if not calls:
            return []
        self.commands_sent += len(calls)

        def run() -> list[Any]:
            pool = (self.raw_client() if binary else self.client).connection_pool
            conn: Any = pool.get_connection()  # a GuardedConnection (names_checked)
            try:
                return _exchange(conn, calls)
            except BaseException:
                conn.disconnect()  # an interrupted pipeline leaves unread replies: never reuse it
                raise
            finally:
                pool.release(conn)

        return self._wrap(run)

    @contextlib.contextmanager
    def held_pipeline(self) -> Iterator[Callable[[Sequence[Sequence[Any]]], list[Any]]]:
        """`exchange(calls)`: `pipeline_calls` on one connection held until the block ends, for a scan's
        tens of thousands of small exchanges a second: taking a connection from the pool and giving it back
        for each cost as much client CPU as the rest of one. Per-command errors come back as exception
        objects; a block cut short mid-exchange closes the connection (its stream is out of step)."""
        pool = self.client.connection_pool
        conn: Any = self._wrap(pool.get_connection, connecting=True)
        interrupted = False

        def exchange(calls: Sequence[Sequence[Any]]) -> list[Any]:
            nonlocal interrupted
            self.commands_sent += len(calls)
            interrupted = True  # until the replies are read
            replies = self._wrap(partial(_exchange, conn, calls))
            interrupted = False
            return replies

        try:
            yield exchange
        finally:
            if interrupted:
                conn.disconnect()
            pool.release(conn)

    @contextlib.contextmanager
    def direct_caller(self) -> Iterator[Callable[[Sequence[Any]], Any]]:
        """`call(argv)`: one command to this node through `held_pipeline` (the connection's own parser, no
        redis-py command machinery, never routed); an error reply raises. For a scan's thousands of script
        calls a second: redis-py's `execute_command` costs the client as much CPU as the rest of a call."""
        with self.held_pipeline() as exchange:

            def call(argv: Sequence[Any]) -> Any:
                (reply,) = exchange([argv])
                if isinstance(reply, redis.RedisError):
                    raise self._translate(reply, connecting=False)
                return reply

            yield call

    # -- keyspace in bytes (exports and restores) ------------------------------------------------
    def scan_nodes(self) -> list[RedisAdapter]:
        """Where a keyspace scan must look: this node (a deployment's adapter names every primary)."""
        return [self]

    def each_scan_node(self, work: Callable[[RedisAdapter], Iterator[Any]]) -> Generator[Any, None, None]:
        """`work(node)` on every node a keyspace scan must look at, its items as they come: here, this node
        (a cluster's adapter runs the primaries in parallel and merges, see redis_routing)."""
        yield from work(self)

    def key_count(self) -> int:
        """DBSIZE summed over the nodes a keyspace scan looks at: a progress line's total."""
        return sum(int(node.call(["DBSIZE"])) for node in self.scan_nodes())

    def key_batches(self, match: str, *, count: int, batch: int = SCAN_BATCH_KEYS) -> Iterator[list[bytes]]:
        """Every key matching `match` (names as bytes), on every node a scan must look at (a cluster's
        primaries in parallel), in batches of about `batch` keys: SCAN pages are gathered until a batch is
        full, so a rare pattern costs one pipeline per `batch` keys, not one per SCAN page. While the last
        SCAN saw other clients active, batches of at most BUSY_BATCH_KEYS: the caller's pipeline per batch
        then holds the server briefly (measured beside production traffic, docs/performance.md).

        COUNT starts at `count` and follows a server-time budget per SCAN, paced on what the server is doing
        (`_sparse_scan`, engine/keyspace/pacing.py): while other clients are active twice what a call costs
        besides the server's work (0.25 ms up to `scan_budget_s`) or, on the server's own host reached
        directly, the shortest (about ten keys, as `redis-cli --scan`), growing to SCAN_IDLE_BUDGET_S while
        nobody else sends a command. A rare pattern thus costs few SCANs on an idle server, and no SCAN
        stalls the server for production traffic.
        """
        pending: list[bytes] = []
        with closing(self.each_scan_node(lambda node: node._sparse_scan(match, count, batch))) as pages:
            for page, busy in pages:  # a cluster's primaries scanned in parallel, their pages merged
                pending.extend(page)
                if busy:
                    small = min(batch, BUSY_BATCH_KEYS)
                    while len(pending) >= small:
                        yield pending[:small]
                        pending = pending[small:]
                elif len(pending) >= batch:
                    yield pending
                    pending = []
        for node in self.scan_nodes():  # what each node's SCANs did (a cluster's primaries: each its own)
            if node is not self:
                self.scan_notes.extend(node.scan_notes)
                node.scan_notes.clear()
        if pending:
            yield pending

    def _sparse_scan(self, match: str, count: int, batch: int) -> Iterator[tuple[list[bytes], bool]]:
        """(SCAN page, whether other clients were active at its reading) for every page with keys, COUNT sized
        by the pacing controller (engine/keyspace/pacing.py) on each SCAN's server time (TIME before and after
        it in the same pipeline) and on what other clients ran meanwhile (INFO stats in the same pipeline): no
        round trip of their own. The next COUNT never asks for more than about `batch` keys at the density of
        the last page (a dense pattern: memory stays bounded by about one batch, and a page bigger than
        `batch` shrinks the next COUNT in proportion)."""
        from engine.keyspace import pacing

        policy = pacing.Policy(
            busy_budget_s=scan_budget_s(),
            min_budget_s=min(scan_budget_s(), pacing.Policy().min_budget_s),
            idle_budget_s=max(SCAN_IDLE_BUDGET_S, scan_budget_s()),
            duty=1.0,  # a SCAN between the export's own pipelines: their round trips leave the server free
            # `count` is the first SCAN's COUNT, not a floor: beside production traffic on the server's own host
            # a SCAN of 1,000 keys held Redis about a millisecond each, and production's p99 rose from 1.3 to 4-7
            # ms during an export where with ten-key SCANs it stayed with its p99 during `redis-cli --scan`
            floor=SMALL_SCAN_COUNT,
            ceiling=MAX_SCAN_COUNT,
            # fourfold per SCAN: an idle server's budget (100 ms) is reached in 4 SCANs, not 7 (the count is still
            # the budget over the cost per key measured on the previous ones)
            growth=4.0,
        )
        probed = self.activity()
        state = pacing.begin(policy, count, probed)
        cursor: Any = 0
        last: tuple[float, int, int] | None = None  # (sent at, server's command count, our count) at the last SCAN
        try:
            while True:
                step = state.count
                started = time.perf_counter()
                # this node's own pipeline, never routed (a cluster would send SCAN to the owner of its cursor);
                # the server runs the four back to back, so the TIMEs around SCAN give its server time
                began, scanned, ended, info = RedisAdapter.pipeline_calls(
                    self,
                    [["TIME"], ["SCAN", cursor, "MATCH", match, "COUNT", step], ["TIME"], ["INFO", "stats"]],
                    binary=True,
                )
                round_trip = time.perf_counter() - started
                if isinstance(scanned, redis.RedisError):
                    raise self._translate(scanned, connecting=False)
                cursor, page = int(scanned[0]), list(scanned[1])
                seen = _commands_processed(info)
                others, since = probed.others, probed.seconds
                if last is not None:
                    others, since = (
                        pacing.others_between(last[1], seen, self.commands_sent - last[2]),
                        started - last[0],
                    )
                last = (started, seen, self.commands_sent)
                if isinstance(began, list) and isinstance(ended, list):
                    server_s = _seconds(ended) - _seconds(began)
                else:  # TIME refused by an ACL: the round trip less a PING's, an over-estimate that errs small
                    server_s = max(0.0, round_trip - probed.rtt_s)
                state, _ = pacing.step(state, pacing.Observation(step, server_s, round_trip, others, since))
                # alone on the server a SCAN asks for `count` keys at least (harmless there, and the budget's
                # ramp from a short first call costs no SCANs); never a next page much bigger than a batch at
                # this density (4x growth or not)
                least = policy.floor if state.busy else count
                dense = step * batch // len(page) if page else state.count
                state = replace(state, count=max(least, min(state.count, dense)))
                if page:
                    yield page, state.busy
                if cursor == 0:
                    return
        finally:
            self.scan_notes.append(f"SCAN: {pacing.summary(state)}")

    def activity(self, window_s: float = ACTIVITY_WINDOW_S) -> Activity:
        """What a scan should know before its first call: the round trip (the quickest of five PINGs), how
        many commands other clients ran over `window_s` (two INFO stats; None when INFO is refused), whether
        this client runs on the server's own machine and reaches it directly (`_placement`) and, if so, how
        much of its CPU stayed idle meanwhile (/proc/stat). All on the connection the run already holds: nine
        round trips, and no connection (handshake included) opened for them."""
        from engine.keyspace import host_cpu
        from engine.keyspace.pacing import Activity, others_between

        client = self.client
        rtt = self._round_trip_s(client)
        same_host, direct = self._wrap(lambda: _placement(client))
        cpu = host_cpu.sample() if same_host else None  # what the machine has to spare meanwhile
        started = time.perf_counter()
        others: int | None = None
        try:
            before = int(self.info("stats")["total_commands_processed"])
            started = time.perf_counter()
            time.sleep(window_s)
            others = others_between(before, int(self.info("stats")["total_commands_processed"]), 1)
        except (TargetError, KeyError, ValueError, TypeError):
            time.sleep(max(0.0, window_s - (time.perf_counter() - started)))  # the CPU is watched as long all the same
        seconds = time.perf_counter() - started
        idle = host_cpu.idle_cores(cpu, host_cpu.sample()) if cpu is not None else None
        return Activity(rtt, others, seconds, same_host, idle, cpu.cores if cpu is not None else 0, direct)

    def command_counts(self) -> tuple[int, int]:
        """(commands the nodes a scan looks at have run so far, INFO stats summed, -1 when one will not say;
        commands this adapter and those nodes have sent): between two readings, the first's difference less
        the second's is what other clients ran (pacing.others_between), this reading's INFOs included on
        both sides."""
        nodes = self.scan_nodes()
        total = 0
        for node in nodes:
            (info,) = RedisAdapter.pipeline_calls(node, [["INFO", "stats"]])  # this node's own, never routed
            seen = _commands_processed(info)
            total = -1 if seen < 0 or total < 0 else total + seen
        senders = {id(a): a for a in (self, *nodes)}
        return total, sum(a.commands_sent for a in senders.values())

    def _round_trip_s(self, client: Any, pings: int = 5) -> float:
        """The quickest of `pings` PINGs on an open connection: what a call costs before the server does
        any work. Five, not two: the first PINGs of a process are slow (its code and the path not yet warm;
        measured on loopback beside production traffic: 0.10-0.36 ms for the first two, 0.07 ms from the
        third), and the quicker of two came out at 0.23-0.62 ms, over FAST_RTT_S, so a client on the
        server's own host was paced as if across a network. A user whose ACL refuses PING (`+@read +info`)
        is timed on DBSIZE, a read as cheap."""
        best, timed, command = float("inf"), 0, "PING"
        while timed < pings:
            started = time.perf_counter()
            try:
                self._wrap(partial(client.execute_command, command))
            except ActionFailed:
                if command != "PING":
                    raise
                command = "DBSIZE"  # refused before any work: that one is not timed
                continue
            best, timed = min(best, time.perf_counter() - started), timed + 1
        return best

    # -- credentials and secrets ---------------------------------------------------------------
    def check_credential(self, username: str | None, password: str | None) -> CredentialCheck:
        """AUTH + PING on a connection of its own, never the run's pool: does the server accept this now?"""
        # plain AUTH + PING (protocol 2): what every client (and redis-cli -a) does
        pool = self._pool(decode_responses=True, username=username, password=password, protocol=2)
        client = redis.Redis(connection_pool=pool)
        shown = username or "default"
        try:
            client.ping()
            return CredentialCheck(True, None, shown)
        except redis.RedisError as exc:
            if is_refused_credential(exc):
                from engine.common_errors import error_text

                return CredentialCheck(False, error_text(exc), shown)
            raise self._translate(exc, connecting=True) from None
        finally:
            pool.disconnect()

    def send_secret(self, argv: Sequence[Any]) -> Any:
        """A command whose arguments hold a secret (ACL SETUSER ><password>): sent as is to this node,
        never routed, so never asked about on the server (COMMAND GETKEYS would show its arguments to
        any MONITOR session; Redis redacts ACL SETUSER's own)."""
        self.check_step_command(argv)
        return self._wrap(lambda: self.client.execute_command(*argv))

    def password_count(self, user: str) -> int:
        """How many passwords `user` has (ACL GETUSER; the hashes themselves never leave here)."""
        found = self._wrap(lambda: self.client.acl_getuser(user)) or {}
        return len(found.get("passwords") or [])

    def transaction(self, calls: Sequence[Sequence[Any]]) -> list[Any]:
        """MULTI, `calls`, EXEC in one round trip on this node: all of them or none, with nothing between."""
        for argv in calls:
            self.check_step_command(argv)

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=True)
            for argv in calls:
                pipe.execute_command(*argv)
            return list(pipe.execute())

        return self._wrap(run)

    # -- MONITOR -------------------------------------------------------------------------------
    def monitor(
        self, seconds: float, limit: int, *, parse: Callable[[Any], Any], on_entry: Callable[[int], None]
    ) -> MonitorSample:
        """MONITOR on a connection of its own until `limit` parsed lines or `seconds` passed; the
        connection is closed in every case (the only way to make a server stop feeding a MONITOR)."""
        return self._wrap(lambda: self._monitor(seconds, limit, parse, on_entry), doing="MONITOR")

    def _monitor(
        self, seconds: float, limit: int, parse: Callable[[Any], Any], on_entry: Callable[[int], None]
    ) -> MonitorSample:
        entries: list[Any] = []
        stopped_by = "seconds"
        # client.monitor() takes a connection of its own from the pool; __exit__ disconnects it and gives
        # it back. Called in `finally`, also when MONITOR itself was refused, so no connection is left
        # monitoring.
        monitor = self.client.monitor()
        started = time.monotonic()
        try:
            monitor.__enter__()
            connection = monitor.connection
            started = time.monotonic()
            deadline = started + seconds
            while True:
                if len(entries) >= limit:
                    stopped_by = "max_commands"
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not connection.can_read(timeout=remaining):
                    break
                entry = parse(connection.read_response())
                if entry is not None:
                    entries.append(entry)
                    on_entry(1)
        finally:
            monitor.__exit__(None, None, None)
        return MonitorSample(tuple(entries), time.monotonic() - started, stopped_by)

    # -- the replication socket ----------------------------------------------------------------
    def full_sync(
        self, out: IO[bytes], *, timeout: float, on_progress: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """A full RDB over the replication protocol (PSYNC ? -1, as redis-cli --rdb), streamed to `out`.

        The stream has a socket of its own, outside the guarded pool, so the dry-run is enforced here:
        PSYNC is never sent in a rehearsal (the server flags it admin, not read). Raises RdbError when
        the sync fails.
        """
        from engine.adapters.redis_replication import download

        if not self.allow_mutation:
            raise MutationRefused(f"dry-run: refused to send PSYNC to {self.endpoint.url}")
        ep = self.endpoint
        return download(
            host=ep.host,
            port=ep.port,
            out=out,
            password=ep.password,
            username=ep.username,
            tls=bool(ep.tls),
            tls_context=tls_context(ep.tls_settings) if ep.tls else None,
            server_name=ep.tls_settings.server_name,
            timeout=timeout,
            on_progress=on_progress,
        )

    def _wrap(self, fn: Callable[[], Any], *, doing: str | None = None, connecting: bool = False) -> Any:
        """Run `fn`; a redis-py exception comes out as the engine's error (engine/adapters/redis_errors.py)."""
        try:
            return fn()
        except MutationRefused:
            raise
        except redis.RedisError as exc:
            raise self._translate(exc, connecting=connecting, doing=doing) from None

    def _translate(self, exc: redis.RedisError, *, connecting: bool, doing: str | None = None) -> TargetError:
        ep = self.endpoint
        return translate(exc, Site(ep.url, ep.timeout, tls=bool(ep.tls), connecting=connecting, doing=doing))


def _placement(client: redis.Redis) -> tuple[bool, bool | None]:
    """(same host, direct): does this connection reach a server on this machine, so that the client and
    Redis share the CPUs (a Unix socket, loopback, or a peer address that is the socket's own), and does
    the server see this very socket, with no proxy, tunnel or relay between (CLIENT INFO's `addr` is the
    socket's own name; None: the server would not say)? A loopback port forwarded elsewhere (an SSH
    tunnel, a sidecar proxy) is not the server's host: the server there sees the forwarder's socket."""
    pool = client.connection_pool
    conn: Any = pool.get_connection()
    try:
        sock = getattr(conn, "_sock", None)
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True, True
        peer, own = sock.getpeername(), sock.getsockname()
        if not (peer[0] == own[0] or _address(peer[0]).is_loopback):
            return False, None
        direct = _seen_as(conn, own[0], own[1])
        return direct is not False, direct
    finally:
        pool.release(conn)


def _seen_as(conn: Any, host: str, port: int) -> bool | None:
    """Whether the server names this connection's peer `host:port` (CLIENT INFO, Redis 6.2+); None when
    it will not say (an older server, an ACL without CLIENT INFO)."""
    try:
        conn.send_command("CLIENT", "INFO")
        reply = conn.read_response()
    except redis.ResponseError:
        return None
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    addr = next((f[len("addr=") :] for f in text.split() if f.startswith("addr=")), "")
    seen_host, _, seen_port = addr.rpartition(":")
    try:
        return _address(seen_host.strip("[]")) == _address(host) and int(seen_port) == port
    except ValueError:
        return None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text.split("%")[0])


def _seconds(time_reply: Any) -> float:
    """A TIME reply ([seconds, microseconds]) in seconds."""
    return int(time_reply[0]) + int(time_reply[1]) / 1e6


def _commands_processed(info: Any) -> int:
    """total_commands_processed from a raw INFO stats reply; -1 when it is not there (refused)."""
    if not isinstance(info, bytes | str):
        return -1
    text = info.decode("latin-1") if isinstance(info, bytes) else info
    for line in text.splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":", 1)[1])
    return -1


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


def _exchange(conn: Any, calls: Sequence[Sequence[Any]]) -> list[Any]:
    """Send `calls` in one write on a guarded connection and read a reply for each; per-command errors come
    back as exception objects. The connection's own parser (hiredis when installed) reads them:
    Connection.read_response adds several microseconds a reply."""
    # The names are ours to see here, cheaper than scanning the bytes: when none of them can change the
    # connection, the socket guard skips its scan (the db pin is still checked).
    names = {_arg_bytes(n).decode("utf-8", "replace").lower() for n in {c[0] for c in calls if c}}
    conn.names_checked = not (names & STATE_FIRST_WORDS)
    try:
        conn.send_packed_command([pack_commands(calls)])
    finally:
        conn.names_checked = False
    parser = getattr(conn, "_parser", None)
    if parser is not None and hasattr(parser, "read_response"):
        replies = [parser.read_response() for _ in range(len(calls))]
        for reply in replies:
            if isinstance(reply, redis.ConnectionError):
                raise reply
        return replies
    out: list[Any] = []
    for _ in range(len(calls)):
        try:
            out.append(conn.read_response())
        except redis.ResponseError as exc:  # the reply was consumed: the stream stays in step
            out.append(exc)
    return out


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
