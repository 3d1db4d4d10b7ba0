"""Raw TCP from the engine: a connect probe and an unauthenticated inline PING, nothing else.

The one door to plain sockets for step kinds. It can send exactly one thing, `PING\\r\\n` (which
changes nothing on any server), so it has no mutation to refuse in a dry-run; a kind that needs more
than this goes through the protocol's own adapter (Redis, SSH, HTTP).
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any


def probe(host: str, port: int, timeout: float, ping: bool = False) -> dict[str, Any]:
    """One connect attempt; the error is named the way an operator reads it (refused, timed out, ...)."""
    started = time.monotonic()
    error = reply = None
    connected_ms = None
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            connected_ms = round((time.monotonic() - started) * 1000, 1)
            if ping:
                reply, error = _ping(sock, timeout)
    except TimeoutError:
        error = f"timed out after {timeout:g}s (a firewall dropping packets, or the host is down)"
    except ConnectionRefusedError:
        error = "connection refused (nothing listens on that port, or a firewall rejects it)"
    except socket.gaierror as exc:
        error = f"cannot resolve {host}: {exc.strerror or exc}"
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            error = f"no route to {host}: {exc.strerror}"
        else:
            error = exc.strerror or str(exc)
    return {
        "connected": connected_ms is not None,
        "error": error,
        "elapsed_ms": connected_ms if connected_ms is not None else round((time.monotonic() - started) * 1000, 1),
        "host": host,
        "port": port,
        "reply": reply,
    }


def _ping(sock: socket.socket, timeout: float) -> tuple[str | None, str | None]:
    """Send `PING\\r\\n`, read one line: (reply, None) or (None, why there is none)."""
    try:
        sock.sendall(b"PING\r\n")
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data and len(data) < 4096:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(4096)
            if not chunk:
                return None, "connected, but the server closed the connection without a reply"
            data += chunk
    except TimeoutError:
        return None, f"connected, but no reply to PING within {timeout:g}s (Redis hung or busy?)"
    except OSError as exc:
        return None, f"connected, but the PING failed: {exc.strerror or exc}"
    return data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace"), None
