"""A stand-in for SomaBrain's /health endpoint: what runbooks check is whether the API can reach Redis."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HealthServer:
    """GET /health answers 200 {"status": "ok", "redis": "ok"} while `redis_ok()` holds, else 503; other paths 404.

    `answer(status, body)` fixes what /health answers from then on (a SomaBrain that lost its own connection
    to Redis, a health route behind authentication), whatever Redis does."""

    def __init__(self, redis_ok: Callable[[], bool] = lambda: True, host: str = "127.0.0.1"):
        server = self
        self.fixed: tuple[int, dict[str, Any]] | None = None

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if server.fixed is not None and self.path == "/health":
                    status, reply = server.fixed
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(json.dumps(reply).encode())
                    return
                ok = redis_ok()
                body = json.dumps({"status": "ok" if ok else "degraded", "redis": "ok" if ok else "down"})
                self.send_response((200 if ok else 503) if self.path == "/health" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        # a short poll: stop() waits for the serving loop to notice, once per world a test builds
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def answer(self, status: int, body: dict[str, Any]) -> None:
        """From now on /health answers `status` with this JSON body."""
        self.fixed = (int(status), dict(body))

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HealthServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
