"""An OpenSSH server on its own loopback address, standing in for a separate Redis host.

Each SshHost listens on a different 127.x.y.z address (all of 127/8 routes to lo on Linux) with its
own host key, so host-key checking and per-host inventory behave as with real machines. Commands run
on this machine: `install_redis_service` gives it a systemctl-like script for a sandbox Redis.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.sandbox.redis_server import (
    START_TIMEOUT,
    RedisServer,
    find_binary,
    free_port,
    log_tail,
)
from engine.spawn import signals_deferred

PRIVSEP_DIR = Path("/run/sshd")
_ADDRESSES = tuple(f"127.0.0.{n}" for n in range(2, 251))
_used_addresses: set[str] = set()
_lock = threading.Lock()


def _claim_address(address: str | None) -> str:
    with _lock:
        if address is None:
            address = next((a for a in _ADDRESSES if a not in _used_addresses), None)
            if address is None:
                raise RuntimeError("all sandbox loopback addresses 127.0.0.2-250 are in use")
        _used_addresses.add(address)
        return address


def _release_address(address: str) -> None:
    with _lock:
        _used_addresses.discard(address)


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        [find_binary("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _ensure_privsep_dir() -> None:
    """sshd refuses to start ("Missing privilege separation directory") without /run/sshd."""
    if PRIVSEP_DIR.is_dir():
        return
    try:
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(PRIVSEP_DIR, 0o755)
    except PermissionError:
        pass  # non-root sshd does not chroot, so it can live without it


class SshHost:
    """A running `sshd -D` on `address:port`, accepting only the generated client key."""

    def __init__(self, address: str, port: int, directory: Path, owns_directory: bool):
        self.address = address
        self.port = port
        self.directory = directory
        self.user = getpass.getuser()
        self.key_file = directory / "id_ed25519"
        self.host_key_file = directory / "ssh_host_ed25519_key"
        self.known_hosts = directory / "known_hosts"
        self.authorized_keys = directory / "authorized_keys"
        self.config_path = directory / "sshd_config"
        self.log_path = directory / "sshd.log"
        self.pidfile = directory / "sshd.pid"
        self.host_public_key = ""
        self._owns_directory = owns_directory
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False

    @classmethod
    def start(cls, *, address: str | None = None, directory: Path | None = None) -> SshHost:
        """Generate keys, write the config, start sshd and wait for its banner."""
        from engine.sandbox.reaper import mark_owner, reap_once

        sshd = find_binary("sshd")
        find_binary("ssh-keygen")
        reap_once()
        address = _claim_address(address)
        owns = directory is None
        workdir = Path(tempfile.mkdtemp(prefix="runbook-sshd-")) if directory is None else Path(directory)
        if owns:
            mark_owner(workdir)
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            workdir = workdir.resolve()
            host = cls(address, 0, workdir, owns)
            _keygen(host.host_key_file, f"sandbox-host-{address}")
            _keygen(host.key_file, "runbook-sandbox-client")
            shutil.copyfile(host.key_file.with_suffix(".pub"), host.authorized_keys)
            os.chmod(host.authorized_keys, 0o600)
            pub = host.host_key_file.with_name(host.host_key_file.name + ".pub").read_text().split()
            host.host_public_key = f"{pub[0]} {pub[1]}"
            _ensure_privsep_dir()
            for _attempt in range(5):
                host.port = free_port(address)
                host._write_config()
                if host._launch(sshd):
                    break
            else:
                raise RuntimeError(f"sshd could not bind a free port on {address}:\n{log_tail(host.log_path)}")
            host.known_hosts.write_text(f"[{address}]:{host.port} {host.host_public_key}\n")
            return host
        except BaseException:
            _release_address(address)
            if owns:
                shutil.rmtree(workdir, ignore_errors=True)
            raise

    def _write_config(self) -> None:
        lines = [
            "# written by engine.sandbox.sshd",
            f"ListenAddress {self.address}:{self.port}",
            f"HostKey {self.host_key_file}",
            f"PidFile {self.pidfile}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # The temp dir and keys are owned by whoever runs the tests, not necessarily the login user.
            "StrictModes no",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            "MaxSessions 50",
            "MaxStartups 50",
            "PrintMotd no",
            "X11Forwarding no",
            "LoginGraceTime 30",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _launch(self, sshd: str) -> bool:
        """Start sshd; False when the port was taken meanwhile (caller retries with another)."""
        with open(self.log_path, "ab") as log, signals_deferred():  # held by self before a signal may raise
            # sshd re-executes itself per connection, which needs the absolute binary path.
            self._proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = log_tail(self.log_path)
                if "Address already in use" in tail:
                    return False
                raise RuntimeError(f"sshd exited with {self._proc.returncode}:\n{tail}")
            if self._banner():
                return True
            time.sleep(0.05)
        self._terminate()
        raise RuntimeError(
            f"sshd on {self.address}:{self.port} sent no banner within {START_TIMEOUT:.0f}s:\n{log_tail(self.log_path)}"
        )

    def _banner(self) -> bool:
        try:
            with socket.create_connection((self.address, self.port), timeout=1) as sock:
                sock.settimeout(2)
                return sock.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def _terminate(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def stop(self) -> None:
        """Stop the listener and remove the dir (open sessions end when their clients disconnect)."""
        if self._stopped:
            return
        self._stopped = True
        self._terminate()
        _release_address(self.address)
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SshHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SshHost({self.user}@{self.address}:{self.port}, dir={self.directory})"


@dataclass(frozen=True)
class ServiceCommands:
    """Shell commands (run over SSH) and paths that manage one Redis like a systemd unit would."""

    start: str
    stop: str
    restart: str
    status: str
    logs: str
    rdb_path: Path
    aof_dir: Path
    log_file: Path
    service_user: str
    data_dir: Path


_SERVICE_SCRIPT = """\
#!/bin/sh
# redis-service: systemctl-like control of one sandbox redis-server (written by engine.sandbox.sshd).
# usage: redis-service start|stop|restart|status
set -u
CONF=@CONF@
DIR=@DIR@
HOST=@HOST@
PORT=@PORT@
REDIS_SERVER=@REDIS_SERVER@
REDIS_CLI=@REDIS_CLI@
LOG=@LOG@
PIDFILE="$DIR/redis.pid"
PASSFILE="$DIR/redis.pass"

