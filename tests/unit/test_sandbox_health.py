"""The SomaBrain /health stand-in: follows Redis, or answers what a fault fixed (engine.sandbox.health)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from engine.sandbox.health import HealthServer


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_follows_redis_until_an_answer_is_fixed_then_answers_that_whatever_redis_does():
    up = [True]
    with HealthServer(lambda: up[0]) as server:
        assert _get(server.base_url + "/health") == (200, {"status": "ok", "redis": "ok"})
        up[0] = False
        assert _get(server.base_url + "/health") == (503, {"status": "degraded", "redis": "down"})
        up[0] = True
        server.answer(200, {"status": "degraded", "redis": "down"})  # SomaBrain lost its own connection
        assert _get(server.base_url + "/health") == (200, {"status": "degraded", "redis": "down"})
        assert _get(server.base_url + "/other")[0] == 404  # only /health is fixed
