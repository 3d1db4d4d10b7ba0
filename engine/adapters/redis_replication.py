"""The replication socket: a full sync (PSYNC ? -1) read as `redis-cli --rdb` does.

Only the Redis adapter opens it (`RedisAdapter.full_sync`, which enforces the dry-run first): the
server forks and sends a point-in-time snapshot; nothing in its dataset changes. The stream's format
is parsed by engine/backup/rdb.py.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
from collections.abc import Callable
from typing import IO, Any

from engine.backup.rdb import HEADER_BYTES, RdbError, ReplicationStream, encode_command, parse_header


def download(
    *,
    host: str,
    port: int,
    out: IO[bytes],
    password: str | None = None,
    username: str | None = None,
    tls: bool = False,
    tls_context: ssl.SSLContext | None = None,
    server_name: str | None = None,
    timeout: float = 30.0,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Ask the server for a full sync and write the RDB to `out`. Returns size, sha256, mode, offset."""
    started = time.monotonic()
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise RdbError(f"cannot connect to {host}:{port}: {exc}") from None
    sock: socket.socket = raw
    try:
        if tls:
            context = tls_context or ssl.create_default_context()
            sock = context.wrap_socket(raw, server_hostname=server_name or host)
        sock.settimeout(timeout)  # per read: the master sends a newline every second while it prepares
        stream = ReplicationStream(sock.recv)

        def ask(*argv: str) -> bytes:
            sock.sendall(encode_command(*argv))
            return stream.reply()

        if password is not None:
            reply = ask("AUTH", username, password) if username else ask("AUTH", password)
            if not reply.startswith(b"+"):
                raise RdbError(f"authentication failed: {reply[1:].decode('utf-8', 'replace')}")
        reply = ask("REPLCONF", "capa", "eof", "capa", "psync2")  # diskless: nothing written on the server
        if reply.startswith(b"-"):
            raise RdbError(f"the server refused REPLCONF: {reply[1:].decode('utf-8', 'replace')}")
        ask("REPLCONF", "rdb-only", "1")  # 7.0+: no replication stream after the RDB; older servers say -ERR
        sock.sendall(encode_command("PSYNC", "?", "-1"))
        head = stream.preamble()
        digest = hashlib.sha256()
        first = bytearray()

        def sink(data: bytes) -> None:
            if len(first) < HEADER_BYTES:
                first.extend(data[: HEADER_BYTES - len(first)])
            digest.update(data)
            out.write(data)
            if on_progress:
                on_progress(len(data))

        size = stream.copy_payload(head, sink)
    except TimeoutError:
        raise RdbError(f"{host}:{port}: no data for {timeout:g}s") from None
    except (OSError, ssl.SSLError) as exc:
        raise RdbError(f"{host}:{port}: {exc}") from None
    finally:
        try:
            sock.close()
        except OSError:
            pass
    header = parse_header(bytes(first))
    if not header["magic_ok"]:
        raise RdbError(f"the server sent {size} bytes that are not an RDB (they start with {bytes(first[:5])!r})")
    return {
        "bytes": size,
        "sha256": digest.hexdigest(),
        "mode": head["mode"],
        "replid": head["replid"],
        "offset": head["offset"],
        "version": header["version"],
        "keepalives": stream.keepalives,
        "seconds": round(time.monotonic() - started, 3),
    }
