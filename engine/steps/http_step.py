"""`http:` steps: a health probe (GET) or a call (POST ...) against the target's HTTP base URL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.spec.model import Effect
from engine.spec.params import parse_duration
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.run.context import StepContext

SCHEMA = {
    "type": "object",
    "description": "An HTTP request; result: {status, ok, json, text, elapsed_ms}.",
    "additionalProperties": False,
    "properties": {
        "url": {"type": "string", "description": "Absolute URL."},
        "path": {"type": "string", "description": "Path under the target's http.base_url (default: its health path)."},
        "method": {"type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"], "default": "GET"},
        "json": {"description": "JSON body."},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "timeout": {"type": ["string", "number"], "format": "duration"},
    },
}


def static_effect(body: dict[str, Any]) -> Effect | None:
    return Effect.READ if body.get("method", "GET").upper() in ("GET", "HEAD") else Effect.WRITE


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    endpoint = ctx.connections.target.http
    url = body.get("url")
    if url is None:
        if endpoint is None:
            raise UsageError(f"target '{ctx.connections.target.name}' has no http endpoint")
        url = endpoint.base_url + (body.get("path") or endpoint.health_path)
    method = body.get("method", "GET").upper()
    effect = max(static_effect(body) or Effect.WRITE, ctx.step.effect or Effect.READ)
    timeout = parse_duration(body.get("timeout") or (endpoint.timeout if endpoint else 5.0))

    def execute() -> dict[str, Any]:
        return ctx.connections.http().request(
            method, url, timeout=timeout, effect=effect, json_body=body.get("json"), headers=body.get("headers")
        )

    return Action(
        effect,
        url,
        f"{method} {url}",
        execute,
        failed=lambda r: None if r["status"] < 500 else f"HTTP {r['status']}",
        output=lambda r: r["text"] or None,
    )


class HttpKind(StepKind):
    name = "http"
    schema = SCHEMA
    description = "An HTTP probe with a timeout (the SomaBrain health endpoint)."
    number_fields = {"timeout": "duration"}

    plan = staticmethod(plan)
    static_effect = staticmethod(static_effect)

    def summary(self, body: Any) -> str:
        return f"{body.get('method', 'GET')} {body.get('url') or body.get('path') or '<health>'}"


register(HttpKind())
