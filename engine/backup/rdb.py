"""RDB files: check one natively (magic, version, EOF opcode, CRC64), ask redis-check-rdb, read a sync.

`verify_file` reads a file once, in chunks, and never needs a server. `ReplicationStream` parses a
full sync (the socket it reads is the Redis adapter's: engine/adapters/redis_replication.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from engine.backup.crc64 import Crc64
from engine.fsutil import Directory, open_regular

MAGIC = b"REDIS"
HEADER_BYTES = 9  # "REDIS" + 4 ASCII digits
EOF_OPCODE = 0xFF
CHECKSUM_SINCE = 5  # RDB versions before 5 have no CRC64 trailer
EOF_MARK_BYTES = 40  # diskless replication: "$EOF:<40 random bytes>" ... <the same 40 bytes>
READ_CHUNK = 1 << 20


class RdbError(Exception):
    """The server or the stream did not give us an RDB."""


# -- the file format ------------------------------------------------------------------------------
def parse_header(head: bytes) -> dict[str, Any]:
    """The first 9 bytes: `REDIS` and a 4-digit format version ("0010" -> 10)."""
    magic_ok = head[:5] == MAGIC
    digits = head[5:HEADER_BYTES]
    version = int(digits) if len(digits) == 4 and digits.isdigit() else None
    return {"magic_ok": magic_ok, "version": version, "magic": head[:5].decode("latin-1")}


def dump_payload_version(payload: bytes) -> int | None:
    """The RDB version in a DUMP payload's trailer: <value> <2-byte LE rdb version> <8-byte LE crc64>."""
    if len(payload) < 10:
        return None
    return int.from_bytes(payload[-10:-8], "little")


