"""Throwaway redis-server processes for tests and demos.

Every server gets its own port and temp dir so nothing ever touches a Redis the machine already runs
(the shared one on 6379 in particular). Servers are plain child processes, not daemons, so a crashed
test run leaves nothing listening once pytest exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine.spawn import signals_deferred

START_TIMEOUT = 10.0
# Debian package that ships each binary, for the "how do I fix this" half of the message.
_PACKAGES = {
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "promtool": "prometheus",
}


class SandboxUnavailable(RuntimeError):
    """A binary the sandbox needs is missing: tests skip (or fail under CI) instead of erroring."""


def find_binary(name: str) -> str:
    """Absolute path of `name` (as the engine finds programs); missing: SandboxUnavailable, with the package."""
    from engine.adapters.local import find_program

    found = find_program(name)
    if found:
        return found
    package = _PACKAGES.get(name, name)
    raise SandboxUnavailable(f"{name} not found on PATH; apt-get install {package}")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (racy by nature: callers retry when it gets taken)."""
    while True:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port != 6379:
            return port


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    """Last lines of a log, for error messages that explain themselves."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (orphans may never be reaped in containers)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _quote(value: str) -> str:
    """Quote a redis.conf argument so spaces, quotes and backslashes survive sdssplitargs."""
    if value and not any(c in value for c in " \t\"'\\#"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _no_retry_client(host: str, port: int, password: str | None, **kw: Any) -> redis.Redis:
    return redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_timeout=kw.pop("socket_timeout", 2),
        socket_connect_timeout=kw.pop("socket_connect_timeout", 1),
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
        **kw,
    )


class RedisServer:
    """One redis-server child process with its own dir, config file and log."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        password: str | None,
        directory: Path,
        owns_directory: bool,
        lines: list[str],
    ):
        self.host = host
        self.port = port
        self.password = password
        self.directory = directory
        self.config_path = directory / "redis.conf"
        self.log_path = directory / "redis.log"
        self.pidfile = directory / "redis.pid"
        self._owns_directory = owns_directory
        self._lines = lines
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        password: str | None = None,
        config: dict[str, str] | None = None,
        replica_of: tuple[str, int] | None = None,
        host: str = "127.0.0.1",
        directory: Path | None = None,
        appendonly: bool = False,
        cluster: bool = False,
        start_timeout: float = START_TIMEOUT,
    ) -> RedisServer:
        """Write a config, start the server, return once it answers PING (retrying taken ports).

        `start_timeout` bounds the wait; loading a large RDB or AOF needs more than the default.
        """
        from engine.sandbox.reaper import mark_owner, reap_once

        binary = find_binary("redis-server")
        reap_once()
        owns = directory is None
        workdir = Path(tempfile.mkdtemp(prefix="runbook-redis-")) if directory is None else Path(directory)
        if owns:
            mark_owner(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        workdir = workdir.resolve()
        last_error: Exception | None = None
        for _attempt in range(5):
            port = free_port(host)
            lines = _config_lines(
                host=host,
                port=port,
                directory=workdir,
                password=password,
                config=config or {},
                replica_of=replica_of,
                appendonly=appendonly,
                cluster_port=free_port(host) if cluster else None,
            )
            server = cls(
                host=host,
                port=port,
                password=password,
                directory=workdir,
                owns_directory=owns,
                lines=lines,
            )
            server.start_timeout = start_timeout
            server.config_path.write_text("\n".join(lines) + "\n")
            try:
                server._launch(binary)
                return server
            except _PortTaken as exc:
                last_error = exc
                continue
            except BaseException:
                server.stop()
                raise
        if owns:
            shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"redis-server could not find a free port after 5 attempts: {last_error}")

    def restart_from_stdin(self, settings: str) -> None:
        """Start again with `settings` piped on stdin (`redis-server -`) instead of the config file: INFO's
        config_file is empty and CONFIG REWRITE fails, as on a server started from a command line."""
        self._shutdown()  # ours, or one the service script started (found through its pidfile)
        self._launch(settings=settings)

    def _launch(self, binary: str | None = None, settings: str | None = None) -> None:
        binary = binary or find_binary("redis-server")
        self._close_log()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        # --daemonize no wins over a `daemonize yes` that CONFIG REWRITE may have copied from the
        # service script's command line: Popen must keep owning the process.
        source = "-" if settings is not None else str(self.config_path)
        with signals_deferred():  # held by self before a signal may raise: stop() finds it
            self._proc = subprocess.Popen(
                [binary, source, *self.extra_args, "--daemonize", "no"],
                cwd=self.directory,
                stdin=subprocess.DEVNULL if settings is None else subprocess.PIPE,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if settings is not None and self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):  # it exited at once: _wait_ready shows why, from its log
                self._proc.stdin.write(settings.encode())
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        self._stopped = False
        self._wait_ready()

    start_timeout: float = START_TIMEOUT
    extra_args: tuple[str, ...] = ()  # e.g. ("--sentinel",)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        probe = _no_retry_client(self.host, self.port, self.password)
        try:
            while time.monotonic() < deadline:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    tail = log_tail(self.log_path)
                    self._close_log()
                    if "Address already in use" in tail:
                        raise _PortTaken(f"port {self.port} taken")
                    raise RuntimeError(f"redis-server exited with {self._proc.returncode} on port {self.port}:\n{tail}")
                try:
                    if probe.ping():
                        return
                except redis.BusyLoadingError:
                    pass  # dataset still loading: keep waiting until it answers properly
                except redis.AuthenticationError:
                    raise
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                time.sleep(0.05)
        finally:
            probe.close()
        self._terminate_proc()
        raise RuntimeError(
            f"redis-server on port {self.port} did not answer PING within {self.start_timeout:.0f}s:\n"
            f"{log_tail(self.log_path)}"
        )

    def stop(self, keep: bool = False) -> None:
        """Shut down (no save) and remove the temp dir; safe to call twice, and after a kill.

        Also reaps a server the service script restarted (found through the pidfile), since that one
        is not our child.
        """
        if not self._stopped:
            self._shutdown()
            self._stopped = True
        if not keep and self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server (fault injection): no shutdown hooks, no final save."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if self._proc is not None and self._proc.pid == pid:
            self._proc.wait()
        else:
            _wait_dead(pid, 5.0)
        self._close_log()

    def restart(self) -> None:
        """Start again on the same port, dir and config file (the data survives as far as it was saved)."""
        if self.pid is not None:
            self._shutdown()
        self._launch()

    def _shutdown(self) -> None:
        if self.running:
            client = _no_retry_client(self.host, self.port, self.password)
            try:
                client.shutdown(nosave=True)
            except redis.RedisError:
                pass
            finally:
                client.close()
        if self._proc is not None and self._proc.poll() is None:
            _wait_proc(self._proc)
        # A server the service script started is not our child: find it via the pidfile.
        other = self._pidfile_pid()
        if other is not None and (self._proc is None or other != self._proc.pid):
            _kill_pid(other)
        self._close_log()

    def _terminate_proc(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            _wait_proc(self._proc, grace=0.0)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _pidfile_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid
        return pid if b"redis" in cmdline else None

    # -- views -------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Pid of the live server, whether we started it or the service script did."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        return self._pidfile_pid()

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def url(self) -> str:
        """Connection URL without credentials: passwords travel through env vars or files only."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/0"

    def client(self, **kw: Any) -> redis.Redis:
        """A redis-py client for this server; fails fast (no retries) unless `retry=` is given."""
        kw.setdefault("decode_responses", True)
        kw.setdefault("password", self.password)
        kw.setdefault("retry", Retry(NoBackoff(), 0))
        kw.setdefault("socket_timeout", 10)
        kw.setdefault("socket_connect_timeout", 5)
        return redis.Redis(host=self.host, port=self.port, **kw)

    def write_password_file(self) -> Path:
        """Write the password to `<dir>/redis.pass` (0600) for consumers that read secrets from files."""
        if self.password is None:
            raise ValueError("this redis server has no password")
        path = self.directory / "redis.pass"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.password)
        os.chmod(path, 0o600)
        return path

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisServer({self.url}, dir={self.directory})"


class _PortTaken(RuntimeError):
    pass


def _config_lines(
    *,
    host: str,
    port: int,
    directory: Path,
    password: str | None,
    config: dict[str, str],
    replica_of: tuple[str, int] | None,
    appendonly: bool,
    cluster_port: int | None,
) -> list[str]:
    lines = [
        "# written by engine.sandbox.redis_server",
        f"port {port}",
        f"bind {host}",
        f"dir {_quote(str(directory))}",
        "daemonize no",
        f"pidfile {_quote(str(directory / 'redis.pid'))}",
        f"logfile {_quote(str(directory / 'redis.log'))}",
        "dbfilename dump.rdb",
        "protected-mode no",
        "enable-debug-command local",
        # Replicas would otherwise wait 5 s for more replicas before a diskless full sync.
        "repl-diskless-sync-delay 0",
        f"appendonly {'yes' if appendonly else 'no'}",
    ]
    if "save" not in config:
        lines.append('save ""')
    if password is not None:
        lines += [f"requirepass {_quote(password)}", f"masterauth {_quote(password)}"]
    if replica_of is not None:
        lines.append(f"replicaof {replica_of[0]} {replica_of[1]}")
    if cluster_port is not None:
        # An explicit bus port: the default port+10000 may be past 65535 for ephemeral ports.
        lines += [
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            "cluster-node-timeout 5000",
            f"cluster-port {cluster_port}",
        ]
    for key, value in config.items():
        value = str(value)
        lines.append(f"{key} {value}" if value else f'{key} ""')
    return lines


def _wait_proc(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Wait for a child to exit, escalating to SIGTERM then SIGKILL."""
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def _kill_pid(pid: int) -> None:
    """Stop a process that is not our child: SIGTERM, then SIGKILL if it lingers."""
    if _wait_dead(pid, 2.0):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_dead(pid, 3.0):
            return


class RedisCluster:
    """A few cluster-enabled masters joined with `redis-cli --cluster create` (for MOVED tests)."""

    def __init__(self, nodes: list[RedisServer]):
        self.nodes = nodes

    @classmethod
    def start(cls, nodes: int = 3, replicas: int = 0) -> RedisCluster:
        """`nodes` servers; with `replicas` N, every primary gets N replicas (nodes must allow it)."""
        cli = find_binary("redis-cli")
        servers: list[RedisServer] = []
        try:
            for _ in range(nodes):
                servers.append(RedisServer.start(cluster=True))
            cluster = cls(servers)
            result = subprocess.run(
                [cli, "--cluster", "create", *cluster.addresses, "--cluster-replicas", str(replicas), "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if result.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}")
            cluster._wait_ok()
            return cluster
        except BaseException:
            for server in servers:
                server.stop()
            raise

    def _wait_ok(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                with node.client() as client:
                    # Split form: "CLUSTER INFO" as one word would be parsed into a dict by redis-py.
                    states.append(str(client.execute_command("CLUSTER", "INFO")))
            state = "\n".join(states)
            if all("cluster_state:ok" in s for s in states):
                return
            time.sleep(0.1)
        raise RuntimeError(f"cluster did not reach cluster_state:ok within {timeout:.0f}s:\n{state}")

    @property
    def addresses(self) -> list[str]:
        return [f"{n.host}:{n.port}" for n in self.nodes]

    def node_for_key(self, key: str) -> RedisServer:
        """The master that owns `key`'s slot."""
        with self.nodes[0].client() as client:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
            ranges = client.execute_command("CLUSTER SLOTS")
        for start, end, master, *_ in ranges:
            if int(start) <= slot <= int(end):
                port = int(master[1])
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node owns slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
