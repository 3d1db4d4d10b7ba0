"""The operator's signing key: an SSH agent key or an unencrypted key file, as git's `user.signingkey`.

`--signing-key PATH` names either a public key (`.pub`, or any file holding one `ssh-... AAAA` line),
which is then looked up in the SSH agent (`SSH_AUTH_SOCK`), or a private key file. An encrypted
private key is refused with the advice to add it to the agent: a run must never stop at a passphrase
prompt in the middle of an incident. Private key material never leaves this module.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import fsutil
from engine.errors import UsageError
from engine.transcript import sshsig

NAMESPACE = "runbook-transcript"
MAX_KEY_FILE = 64 * 1024


@dataclass(frozen=True)
class Signer:
    """Signs transcript lines. `source` says where the key lives ("agent" or "file"), never the key."""

    key: Any  # a paramiko PKey or AgentKey
    source: str

    @property
    def public_key(self) -> bytes:
        return self.key.asbytes()

    @property
    def fingerprint(self) -> str:
        return sshsig.fingerprint(self.public_key)

    def sign(self, message: bytes) -> str:
        data = sshsig.signed_data(NAMESPACE, message)
        algorithm = "rsa-sha2-512" if self.key.get_name() == "ssh-rsa" else None
        signature = self.key.sign_ssh_data(data, algorithm) if algorithm else self.key.sign_ssh_data(data)
        blob = signature.asbytes() if hasattr(signature, "asbytes") else bytes(signature)
        return sshsig.encode(sshsig.Signature(self.public_key, NAMESPACE, sshsig.HASH, blob))

    def describe(self) -> dict[str, str]:
        """What the transcript may say about the key: its type, fingerprint and where it was held."""
        return {"key_type": self.key.get_name(), "fingerprint": self.fingerprint, "source": self.source}


def load_signer(path: Path | str) -> Signer:
    """The key named by `--signing-key`; UsageError (exit 2) with advice on every way it can fail."""
    path = Path(path).expanduser()
    text = _read_key_file(path)
    public = _public_key_blob(text)
    if public is not None:
        return _from_agent(path, public)
    return _from_private_key(path)


def _read_key_file(path: Path) -> str:
    try:
        data = fsutil.read_regular(path, max_bytes=MAX_KEY_FILE, what="the signing key")
    except OSError as exc:
        raise UsageError(f"--signing-key {path}: {exc.strerror or exc}") from None
    return data.decode("utf-8", errors="replace")


def _public_key_blob(text: str) -> bytes | None:
    """The key blob if `text` is a public key line, else None (a private key or something else)."""
    fields = text.strip().split()
    if len(fields) < 2 or not (fields[0].startswith("ssh-") or fields[0].startswith("ecdsa-")):
        return None
    try:
        return base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        return None


def _from_agent(path: Path, public: bytes) -> Signer:
    import paramiko

    if not os.environ.get("SSH_AUTH_SOCK"):
        raise UsageError(
            f"--signing-key {path} is a public key, so the private half must be in an SSH agent, "
            "but SSH_AUTH_SOCK is not set (start ssh-agent and ssh-add the key)"
        )
    try:
        keys = paramiko.Agent().get_keys()
    except Exception as exc:  # paramiko's agent errors vary; all mean "no agent to ask"
        raise UsageError(f"--signing-key {path}: the SSH agent cannot be reached ({type(exc).__name__})") from None
    for key in keys:
        if key.asbytes() == public:
            return Signer(key, "agent")
    raise UsageError(
        f"--signing-key {path}: the SSH agent does not hold this key ({sshsig.fingerprint(public)}); ssh-add it"
    )


def _from_private_key(path: Path) -> Signer:
    import paramiko

    try:
        key = paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        raise UsageError(
            f"--signing-key {path} is encrypted: add it to ssh-agent and pass its .pub file instead "
            "(a run never stops for a passphrase)"
        ) from None
    except Exception:  # unreadable or not a key: say so without echoing any of its bytes
        raise UsageError(f"--signing-key {path}: not an SSH private or public key that can sign") from None
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"--signing-key {path}: permissions {oct(mode & 0o777)} are too open (chmod 600)")
    return Signer(key, "file")
