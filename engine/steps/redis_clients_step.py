"""`redis_clients:` steps: find the connections a leaking client left idle, and disconnect them.

- `idle: {idle_min, limit}` (read): the candidate clients -> {total, matched, by_name, by_host, clients}.
- `kill_idle: {idle_min, max_clients}` (destructive): CLIENT KILL ID each candidate, one gate for all.

A candidate is what Redis's own `timeout` setting would reap: a normal client (CLIENT LIST TYPE normal:
no replica, master or pub/sub connection) that is not blocked (flag b: waiting on BLPOP & co. is work,
not a leak), not a MONITOR (flag O), not this run's own connection (its CLIENT ID is read in the same
pipeline as the list), and idle for at least `idle_min` seconds. The kill acts on exactly the clients
the measurement before the gate found, and spares any of them that sent a command since (it is in use
after all): the list is read again just before the kills. More candidates than `max_clients` and the
step is refused, nothing killed.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from engine.errors import ActionFailed, UsageError
from engine.parsers.redis_text import parse_client_list
from engine.spec.model import Effect
from engine.steps import Action, Done, Measured, StepKind, register

if TYPE_CHECKING:
    from engine.adapters.redis import RedisAdapter
    from engine.run.context import StepContext

NUMBER = {"type": ["integer", "string"]}
SCHEMA = {
    "type": "object",
    "description": "Idle client connections (leaks). Exactly one of: idle (read), kill_idle (destructive).",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {
        "idle": {
            "type": "object",
            "additionalProperties": False,
            "required": ["idle_min"],
            "description": (
                "Normal, unblocked clients idle >= idle_min s, not this run's"
                " -> {total, matched, by_name, by_host, oldest_idle, clients}."
            ),
            "properties": {
                "idle_min": {**NUMBER, "description": "Idle at least this many seconds."},
                "limit": {**NUMBER, "description": "Keep at most this many client rows (default 20)."},
            },
        },
        "kill_idle": {
            "type": "object",
            "additionalProperties": False,
            "required": ["idle_min", "max_clients"],
            "description": "CLIENT KILL ID each idle client found as `idle` finds them -> {killed, spared, gone, ids}.",
            "properties": {
                "idle_min": {**NUMBER, "description": "Idle at least this many seconds."},
                "max_clients": {**NUMBER, "description": "More candidates than this: refused, nothing killed."},
            },
        },
    },
}

_KEEP = ("id", "addr", "name", "age", "idle", "flags", "cmd", "user", "lib-name")


def _int(value: Any, name: str, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"redis_clients: {name} must be a whole number, got '{value}'") from None
    if number < minimum:
        raise UsageError(f"redis_clients: {name} must be >= {minimum}, got {number}")
    return number


def idle_candidates(clients: list[dict[str, Any]], idle_min: int, own_id: int | None) -> list[dict[str, Any]]:
    """The clients Redis's `timeout` would reap at `idle_min`: normal, unblocked, no MONITOR, not ours."""
    out = []
    for client in clients:
        flags = str(client.get("flags", ""))
        if any(f in flags for f in "SMPbO"):  # replica, master, pub/sub, blocked, MONITOR
            continue
        if own_id is not None and client.get("id") == own_id:
            continue
        if int(client.get("idle", 0)) < idle_min:
            continue
        out.append(client)
    return out


def describe(candidates: list[dict[str, Any]], total: int, limit: int) -> dict[str, Any]:
    by_name = Counter(str(c.get("name") or "(no name)") for c in candidates)
    by_host = Counter(str(c.get("addr", "?")).rsplit(":", 1)[0] for c in candidates)
    return {
        "total": total,
        "matched": len(candidates),
        "by_name": dict(by_name.most_common(10)),
        "by_host": dict(by_host.most_common(10)),
        "oldest_idle": max((int(c.get("idle", 0)) for c in candidates), default=0),
        "clients": [{k: c.get(k) for k in _KEEP if k in c} for c in candidates[:limit]],
    }


def _read(adapter: RedisAdapter) -> tuple[int | None, list[dict[str, Any]]]:
    """This connection's id and the normal clients, in one pipeline (so on one connection)."""
    own, listing = adapter.pipeline_calls([["CLIENT", "ID"], ["CLIENT", "LIST", "TYPE", "normal"]])
    for reply in (own, listing):
        if isinstance(reply, BaseException):
            raise ActionFailed(f"CLIENT ID / CLIENT LIST: {reply}")
    return int(own), parse_client_list(listing)