def verify_file(path: str | Path, *, on_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Every check that needs only the file; `problems` lists what is wrong in an operator's words."""
    path = Path(path)
    out: dict[str, Any] = {
        "path": str(path),
        "exists": False,
        "bytes": None,
        "mtime": None,
        "age_s": None,
        "magic_ok": False,
        "version": None,
        "eof_ok": False,
        "checksum_ok": None,
        "checksum_disabled": False,
        "checksum_stored": None,
        "checksum_computed": None,
        "crc_seconds": None,
        "crc_mb_per_s": None,
        "problems": [],
    }
    problems: list[str] = out["problems"]
    if not os.path.exists(path):
        problems.append(f"{path}: file not found")
        return out
    fh = open_regular(path, max_bytes=None, what="the RDB")  # UnsafeFileError: a FIFO, a device, a directory
    stat = os.fstat(fh.fileno())
    size = stat.st_size
    out.update(exists=True, bytes=size, mtime=stat.st_mtime, age_s=round(time.time() - stat.st_mtime, 1))
    with fh:
        head = fh.read(HEADER_BYTES)
        out.update({k: v for k, v in parse_header(head).items() if k != "magic"})
        if not out["magic_ok"]:
            problems.append(f"not an RDB file: starts with {head[:5]!r}, not b'REDIS'")
        if out["version"] is None:
            problems.append(f"no 4-digit RDB version after the magic: {head[5:HEADER_BYTES]!r}")
        has_checksum = out["version"] is None or out["version"] >= CHECKSUM_SINCE
        trailer = 8 if has_checksum else 0
        if size < HEADER_BYTES + 1 + trailer:
            problems.append(f"truncated: {size} bytes is shorter than the smallest RDB")
            return out
        fh.seek(size - trailer - 1)
        tail = fh.read(1 + trailer)
        out["eof_ok"] = tail[0] == EOF_OPCODE
        if not out["eof_ok"]:
            problems.append("truncated or corrupt: no EOF opcode (0xFF) before the checksum")
        if not has_checksum:
            return out
        stored = int.from_bytes(tail[1:], "little")
        out["checksum_stored"] = f"{stored:016x}"
        if stored == 0:
            out["checksum_disabled"] = True  # written with rdbchecksum no
            return out
        fh.seek(0)
        crc = Crc64()
        remaining = size - 8
        started = time.monotonic()
        while remaining:
            chunk = fh.read(min(READ_CHUNK, remaining))
            if not chunk:
                break
            crc.update(chunk)
            remaining -= len(chunk)
            if on_progress:
                on_progress(len(chunk))
        computed = crc.digest()
        elapsed = time.monotonic() - started
        out["crc_seconds"] = round(elapsed, 3)
        out["crc_mb_per_s"] = round((size - 8) / 1e6 / elapsed, 1) if elapsed > 0 else None
        out["checksum_computed"] = f"{computed:016x}"
        out["checksum_ok"] = computed == stored
        if not out["checksum_ok"]:
            problems.append(f"CRC64 mismatch: the file says {stored:016x}, its content gives {computed:016x}")
    return out


# -- redis-check-rdb ------------------------------------------------------------------------------
_INFO = re.compile(r"^\[info\] (\d+) (keys read|expires|already expired)\s*$", re.MULTILINE)
_OFFSET = re.compile(r"^\[offset (\d+)\] (.*)$", re.MULTILINE)


def parse_check_rdb(output: str, exit_status: int) -> dict[str, Any]:
    """redis-check-rdb's verdict, counts and first error from its output."""
    counts = {name: int(n) for n, name in _INFO.findall(output)}
    ok = exit_status == 0 and "RDB looks OK" in output
    error = None
    if "RDB ERROR DETECTED" in output:
        after = output.split("RDB ERROR DETECTED", 1)[1]
        found = _OFFSET.search(after)
        detail = [ln.strip() for ln in after.splitlines() if ln.startswith("[additional info]")]
        error = (f"at offset {found.group(1)}: {found.group(2).strip()}" if found else after.strip()[:200]) + (
            f" ({'; '.join(d.removeprefix('[additional info] ') for d in detail)})" if detail else ""
        )
    elif not ok:
        lines = [ln for ln in output.strip().splitlines() if ln.strip()]
        error = lines[-1][:300] if lines else f"exit status {exit_status}"
    aux = dict(re.findall(r"AUX FIELD ([\w-]+) = '([^']*)'", output))
    return {
        "ok": ok,
        "keys": counts.get("keys read"),
        "expires": counts.get("expires"),
        "already_expired": counts.get("already expired"),
        "redis_ver": aux.get("redis-ver"),
        "error": error,
        "exit_status": exit_status,
    }


def run_check_rdb(path: str | Path, *, binary: str | None, timeout: float = 900.0) -> dict[str, Any]:
    """Run redis-check-rdb when it is installed; `available: false` says it was not."""
    if binary is None:
        return {"available": False, "ok": None, "error": None}
    try:
        proc = subprocess.run(
            [binary, str(path)], capture_output=True, text=True, errors="replace", timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"available": True, "binary": binary, "ok": False, "error": f"redis-check-rdb ran over {timeout:g}s"}
    except OSError as exc:
        return {"available": True, "binary": binary, "ok": None, "error": f"cannot run {binary}: {exc}"}
    output = proc.stdout + proc.stderr
    return {
        "available": True,
        "binary": binary,
        **parse_check_rdb(output, proc.returncode),
        "output_tail": "\n".join(output.strip().splitlines()[-12:]),
    }


# -- the replication stream -----------------------------------------------------------------------
def encode_command(*args: str | bytes) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class ReplicationStream:
    """Buffered reads over any `recv(n) -> bytes` (a socket, or canned chunks in tests)."""

    def __init__(self, recv: Callable[[int], bytes]):
        self._recv = recv
        self._buffer = bytearray()
        self.keepalives = 0

    def _fill(self) -> None:
        data = self._recv(READ_CHUNK)
        if not data:
            raise RdbError("the server closed the connection")
        self._buffer += data

    def line(self) -> bytes:
        """One reply line without its line ending (a bare newline, the master's keepalive, gives b"")."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end]).rstrip(b"\r")
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > 64 * 1024:
                raise RdbError("no line ending in the first 64 KiB: not a Redis server?")
            self._fill()

    def reply(self) -> bytes:
        """A one-line reply (`+OK`, `-ERR ...`), skipping keepalive newlines."""
        while True:
            line = self.line()
            if line:
                return line
            self.keepalives += 1

    def preamble(self) -> dict[str, Any]:
        """Everything before the payload: keepalives, `+FULLRESYNC <replid> <offset>`, then `$<len>` or `$EOF:`."""
        out: dict[str, Any] = {"replid": None, "offset": None}
        while True:
            line = self.reply()
            if line.startswith(b"+FULLRESYNC"):
                parts = line.split()
                if len(parts) >= 3:
                    out["replid"] = parts[1].decode("ascii", "replace")
                    out["offset"] = int(parts[2]) if parts[2].isdigit() else None
                continue
            if line.startswith(b"-"):
                raise RdbError(f"the server refused the sync: {line[1:].decode('utf-8', 'replace')}")
            if line.startswith(b"$EOF:"):
                mark = line[5:]
                if len(mark) != EOF_MARK_BYTES:
                    raise RdbError(f"bad diskless EOF mark of {len(mark)} bytes")
                return {**out, "mode": "diskless", "mark": mark, "length": None}
            if line.startswith(b"$") and line[1:].isdigit():
                return {**out, "mode": "disk", "mark": None, "length": int(line[1:])}
            if line.startswith(b"+"):
                continue  # e.g. +CONTINUE would be a partial resync: we asked for a full one, so never expected
            raise RdbError(f"unexpected reply before the RDB payload: {line[:80]!r}")

    def copy_payload(self, head: dict[str, Any], sink: Callable[[bytes], None]) -> int:
        """Stream the payload to `sink`; returns its size. The diskless end mark is not part of it."""
        if head["length"] is not None:
            remaining = head["length"]
            while remaining:
                if not self._buffer:
                    self._fill()
                take = bytes(self._buffer[:remaining])
                del self._buffer[: len(take)]
                sink(take)
                remaining -= len(take)
            return head["length"]
        mark: bytes = head["mark"]
        total = 0
        while True:
            found = self._buffer.find(mark)
            if found >= 0:
                sink(bytes(self._buffer[:found]))
                total += found
                del self._buffer[: found + len(mark)]
                return total
            keep = len(mark) - 1  # the mark may straddle two reads: hold back its possible start
            if len(self._buffer) > keep:
                cut = len(self._buffer) - keep
                sink(bytes(self._buffer[:cut]))
                total += cut
                del self._buffer[:cut]
            self._fill()


def write_atomically(directory: Path, name: str, fill: Callable[[IO[bytes]], Any]) -> tuple[Path, Any]:
    """Write `directory/name` through a new temp file with an unpredictable name (O_EXCL | O_NOFOLLOW),
    fsync it, and publish it under `name` only if nothing has that name: never replaces a file."""
    final = directory / name
    with Directory.open(directory, create=True) as folder:
        if folder.lstat(name) is not None:
            raise RdbError(f"{final} already exists: a backup is never overwritten")
        tmp, fh = folder.create_temp(name, "part")
        try:
            with fh:
                result = fill(fh)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                folder.publish_new(tmp, name)
            except FileExistsError:
                raise RdbError(f"{final} appeared while downloading: a backup is never overwritten") from None
        except BaseException:
            folder.unlink(tmp)
            raise
    return final, result
