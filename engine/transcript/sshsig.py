"""SSH signatures (OpenSSH's SSHSIG, what `ssh-keygen -Y sign` and git's SSH signing write).

Why this format: every operator already has an SSH key (often in an agent, on a hardware token), and
`ssh-keygen -Y verify` checks our signatures with no tool of ours. The encoding here is pure; the key
arithmetic is paramiko's (imported only when a signature is made or checked).

Signed data (PROTOCOL.sshsig): "SSHSIG" | string namespace | string reserved | string hash_alg |
string H(message). The signature blob: "SSHSIG" | uint32 1 | string public_key | string namespace |
string reserved | string hash_alg | string signature, armoured as BEGIN/END SSH SIGNATURE.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

MAGIC = b"SSHSIG"
VERSION = 1
HASH = "sha512"
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
MAX_ARMOURED = 64 * 1024  # a signature is a few hundred bytes; anything bigger is not one of ours


class SignatureError(ValueError):
    """A signature that cannot be read or does not verify; the message says which and why."""


@dataclass(frozen=True)
class Signature:
    public_key: bytes  # the SSH wire blob of the signer's public key
    namespace: str
    hash_algorithm: str
    signature: bytes  # string algorithm | string raw signature

    @property
    def key_type(self) -> str:
        return _Reader(self.public_key).string().decode("ascii", "replace")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


def fingerprint(public_key: bytes) -> str:
    """OpenSSH's SHA256 fingerprint (`ssh-keygen -lf`)."""
    digest = base64.b64encode(hashlib.sha256(public_key).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def signed_data(namespace: str, message: bytes, hash_algorithm: str = HASH) -> bytes:
    """What the key actually signs: the message is hashed, the namespace keeps signatures from other uses."""
    if hash_algorithm not in ("sha256", "sha512"):
        raise SignatureError(f"hash algorithm {hash_algorithm!r} is not one SSHSIG allows")
    digest = hashlib.new(hash_algorithm, message).digest()
    return MAGIC + _string(namespace.encode()) + _string(b"") + _string(hash_algorithm.encode()) + _string(digest)


def encode(sig: Signature) -> str:
    """The armoured text, wrapped at 70 columns like ssh-keygen."""
    blob = (
        MAGIC
        + struct.pack(">I", VERSION)
        + _string(sig.public_key)
        + _string(sig.namespace.encode())
        + _string(b"")
        + _string(sig.hash_algorithm.encode())
        + _string(sig.signature)
    )
    text = base64.b64encode(blob).decode()
    lines = [text[i : i + 70] for i in range(0, len(text), 70)]
    return "\n".join([BEGIN, *lines, END])


def decode(armoured: object) -> Signature:
    """Parse an armoured signature; SignatureError on anything malformed (never another exception).

    `armoured` is whatever a transcript's signature block holds: not a string is malformed too."""
    if not isinstance(armoured, str) or len(armoured) > MAX_ARMOURED:
        raise SignatureError("not an SSH signature (missing or too large)")
    text = armoured.strip()
    if not (text.startswith(BEGIN) and text.endswith(END)):
        raise SignatureError("not an SSH signature (no BEGIN/END SSH SIGNATURE lines)")
    body = "".join(text[len(BEGIN) : -len(END)].split())
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("SSH signature: invalid base64") from None
    reader = _Reader(blob)
    try:
        if reader.take(6) != MAGIC:
            raise SignatureError("SSH signature: bad magic")
        (version,) = struct.unpack(">I", reader.take(4))
        if version != VERSION:
            raise SignatureError(f"SSH signature: version {version} is not supported")
        public_key = reader.string()
        namespace = reader.string().decode("utf-8")
        reader.string()  # reserved
        hash_algorithm = reader.string().decode("ascii")
        signature = reader.string()
    except (struct.error, UnicodeDecodeError):
        raise SignatureError("SSH signature: truncated or garbled") from None
    if not reader.done():
        raise SignatureError("SSH signature: trailing bytes")
    return Signature(public_key, namespace, hash_algorithm, signature)


def verify(armoured: object, message: bytes, namespace: str) -> Signature:
    """Check the signature over `message` by the key it names; return it. SignatureError if it does not hold.

    Who that key belongs to is a separate question (allowed signers); this answers only "did this
    key sign exactly these bytes in this namespace".
    """
    sig = decode(armoured)
    if sig.namespace != namespace:
        raise SignatureError(f"signature is for namespace {sig.namespace!r}, not {namespace!r}")
    key = _paramiko_key(sig.public_key)
    from paramiko.message import Message

    try:
        ok = key.verify_ssh_sig(signed_data(namespace, message, sig.hash_algorithm), Message(sig.signature))
    except Exception:  # paramiko raises assorted errors on garbage; all mean "does not verify"
        ok = False
    if not ok:
        raise SignatureError(f"signature by {sig.fingerprint} does not match the signed line")
    return sig


def _paramiko_key(public_key: bytes):
    import paramiko

    try:
        key_type = _Reader(public_key).string().decode("ascii")
        return paramiko.PKey.from_type_string(key_type, public_key)
    except Exception:
        raise SignatureError("signature names a public key of a type that cannot be read") from None


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise struct.error("short read")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def string(self) -> bytes:
        (n,) = struct.unpack(">I", self.take(4))
        return self.take(n)

    def done(self) -> bool:
        return self.at == len(self.data)