def summary(body: dict[str, Any]) -> str:
    ((op, spec),) = body.items()
    if op == "idle":
        return f"CLIENT LIST TYPE normal (idle >= {spec.get('idle_min')}s, not blocked, not this run)"
    return (
        f"CLIENT LIST TYPE normal | CLIENT KILL ID <id> per client idle >= {spec.get('idle_min')}s "
        f"(max {spec.get('max_clients')})"
    )


def static_effect(body: dict[str, Any]) -> Effect:
    ((op, _),) = body.items()
    return Effect.READ if op == "idle" else Effect.DESTRUCTIVE


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    ((op, spec),) = body.items()
    adapter: RedisAdapter = ctx.connections.redis()
    where = adapter.endpoint.url
    idle_min = _int(spec.get("idle_min"), "idle_min", 0)
    if op == "idle":
        limit = _int(spec.get("limit", 20), "limit", 1)

        def read() -> dict[str, Any]:
            own, clients = _read(adapter)
            return describe(idle_candidates(clients, idle_min, own), len(clients), limit)

        return Action(Effect.READ, where, summary(body), read)

    cap = _int(spec.get("max_clients"), "max_clients", 1)

    def measure() -> Measured:
        own, clients = _read(adapter)
        found = idle_candidates(clients, idle_min, own)
        seen = describe(found, len(clients), 10)
        blast = {
            "idle_clients": len(found),
            "of_clients": len(clients),
            "idle_min": idle_min,
            "max_clients": cap,
            "by_name": seen["by_name"],
            "by_host": seen["by_host"],
            "examples": [
                f"id={c.get('id')} {c.get('addr')} {c.get('name') or '(no name)'} idle {c.get('idle')}s"
                for c in found[:5]
            ],
        }
        if len(found) > cap:
            blast["over_max_clients"] = True
        return Measured(blast, approved=tuple(int(c["id"]) for c in found))  # the clients the gate shows

    def apply(measured: Measured) -> Done:
        """Kill the approved clients that are still idle; one active again is in use and spared."""
        approved = measured.approved
        if len(approved) > cap:
            raise ActionFailed(
                f"{len(approved)} idle clients, more than max_clients={cap}: refused, nothing killed. "
                "Check who they are (by_name, by_host), then raise max_clients"
            )
        own, clients = _read(adapter)
        still_idle = {int(c["id"]) for c in idle_candidates(clients, idle_min, own)}
        present = {int(c["id"]) for c in clients}
        targets = [i for i in approved if i in still_idle]
        replies = adapter.pipeline_calls([["CLIENT", "KILL", "ID", i] for i in targets]) if targets else []
        killed = [i for i, r in zip(targets, replies, strict=True) if r == 1 or r is True]
        spared = [i for i in approved if i in present and i not in still_idle]  # active again: in use
        result = {
            "killed": len(killed),
            "spared": len(spared),
            "gone": len(approved) - len(killed) - len(spared),  # disconnected by themselves meanwhile
            "ids": killed[:100],
        }
        return Done(result)

    def predict(measured: Measured | None) -> dict[str, Any]:
        blast = measured or Measured()
        if blast.get("over_max_clients"):
            return {"killed": 0, "spared": 0, "gone": 0, "ids": []}
        return {"killed": blast.get("idle_clients", 0), "spared": 0, "gone": 0, "ids": list(blast.approved[:100])}

    def changes(measured: Measured | None, result: Any) -> list[dict[str, Any]]:
        blast = measured or Measured()
        if result is None:  # a dry-run's prediction
            result = predict(measured)
        if not result["killed"]:
            return []
        return [
            {
                "kind": "clients_killed",
                "count": result["killed"],
                "ids": result["ids"][:20],
                "by_name": blast.get("by_name", {}),
            }
        ]

    return Action(
        Effect.DESTRUCTIVE,
        where,
        summary(body),
        lambda: apply(measure()).result,  # not measured before: measure now, act on that
        measure=measure,
        changes=changes,
        predict=predict,
        apply=apply,
    )


class RedisClientsKind(StepKind):
    name = "redis_clients"
    schema = SCHEMA
    description = "Idle (leaked) client connections: list them, or CLIENT KILL ID each behind one gate."

    plan = staticmethod(plan)
    static_effect = staticmethod(static_effect)
    summary = staticmethod(summary)


register(RedisClientsKind())