if [ -r "$PASSFILE" ]; then
    REDISCLI_AUTH=$(cat "$PASSFILE")
    export REDISCLI_AUTH
fi

cli() { "$REDIS_CLI" -h "$HOST" -p "$PORT" "$@" 2>&1; }

read_pid() { [ -r "$PIDFILE" ] && cat "$PIDFILE" 2>/dev/null; }

# A zombie is dead for our purposes: orphans are not always reaped inside containers.
alive() {
    [ -n "${1:-}" ] || return 1
    if [ -d /proc/self ]; then
        [ -r "/proc/$1/stat" ] || return 1
        state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
        [ -n "$state" ] && [ "$state" != Z ]
    else
        kill -0 "$1" 2>/dev/null
    fi
}

port_open() {
    case $(cli ping) in
        *"Could not connect"*|*"Connection refused"*) return 1 ;;
        *) return 0 ;;
    esac
}

running() { alive "$(read_pid)" || port_open; }

wait_down() {  # $1 = pid (may be empty); tenths of a second to wait in $2
    n=0
    while [ "$n" -lt "$2" ]; do
        if ! alive "$1" && ! port_open; then return 0; fi
        sleep 0.1
        n=$((n + 1))
    done
    return 1
}

do_stop() {
    pid=$(read_pid)
    if ! running; then
        echo "redis-service: already stopped"
        return 0
    fi
    cli shutdown nosave >/dev/null
    if ! wait_down "$pid" 100; then
        if alive "$pid"; then kill -TERM "$pid" 2>/dev/null; fi
        if ! wait_down "$pid" 50; then
            if alive "$pid"; then kill -KILL "$pid" 2>/dev/null; fi
            wait_down "$pid" 50 || { echo "redis-service: port $PORT still open" >&2; return 1; }
        fi
    fi
    rm -f "$PIDFILE"
    echo "redis-service: stopped"
}

