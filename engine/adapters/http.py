"""HTTP health probes (the SomaBrain API) with a timeout on every call and the dry-run guard."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from engine.errors import MutationRefused, TargetError
from engine.spec.model import Effect

MAX_BODY = 16 * 1024 * 1024  # a health endpoint's reply; a hostile server's endless body stops here


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
    if not allow_mutation and effect is not Effect.READ:
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
