"""The key export format (docs/backup-format.md): JSON lines, one key per line, checksummed.

    {"format": "runbook-keys", "version": 1, "source": ..., "keys": N, ...}      header
    {"key": "tenant:acme:wm:1", "type": "hash", "pttl": 5400000, "dump": "<base64 DUMP payload>"}
    ...
    {"trailer": "runbook-keys", "keys": N, "sha256": "<hex>"}                    trailer

The sha256 covers every byte before the trailer line (header and key lines, newlines included), so a
flipped byte anywhere, a lost line or a cut-off file is caught before anything is restored. A DUMP
payload keeps the key's type, encoding and value exactly; `pttl` is the remaining time to live in
milliseconds when the key was exported (-1: no expiry).

Writing streams: key lines go to a hidden temp file while they are counted, then header, lines and
trailer are assembled in a second temp file that is fsynced and published under the final name only
if nothing has that name (engine/fsutil.py: O_EXCL | O_NOFOLLOW, unpredictable temp names). A crash
leaves no half-written backup under the final name. Reading checks the file is a regular one and
caps its size and its line length (KEY_EXPORT_MAX_BYTES, KEY_RECORD_MAX_BYTES).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from engine.fsutil import (
    KEY_EXPORT_MAX_BYTES,
    KEY_RECORD_MAX_BYTES,
    Directory,
    UnsafeFileError,
    human_size,
    open_regular,
)

_T = TypeVar("_T")

FORMAT = "runbook-keys"
VERSION = 1
COPY_CHUNK = 1 << 20


class KeyFileError(Exception):
    """The file is not a complete, intact export: nothing may be restored from it."""


class OutputExists(KeyFileError):
    """The export's name is taken (before it started, or while it ran): never overwritten."""


class UnsafeInput(KeyFileError):
    """The path names no regular file within the caps (a FIFO, a device, a directory, too big)."""


@dataclass(frozen=True)
class KeyRecord:
    key: bytes
    type: str
    pttl: int  # ms remaining at export; -1 when the key had no expiry
    payload: bytes  # the DUMP payload

    @property
    def key_text(self) -> str:
        return self.key.decode("utf-8", "backslashreplace")


def encode_record(record: KeyRecord) -> bytes:
    try:
        key: dict[str, str] = {"key": record.key.decode("utf-8")}
    except UnicodeDecodeError:
        key = {"key_b64": base64.b64encode(record.key).decode("ascii")}
    line = {**key, "type": record.type, "pttl": record.pttl, "dump": base64.b64encode(record.payload).decode("ascii")}
    return json.dumps(line, separators=(",", ":")).encode("ascii") + b"\n"


def decode_record(line: bytes, number: int = 0) -> KeyRecord:
    where = f"line {number}: " if number else ""
    try:
        data = json.loads(line)
        key = _key_of(data)
        pttl = data["pttl"]
        if not isinstance(pttl, int) or isinstance(pttl, bool) or (pttl < 0 and pttl != -1):
            raise ValueError(f"bad pttl {pttl!r}")
        payload = base64.b64decode(data["dump"], validate=True)
        return KeyRecord(key=key, type=str(data["type"]), pttl=pttl, payload=payload)
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:
        raise KeyFileError(f"{where}not a key record: {exc}") from None


def decode_key(line: bytes, number: int = 0) -> bytes:
    """Only the key name of a record line: what the passes that look keys up on the server need (the
    payload's base64 is not decoded, which is most of a record's cost). The same JSON parse as
    `decode_record`, so both read the same name from any line (a line that names its key twice too)."""
    try:
        return _key_of(json.loads(line))
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:
        where = f"line {number}: " if number else ""
        raise KeyFileError(f"{where}not a key record: {exc}") from None


def _key_of(data: Any) -> bytes:
    return str(data["key"]).encode("utf-8") if "key" in data else base64.b64decode(data["key_b64"], validate=True)


class _Discard:
    """Where a dry-run's export goes: counted, hashed by nobody, written nowhere."""

    closed = False

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)

    def close(self) -> None:
        self.closed = True