do_start() {
    if running; then
        echo "redis-service: already running pid $(read_pid)"
        return 0
    fi
    "$REDIS_SERVER" "$CONF" --daemonize yes --pidfile "$PIDFILE" || return 1
    n=0
    while [ "$n" -lt 100 ]; do
        case $(cli ping) in
            *PONG*|*LOADING*) echo "redis-service: started pid $(read_pid)"; return 0 ;;
        esac
        sleep 0.1
        n=$((n + 1))
    done
    echo "redis-service: no PING answer on port $PORT within 10s" >&2
    tail -n 20 "$LOG" >&2
    return 1
}

do_status() {
    pid=$(read_pid)
    if alive "$pid"; then
        echo "active (running) pid $pid"
        return 0
    fi
    echo "inactive (dead)"
    return 3
}

case "${1:-}" in
    start) do_start ;;
    stop) do_stop ;;
    restart) do_stop && do_start ;;
    status) do_status ;;
    *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
"""


def install_redis_service(host: SshHost, redis: RedisServer) -> ServiceCommands:
    """Write `<host dir>/bin/redis-service` controlling `redis` through its own config file.

    The "remote" host is this machine, so the script drives the very server the test started: same
    config, port, data dir and pidfile; after `stop` its `start` brings the same data back.
    """
    values = {
        "@CONF@": str(redis.config_path),
        "@DIR@": str(redis.directory),
        "@HOST@": redis.host,
        "@PORT@": str(redis.port),
        "@REDIS_SERVER@": find_binary("redis-server"),
        "@REDIS_CLI@": find_binary("redis-cli"),
        "@LOG@": str(redis.log_path),
    }
    text = _SERVICE_SCRIPT
    for marker, value in values.items():
        text = text.replace(marker, shlex.quote(value))
    bin_dir = host.directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "redis-service"
    script.write_text(text)
    script.chmod(0o755)
    if redis.password is not None:
        redis.write_password_file()
    cmd = shlex.quote(str(script))
    return ServiceCommands(
        start=f"{cmd} start",
        stop=f"{cmd} stop",
        restart=f"{cmd} restart",
        status=f"{cmd} status",
        logs=f"tail -n 200 {shlex.quote(str(redis.log_path))}",
        rdb_path=redis.directory / "dump.rdb",
        aof_dir=redis.directory / "appendonlydir",
        log_file=redis.log_path,
        service_user=getpass.getuser(),
        data_dir=redis.directory,
    )


def inventory_for(
    redis: RedisServer | None,
    ssh: SshHost | None,
    service: ServiceCommands | None,
    *,
    http_base_url: str | None = None,
    name: str = "sandbox",
    environment: str = "sandbox",
    password_env: str | None = None,
    password_file: Path | None = None,
    host_key_policy: str = "strict",
) -> dict[str, Any]:
    """The engine's inventory structure for one target; facets that are None are left out.

    The password itself never appears: it is referenced by env var or file. A password-protected
    server with neither given gets `<redis dir>/redis.pass` written and referenced.
    """
    target: dict[str, Any] = {}
    if redis is not None:
        facet: dict[str, Any] = {"url": redis.url}
        if password_env is not None:
            facet["password_env"] = password_env
        elif password_file is not None:
            facet["password_file"] = str(password_file)
        elif redis.password is not None:
            facet["password_file"] = str(redis.write_password_file())
        facet["timeout"] = "10s"
        target["redis"] = facet
    if ssh is not None:
        ssh_facet: dict[str, Any] = {
            "host": ssh.address,
            "port": ssh.port,
            "user": ssh.user,
            "key_file": str(ssh.key_file),
            "known_hosts": str(ssh.known_hosts),
            "host_key_policy": host_key_policy,
            "timeout": "10s",
        }
        if service is not None:
            ssh_facet["service"] = {
                "start": service.start,
                "stop": service.stop,
                "restart": service.restart,
                "status": service.status,
                "logs": service.logs,
            }
            ssh_facet["paths"] = {
                "rdb": str(service.rdb_path),
                "aof_dir": str(service.aof_dir),
                "log": str(service.log_file),
                "data_dir": str(service.data_dir),
            }
            ssh_facet["service_user"] = service.service_user
        target["ssh"] = ssh_facet
    if http_base_url is not None:
        target["http"] = {"base_url": http_base_url, "timeout": "5s"}
    return {"environments": {environment: {"targets": {name: target}}}}


def write_inventory(path: Path | str, data: dict[str, Any]) -> Path:
    """Write an inventory as YAML (block style, keys in the order built)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    return path
