"""HTTP health probes (the SomaBrain API) with a timeout on every call and the dry-run guard.

The one door to HTTP: `HttpAdapter` carries the run's mutation policy, and `request` refuses in a
dry-run, before anything is sent, a request whose effect is not a read or whose method is not GET or
HEAD (whatever a caller claims).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from engine.errors import MutationRefused, TargetError
from engine.spec.model import Effect

MAX_BODY = 16 * 1024 * 1024  # a health endpoint's reply; a hostile server's endless body stops here
SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class HttpAdapter:
    """HTTP with the run's mutation policy: a step kind never passes the policy itself."""

    allow_mutation: bool

    def request(
        self,
        method: str,
        url: str,
        *,
        timeout: float,
        effect: Effect,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        return request(
            method,
            url,
            timeout=timeout,
            effect=effect,
            allow_mutation=self.allow_mutation,
            json_body=json_body,
            headers=headers,
        )


def request(
    method: str,
    url: str,
    *,
    timeout: float,
    effect: Effect,
    allow_mutation: bool,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    if not allow_mutation and (effect is not Effect.READ or method.upper() not in SAFE_METHODS):
        raise MutationRefused(f"dry-run: refused to send {method} {url}")
    data = json.dumps(json_body).encode() if json_body is not None else None
    req = urllib.request.Request(url, data=data, method=method.upper(), headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, body = resp.status, resp.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(MAX_BODY + 1)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TargetError(f"{method.upper()} {url}: {reason}") from None
    truncated = len(body) > MAX_BODY
    text = body[:MAX_BODY].decode("utf-8", "replace")
    try:
        parsed = json.loads(text) if text.strip() and not truncated else None
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes: kept as text
        parsed = None
    return {
        "status": status,
        "ok": 200 <= status < 300,
        "json": parsed,
        "text": text[:4096],
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
    }
