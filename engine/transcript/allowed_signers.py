"""OpenSSH's allowed_signers file (ssh-keygen(1) ALLOWED SIGNERS): who owns which signing key.

The same file a team keeps for git's `gpg.ssh.allowedSignersFile`, so one list of people serves both.
Each line: `principals [options] keytype base64-key [comment]`; options `namespaces="..."`,
`valid-after=`, `valid-before=`. Certificate authorities (`cert-authority`) are not supported and are
reported, not silently trusted.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from engine import fsutil
from engine.errors import UsageError

MAX_FILE = 4 * 1024 * 1024


@dataclass(frozen=True)
class AllowedSigner:
    principals: tuple[str, ...]
    public_key: bytes
    namespaces: tuple[str, ...] | None = None
    valid_after: datetime | None = None
    valid_before: datetime | None = None
    line: int = 0

    def allows(self, namespace: str, when: datetime | None) -> bool:
        if self.namespaces is not None and not any(fnmatch.fnmatchcase(namespace, n) for n in self.namespaces):
            return False
        if when is not None and self.valid_after is not None and when < self.valid_after:
            return False
        return not (when is not None and self.valid_before is not None and when >= self.valid_before)


@dataclass(frozen=True)
class AllowedSigners:
    entries: tuple[AllowedSigner, ...]
    problems: tuple[str, ...] = field(default=())

    def principals_for(self, public_key: bytes, namespace: str, when: datetime | None = None) -> tuple[str, ...]:
        """Every principal this key may sign as, here and now; empty when the key is nobody's."""
        out: list[str] = []
        for entry in self.entries:
            if entry.public_key == public_key and entry.allows(namespace, when):
                out.extend(p for p in entry.principals if p not in out)
        return tuple(out)


def load_allowed_signers(path: Path | str) -> AllowedSigners:
    """Read and parse the file; UsageError if it cannot be read. Bad lines are problems, not errors."""
    path = Path(path)
    try:
        data = fsutil.read_regular(path, max_bytes=MAX_FILE, what="the allowed signers file")
    except OSError as exc:
        raise UsageError(f"--allowed-signers {path}: {exc.strerror or exc}") from None
    return parse_allowed_signers(data.decode("utf-8", errors="replace"), str(path))


def parse_allowed_signers(text: str, name: str = "allowed_signers") -> AllowedSigners:
    entries: list[AllowedSigner] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entries.append(_parse_line(line, number))
        except ValueError as exc:
            problems.append(f"{name}:{number}: {exc}")
    return AllowedSigners(tuple(entries), tuple(problems))


def _parse_line(line: str, number: int) -> AllowedSigner:
    words = _words(line, limit=64)
    if len(words) < 3:
        raise ValueError("expected: principals [options] keytype base64-key")
    principals = tuple(p for p in words[0].replace('"', "").split(",") if p)
    if not principals:
        raise ValueError("no principal")
    namespaces: tuple[str, ...] | None = None
    after = before = None
    at = 1
    while at < len(words) and not _is_key_type(words[at]):
        for option in _split_options(words[at]):
            name, _, value = option.partition("=")
            value = value.replace('"', "")
            lowered = name.lower()
            if lowered == "cert-authority":
                raise ValueError("cert-authority lines are not supported (sign with a plain key)")
            if lowered == "namespaces":
                namespaces = tuple(n for n in value.split(",") if n)
            elif lowered == "valid-after":
                after = _timestamp(value)
            elif lowered == "valid-before":
                before = _timestamp(value)
            elif option:
                raise ValueError(f"unknown option {name!r}")
        at += 1
    if at + 1 >= len(words):
        raise ValueError("no public key")
    try:
        blob = base64.b64decode(words[at + 1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("public key is not base64") from None
    return AllowedSigner(principals, blob, namespaces, after, before, number)


def _words(line: str, limit: int) -> list[str]:
    """Split on blanks, keeping double-quoted runs whole; a comment after the key is free text.

    Not shlex: a trailing comment such as `alice's laptop` must not be read as an open quote.
    """
    words: list[str] = []
    at, n = 0, len(line)
    while at < n and len(words) < limit:
        while at < n and line[at] in " \t":
            at += 1
        if at >= n:
            break
        word: list[str] = []
        while at < n and line[at] not in " \t":
            if line[at] == '"':
                end = line.find('"', at + 1)
                if end < 0:
                    raise ValueError("unbalanced quotes")
                word.append(line[at : end + 1])  # quotes kept: options split on commas outside them
                at = end + 1
            else:
                word.append(line[at])
                at += 1
        words.append("".join(word))
        if len(words) >= 2 and _is_key_type(words[-2]):
            break  # keytype and key read: the rest of the line is a comment
    return words


def _split_options(word: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in word:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _is_key_type(word: str) -> bool:
    return word.startswith(("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"))


def _timestamp(value: str) -> datetime:
    text = value.rstrip("Zz")
    for fmt in ("%Y%m%d%H%M%S", "%Y%m%d%H%M", "%Y%m%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"bad timestamp {value!r} (YYYYMMDD[HHMM[SS]][Z])")