class KeyFileWriter:
    """Collect records, then `commit()` writes header + records + trailer atomically at `path`.

    The directory is opened and checked once; the body and the assembled file are new files with
    unpredictable names created with O_EXCL | O_NOFOLLOW inside it, and the result is published under
    `path` only if nothing has that name. `write=False` (a dry-run) creates no file at all: the records
    are read and counted, and the result says what would have been written.
    """

    def __init__(self, path: str | Path, header: dict[str, Any], *, write: bool = True):
        self.path = Path(path)
        self.write = write
        self.header = {"format": FORMAT, "version": VERSION, **header}
        self._dir: Directory | None = None
        self._body_name: str | None = None
        self._body: Any
        if write:
            try:
                self._dir = Directory.open(self.path.parent)
            except FileNotFoundError:
                raise KeyFileError(f"{self.path.parent}: no such directory") from None
            if self._dir.lstat(self.path.name) is not None:
                self._dir.close()
                raise OutputExists(f"{self.path} already exists: a backup is never overwritten")
            self._body_name, self._body = self._dir.create_temp(self.path.name, "body")
        else:
            self._body = _Discard()
        self.keys = 0
        self.types: dict[str, int] = {}
        self.with_ttl = 0
        self.payload_bytes = 0
        self.rdb_version: int | None = None

    def add(self, record: KeyRecord) -> None:
        self._body.write(encode_record(record))
        self.keys += 1
        self.types[record.type] = self.types.get(record.type, 0) + 1
        self.with_ttl += record.pttl >= 0
        self.payload_bytes += len(record.payload)
        if self.rdb_version is None and len(record.payload) >= 10:
            self.rdb_version = int.from_bytes(record.payload[-10:-8], "little")

    def commit(self, **header: Any) -> dict[str, Any]:
        full = {
            **self.header,
            **header,
            "keys": self.keys,
            "types": dict(sorted(self.types.items())),
            "with_ttl": self.with_ttl,
            "rdb_version": self.rdb_version,
        }
        head = json.dumps(full, separators=(",", ":"), default=str).encode("utf-8") + b"\n"
        if self._dir is None:
            body_size = self._body.size
            self._body.close()
            trailer = {"trailer": FORMAT, "keys": self.keys, "sha256": "0" * 64}
            size = len(head) + body_size + len(json.dumps(trailer, separators=(",", ":"))) + 1
            return self._result(None, size, written=False)
        directory, body = self._dir, self._body
        digest = hashlib.sha256()
        tmp: str | None = None
        try:
            body.flush()
            body.seek(0)
            tmp, out = directory.create_temp(self.path.name, "tmp")
            with out:
                out.write(head)
                digest.update(head)
                while chunk := body.read(COPY_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                trailer = {"trailer": FORMAT, "keys": self.keys, "sha256": digest.hexdigest()}
                out.write(json.dumps(trailer, separators=(",", ":")).encode("ascii") + b"\n")
                out.flush()
                os.fsync(out.fileno())
                size = out.tell()
            try:
                directory.publish_new(tmp, self.path.name)
            except FileExistsError:
                raise OutputExists(f"{self.path} appeared while exporting: a backup is never overwritten") from None
            tmp = None
        finally:
            if tmp is not None:
                directory.unlink(tmp)
            self.abort()
        return self._result(digest.hexdigest(), size, written=True)

    def _result(self, sha256: str | None, size: int, *, written: bool) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "written": written,
            "key_count": self.keys,
            "bytes": size,
            "sha256": sha256,
            "types": dict(sorted(self.types.items())),
            "with_ttl": self.with_ttl,
            "without_ttl": self.keys - self.with_ttl,
            "payload_bytes": self.payload_bytes,
            "rdb_version": self.rdb_version,
        }

    def abort(self) -> None:
        if not self._body.closed:
            self._body.close()
        if self._dir is not None:
            if self._body_name is not None:
                self._dir.unlink(self._body_name)
                self._body_name = None
            self._dir.close()
            self._dir = None

    def __enter__(self) -> KeyFileWriter:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self.abort()


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Numbered lines of a regular file within KEY_EXPORT_MAX_BYTES, none over KEY_RECORD_MAX_BYTES."""
    try:
        fh = open_regular(path, max_bytes=KEY_EXPORT_MAX_BYTES, what="the export")
    except UnsafeFileError as exc:
        raise UnsafeInput(f"{path}: {exc.strerror}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        number = 0
        while line := fh.readline(KEY_RECORD_MAX_BYTES + 1):
            number += 1
            if len(line) > KEY_RECORD_MAX_BYTES:
                cap = human_size(KEY_RECORD_MAX_BYTES)
                raise UnsafeInput(f"{path}: line {number} is longer than {cap}: not a key export")
            yield number, line


def _header(line: bytes, number: int) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except (ValueError, RecursionError):
        raise KeyFileError("line 1: the header is not JSON: not a key export, or corrupt") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise KeyFileError(f"line 1: not a {FORMAT} file")
    if header.get("version") != VERSION:
        raise KeyFileError(f"format version {header.get('version')!r} is not supported (this engine reads {VERSION})")
    return header


def verify(path: str | Path, watch: Callable[[dict[str, Any]], Callable[[bytes], Any]] | None = None) -> dict[str, Any]:
    """Read the whole file once: checksum, line count and every record's shape. Raises KeyFileError.

    `watch(header)`, once the header is read, returns what to call with every record's key: the caller's
    own check of the keys (a restore's scope) in the same pass, not a second read of a file of millions
    of lines."""
    path = Path(path)
    each: Callable[[bytes], Any] | None = None
    digest = hashlib.sha256()
    header: dict[str, Any] | None = None
    pending: tuple[int, bytes] | None = None
    keys = 0
    types: dict[str, int] = {}
    with_ttl = 0
    size = 0
    for number, line in _lines(path):
        size += len(line)
        if pending is not None:
            prev_number, prev = pending
            digest.update(prev)
            if prev_number == 1:
                header = _header(prev, 1)
                each = watch(header) if watch is not None else None
            else:
                record = decode_record(prev, prev_number)
                if each is not None:
                    each(record.key)
                keys += 1
                types[record.type] = types.get(record.type, 0) + 1
                with_ttl += record.pttl >= 0
        pending = (number, line)
    if pending is None:
        raise KeyFileError(f"{path}: empty file")
    number, last = pending
    if not last.endswith(b"\n"):
        raise KeyFileError(f"truncated: line {number} is cut off (no trailer)")
    try:
        trailer = json.loads(last)
    except (ValueError, RecursionError):
        trailer = None
    if not isinstance(trailer, dict) or trailer.get("trailer") != FORMAT:
        raise KeyFileError(f"truncated: the last line ({number}) is not the trailer")
    if header is None:
        raise KeyFileError("no header line")
    actual = digest.hexdigest()
    if trailer.get("sha256") != actual:
        raise KeyFileError(f"checksum mismatch: the trailer says {trailer.get('sha256')}, the content gives {actual}")
    if trailer.get("keys") != keys or header.get("keys") != keys:
        raise KeyFileError(
            f"{keys} key lines, but the header says {header.get('keys')} and the trailer {trailer.get('keys')}"
        )
    return {
        "path": str(path),
        "header": header,
        "key_count": keys,
        "types": dict(sorted(types.items())),
        "with_ttl": with_ttl,
        "sha256": actual,
        "bytes": size,
    }


def records(path: str | Path) -> Iterator[KeyRecord]:
    """The key records in file order (call `verify` first: this only parses)."""
    return _body(Path(path), decode_record)


def keys(path: str | Path) -> Iterator[bytes]:
    """The key names in file order, payloads left undecoded (call `verify` first: this only parses)."""
    return _body(Path(path), decode_key)


def _body(path: Path, decode: Callable[[bytes, int], _T]) -> Iterator[_T]:
    """Every line between the header and the trailer, decoded."""
    previous: tuple[int, bytes] | None = None
    for number, line in _lines(path):
        if previous is not None and previous[0] > 1:
            yield decode(previous[1], previous[0])
        previous = (number, line)
