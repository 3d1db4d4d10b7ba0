"""Commands on hosts over SSH (paramiko), with host keys checked and the dry-run guard in `run`.

The guard does not take the caller's word: `run` classifies the command itself
(engine/adapters/shell_effects.py). In a dry-run only a command proven read-only leaves the process;
in a real run a command claimed `read` that is not proven is refused (the step kind sends such a
command through the gate as a write instead).

Host keys are checked against the inventory's known_hosts file (else ~/.ssh/known_hosts). An unknown
key is refused unless the inventory says `host_key_policy: accept-new` for the host; a changed key
is always refused. Accepted keys are appended to that known_hosts file and reported to the caller.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from engine.adapters.shell_effects import Verdict, classify
from engine.errors import HostKeyError, MutationRefused, TargetError
from engine.spec.model import Effect
from engine.targets import SshEndpoint

EOF_GRACE_S = 2.0  # after the exit status, how long the rest of a command's output may take to arrive


@dataclass(frozen=True)
class SshResult:
    exit_status: int
    stdout: str
    stderr: str
    duration_ms: float

    def as_data(self) -> dict[str, Any]:
        return {
            "exit_status": self.exit_status,
            "ok": self.exit_status == 0,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "lines": self.stdout.splitlines(),
        }


def _fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint if hasattr(key, "fingerprint") else key.get_base64()


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Trust on first use: keep the key in known_hosts and tell the caller, so it is transcribed."""

    def __init__(self, known_hosts: Path, on_accept: Callable[[dict[str, str]], None]):
        self.known_hosts = known_hosts
        self.on_accept = on_accept

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        # appended, never truncated, and never through a symlink planted at its name
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        with os.fdopen(os.open(self.known_hosts, flags, 0o600), "a", encoding="utf-8") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        self.on_accept(
            {"host": hostname, "key_type": key.get_name(), "fingerprint": _fingerprint(key), "policy": "accept-new"}
        )


class _Refuse(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyError(
            f"ssh {hostname}: host key {key.get_name()} {_fingerprint(key)} is not in {self.known_hosts}; "
            "refusing to connect. Verify the fingerprint out of band and add it to known_hosts, or set "
            "host_key_policy: accept-new for this host in the inventory"
        )


class SshAdapter:
    def __init__(
        self,
        endpoint: SshEndpoint,
        *,
        allow_mutation: bool,
        on_host_key_accepted: Callable[[dict[str, str]], None] = lambda event: None,
    ):
        self.endpoint = endpoint
        self.allow_mutation = allow_mutation
        self.on_host_key_accepted = on_host_key_accepted
        self._client: paramiko.SSHClient | None = None

    @property
    def where(self) -> str:
        return f"ssh {self.endpoint.address}"

    def connect(self) -> paramiko.SSHClient:
        if self._client is not None:
            return self._client
        ep = self.endpoint
        known = Path(ep.known_hosts or os.path.expanduser("~/.ssh/known_hosts"))
        client = paramiko.SSHClient()
        if known.exists():
            client.load_host_keys(str(known))
        if ep.host_key_policy == "accept-new":
            client.set_missing_host_key_policy(_AcceptNew(known, self.on_host_key_accepted))
        else:
            client.set_missing_host_key_policy(_Refuse(known))
        try:
            client.connect(
                ep.host,
                port=ep.port,
                username=ep.user,
                key_filename=ep.key_file,
                timeout=ep.timeout,
                banner_timeout=ep.timeout,
                auth_timeout=ep.timeout,
                allow_agent=False,
                look_for_keys=ep.key_file is None,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"ssh {ep.address}: the host key CHANGED (got {_fingerprint(exc.key)}, expected "
                f"{_fingerprint(exc.expected_key)} from {known}); refusing to connect. This can be a "
                "man-in-the-middle; verify the host before updating known_hosts"
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise TargetError(f"ssh {ep.address}: authentication failed: {exc}") from None
        except (TimeoutError, OSError, paramiko.SSHException) as exc:
            client.close()
            raise TargetError(f"ssh {ep.address}: cannot connect: {exc}") from None
        self._client = client
        return client

    def proves_read(self, command: str) -> Verdict:
        """Whether `command` is proven read-only; the inventory's status and logs commands are read by contract."""
        service = self.endpoint.service
        return classify(command, trusted=(service.status or "", service.logs or ""))

    def run(self, command: str, *, effect: Effect, timeout: float | None = None) -> SshResult:
        """Run one command; in a dry-run only a command labelled `read` and proven read-only leaves the process."""
        verdict = self.proves_read(command)
        where = self.endpoint.address
        if not self.allow_mutation and effect is not Effect.READ:
            raise MutationRefused(f"dry-run: refused to run a {effect} command on {where}")
        if not self.allow_mutation and not verdict:
            raise MutationRefused(f"dry-run: refused a command not proven read-only on {where}: {verdict.reason}")
        if effect is Effect.READ and not verdict:
            raise MutationRefused(
                f"refused to run a command labelled read that is not proven read-only on {where}: {verdict.reason}"
            )
        client = self.connect()
        timeout = timeout or self.endpoint.timeout
        started = time.monotonic()
        try:
            channel = client.get_transport().open_session(timeout=self.endpoint.timeout)  # type: ignore[union-attr]
            channel.settimeout(0.2)
            channel.exec_command(command)
            stdout, stderr = bytearray(), bytearray()
            deadline = started + timeout
            exited_at: float | None = None
            while True:
                got = False
                while channel.recv_ready():
                    stdout += channel.recv(65536)
                    got = True
                while channel.recv_stderr_ready():
                    stderr += channel.recv_stderr(65536)
                    got = True
                if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    # sshd may send the exit status before the last of the output it still reads from the
                    # command's pipes (seen on a loaded machine: a df's lines at the end of a step's output lost).
                    # The output is whole at the channel's EOF; a command that left a process holding its
                    # pipes never sends one, so it is waited for EOF_GRACE_S at most
                    exited_at = exited_at or time.monotonic()
                    if channel.eof_received or time.monotonic() - exited_at > EOF_GRACE_S:
                        break
                if time.monotonic() > deadline:
                    channel.close()
                    raise TargetError(f"ssh {self.endpoint.address}: command timed out after {timeout:g}s")
                if not got:
                    time.sleep(0.01)
            while channel.recv_ready():  # what came with the EOF, between the checks above
                stdout += channel.recv(65536)
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(65536)
            status = channel.recv_exit_status()
            channel.close()
        except (paramiko.SSHException, OSError) as exc:
            raise TargetError(f"ssh {self.endpoint.address}: {exc}") from None
        return SshResult(
            status,
            stdout.decode("utf-8", "replace"),
            stderr.decode("utf-8", "replace"),
            (time.monotonic() - started) * 1000,
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
