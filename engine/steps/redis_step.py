"""`redis:` steps: one raw command, or a helper that returns data (INFO, CONFIG GET, SCAN, key checks)."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from engine.errors import ActionFailed, UsageError
from engine.spec.model import Effect
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.adapters.redis import RedisAdapter
    from engine.errors import SourceError
    from engine.run.context import StepContext
    from engine.spec.kinds import CheckContext
    from engine.spec.yamlsource import Located

OPERATIONS = ("command", "info", "config_get", "scan", "keys", "keyinfo")
ON = ("primary", "replicas", "all", "each primary", "node", "sentinel")
MULTI_NODE = frozenset({"replicas", "all", "each primary"})

SCHEMA = {
    "type": "object",
    "description": "A Redis call. Exactly one of: command, info, config_get, scan, keys, keyinfo; "
    "optionally `on:` (which nodes of the deployment) and `node:` (with on: node; without `on:`, the one node "
    "the step runs on, its result in the usual shape).",
    "additionalProperties": False,
    "minProperties": 1,
    "operations": list(OPERATIONS),
    "oneOf": [{"required": [op]} for op in OPERATIONS],
    "properties": {
        "on": {
            "enum": list(ON),
            "description": "Where it runs: primary (a cluster: each shard's primary for a non-key command), "
            "replicas, all, each primary, node (named by `node:`), or sentinel (one that answered at run start). "
            "The result is then per node: a list of "
            "{node, role, outcome, result, error}. Reads fan out in parallel; a write to several nodes runs "
            "once per node, in order, each gated with its own blast radius.",
        },
        "node": {
            "type": "string",
            "description": "HOST:PORT of one node of the deployment (a template). With on: node the result is "
            "per node; without `on:` the step runs on that node alone and keeps its usual result (an empty "
            "value: where the target points).",
        },
        "command": {
            "type": "array",
            "minItems": 1,
            "items": {"type": ["string", "number"]},
            "description": "Any Redis command as an argument list; its effect comes from the server.",
        },
        "info": {"type": ["string", "null"], "description": "INFO section (null: all) -> dict."},
        "config_get": {"type": "string", "description": "CONFIG GET pattern -> dict."},
        "scan": {
            "description": "Key names matching a pattern (SCAN, COUNT >= 1000).",
            "type": "object",
            "additionalProperties": False,
            "required": ["match"],
            "properties": {
                "match": {"type": "string"},
                "count": {"type": ["integer", "string"], "description": "SCAN COUNT hint, at least 1000."},
                "type": {"type": "string", "enum": ["string", "hash", "list", "set", "zset", "stream"]},
                "limit": {"type": ["integer", "string"], "description": "Stop after this many keys."},
            },
        },
        "keys": {
            "description": "Pipelined per-key checks (ttl, type, memory) over a SCAN -> list of dicts.",
            "type": "object",
            "additionalProperties": False,
            "required": ["match"],
            "properties": {
                "match": {"type": "string"},
                "count": {"type": ["integer", "string"]},
                "checks": {
                    "type": "array",
                    "items": {"enum": ["ttl", "type", "memory", "freq"]},
                    "uniqueItems": True,
                    "description": "freq: OBJECT FREQ (the LFU counter; needs an LFU maxmemory-policy, else null).",
                },
                "limit": {"type": ["integer", "string"]},
            },
        },
        "keyinfo": {
            "type": ["array", "string"],
            "items": {"type": "string"},
            "description": "Named keys -> list of {key, exists, type, ttl, memory, length}.",
        },
    },
}

_TYPE_LENGTH = {"string": "STRLEN", "hash": "HLEN", "list": "LLEN", "set": "SCARD", "zset": "ZCARD", "stream": "XLEN"}
_TTL_COMMANDS = {"expire": 1, "pexpire": 0.001, "expireat": None, "pexpireat": None, "persist": None}


def _op(body: dict[str, Any]) -> tuple[str, Any]:
    ((name, value),) = ((k, v) for k, v in body.items() if k not in ("on", "node"))
    return name, value


def static_effect(body: dict[str, Any]) -> Effect | None:
    """Without a server: helpers read; a raw command's effect is the bundled command table's to say (None:
    a command it does not know, which the server decides)."""
    if isinstance(body, dict) and body.get("command"):
        from engine.adapters.redis_effects import classify

        return classify(list(body["command"]), bundled_table())
    return Effect.READ


def minimum_effect(body: dict[str, Any]) -> Effect | None:
    """The least a raw command with templated arguments can do, its name (and subcommand) being literal:
    the weakest of its effects with each templated argument rendered to a harmless probe ("1", "x")."""
    if not (isinstance(body, dict) and isinstance(body.get("command"), list) and body["command"]):
        return None
    from engine.adapters.redis_effects import classify, command_name

    argv = [str(a) for a in body["command"]]
    table = bundled_table()
    name_parts = 2 if "|" in command_name(argv, table) else 1  # CONFIG SET: the subcommand is part of the name
    if any(_templated(a) for a in argv[:name_parts]):
        return None  # the command itself is decided by a value
    probes = ([probe if _templated(a) else a for a in argv] for probe in ("1", "x"))
    return min(classify(rendered, table) for rendered in probes)


def _templated(arg: str) -> bool:
    return "{{" in arg or "{%" in arg


def summary(body: dict[str, Any]) -> str:
    if "on" in body:
        where = f"{body['on']} {body['node']}" if body.get("node") else body["on"]
        return f"{summary({k: v for k, v in body.items() if k not in ('on', 'node')})} (on {where})"
    if body.get("node"):
        return f"{summary({k: v for k, v in body.items() if k != 'node'})} (on node {body['node']})"
    op, value = _op(body)
    if op == "command":
        return _display([_arg(a) for a in value])
    if op == "info":
        return f"INFO {value or ''}".strip()
    if op == "config_get":
        return f"CONFIG GET {value}"
    if op in ("scan", "keys"):
        checks = f" [{', '.join(value.get('checks', ['ttl', 'type']))}]" if op == "keys" else ""
        return f"SCAN MATCH {value['match']}{checks}"
    return "key info " + (value if isinstance(value, str) else " ".join(map(str, value)))


def _display(argv: list[Any]) -> str:
    return " ".join(shlex.quote(str(a)) if str(a) else "''" for a in argv)


def plan(body: dict[str, Any], ctx: StepContext) -> Action:
    if "on" in body:
        return _plan_on_nodes(body, ctx)
    if body.get("node"):  # one named node, the result in its usual shape (a snapshot on a chosen replica)
        deployment = ctx.connections.redis()
        (node,) = deployment.nodes_for("node", str(body["node"]))
        inner = {k: v for k, v in body.items() if k != "node"}
        return _plan_on(inner, ctx, deployment.node_adapter(node.address))
    return _plan_on({k: v for k, v in body.items() if k != "node"}, ctx, ctx.connections.redis())


def _plan_on(body: dict[str, Any], ctx: StepContext, adapter: RedisAdapter) -> Action:
    op, value = _op(body)
    where = adapter.endpoint.url
    if op == "command":
        return _plan_command([_arg(a) for a in value], adapter, ctx, where)
    if op == "info":
        return Action(Effect.READ, where, summary(body), lambda: adapter.info(value))
    if op == "config_get":
        return Action(Effect.READ, where, summary(body), lambda: _mask_config(adapter.config_get(value)))
    if op == "scan":
        return Action(Effect.READ, where, summary(body), lambda: _scan(adapter, value, ctx))
    if op == "keys":
        return Action(Effect.READ, where, summary(body), lambda: _keycheck(adapter, value, ctx))
    keys = [value] if isinstance(value, str) else list(value)
    return Action(Effect.READ, where, summary(body), lambda: key_info(adapter, keys))


def _arg(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _plan_command(argv: list[str], adapter: RedisAdapter, ctx: StepContext, where: str) -> Action:
    adapter.check_step_command(argv)  # SELECT, MULTI, ...: literal ones fail validate, templated ones here
    effect = adapter.effect_of(argv)
    name = argv[0].lower()
    sub = argv[1].lower() if len(argv) > 1 else ""

    def execute() -> Any:
        return adapter.call(argv)

    def measure() -> dict[str, Any]:
        return blast_radius(adapter, argv)

    def changes(blast: dict[str, Any] | None, result: Any) -> list[dict[str, Any]]:
        return describe_changes(argv, blast or {}, result)

    def predict(blast: dict[str, Any] | None) -> Any:
        if name in ("del", "unlink") and blast:
            return sum(1 for k in blast.get("keys", []) if k.get("exists"))
        if name == "config" and sub == "set":
            return "OK"
        return None

    return Action(
        effect,
        where,
        _display(ctx.redactor.argv(argv)),
        execute,
        measure=measure if effect is not Effect.READ else None,
        changes=changes,
        predict=predict,
    )


def blast_radius(adapter: RedisAdapter, argv: list[str]) -> dict[str, Any]:
    """What the command would touch, measured with reads from the live server."""
    name, sub = argv[0].lower(), (argv[1].lower() if len(argv) > 1 else "")
    if name == "config" and sub == "set":
        pairs: dict[str, dict[str, Any]] = {}
        for param, new in zip(argv[2::2], argv[3::2], strict=False):
            current = adapter.config_get(param).get(param.lower())
            pairs[param.lower()] = {"current": current, "new": new}
        return {"config": _mask_config_pairs(pairs)}
    if name in ("flushdb", "flushall"):
        memory = adapter.info("memory")
        keyspace = adapter.info("keyspace")
        dbsize = adapter.call(["DBSIZE"])
        total = sum(v.get("keys", 0) for v in keyspace.values() if isinstance(v, dict))
        return {
            "keys": dbsize if name == "flushdb" else total,
            "used_memory": memory.get("used_memory"),
            "used_memory_human": memory.get("used_memory_human"),
            "keyspace": keyspace,
        }
    from engine.transcript.redact import Redactor

    if Redactor().argv(argv) != argv:  # a credential in the arguments: never echo them back to the server
        return {"command": argv[0].upper()}
    keys = command_keys(adapter, argv)
    if not keys:
        return {"command": argv[0].upper()}
    sample = keys[:20]
    info = key_info(adapter, sample)
    out: dict[str, Any] = {"keys": info, "key_count": len(keys)}
    if name in _TTL_COMMANDS:
        out["ttl_new"] = None if name == "persist" else argv[2] if len(argv) > 2 else None
    return out


def command_keys(adapter: RedisAdapter, argv: list[str]) -> list[str]:
    """The keys a command touches, as the server itself extracts them (COMMAND GETKEYS)."""
    try:
        return [str(k) for k in adapter.command_keys(argv)]
    except ActionFailed:  # a command without keys
        return []


def key_info(adapter: RedisAdapter, keys: list[str]) -> list[dict[str, Any]]:
    """Type, TTL, memory and length of each key in two pipelined round trips."""
    if not keys:
        return []
    first = adapter.pipeline_calls([c for k in keys for c in (["TYPE", k], ["PTTL", k], ["MEMORY", "USAGE", k])])
    out: list[dict[str, Any]] = []
    second: list[tuple[int, list[str]]] = []
    for i, key in enumerate(keys):
        kind, pttl, memory = first[3 * i : 3 * i + 3]
        if isinstance(kind, BaseException):  # MOVED on a cluster, NOPERM, ...: unknown, not "missing"
            from engine.common_errors import error_text

            out.append(
                {
                    "key": key,
                    "exists": None,
                    "type": None,
                    "ttl": None,
                    "memory": None,
                    "length": None,
                    "error": error_text(kind),
                }
            )
            continue
        exists = kind != "none"
        ttl = None if not exists else (-1 if pttl == -1 else round(pttl / 1000, 3) if isinstance(pttl, int) else None)
        row: dict[str, Any] = {
            "key": key,
            "exists": exists,
            "type": kind if exists else None,
            "ttl": ttl,
            "memory": memory if isinstance(memory, int) else None,
            "length": None,
        }
        out.append(row)
        if exists and kind in _TYPE_LENGTH:
            second.append((len(out) - 1, [_TYPE_LENGTH[kind], key]))
    if second:
        lengths = adapter.pipeline_calls([argv for _, argv in second])
        for (index, _), length in zip(second, lengths, strict=True):
            out[index]["length"] = length if isinstance(length, int) else None
    return out


def describe_changes(argv: list[str], blast: dict[str, Any], result: Any) -> list[dict[str, Any]]:
    """What changed (or would), in the transcript's change vocabulary, for timelines and post-mortems."""
    name, sub = argv[0].lower(), (argv[1].lower() if len(argv) > 1 else "")
    if name == "config" and sub == "set":
        return [
            {"kind": "config", "name": param, "before": v.get("current"), "after": v.get("new")}
            for param, v in blast.get("config", {}).items()
        ]
    if name in ("flushdb", "flushall"):
        return [{"kind": "keys_removed", "count": blast.get("keys"), "keys": [], "scope": name.upper()}]
    existing = [k for k in blast.get("keys", []) if k.get("exists")]
    if name in ("del", "unlink", "getdel"):
        count = result if isinstance(result, int) else len(existing)
        return [{"kind": "keys_removed", "count": count, "keys": [k["key"] for k in existing]}]
    if name in _TTL_COMMANDS:
        return [
            {
                "kind": "ttl_set",
                "count": len(existing),
                "keys": [k["key"] for k in existing],
                "ttl_before": [k.get("ttl") for k in existing],
                "ttl_after": blast.get("ttl_new"),
            }
        ]
    if blast.get("keys"):
        return [
            {
                "kind": "keys_written",
                "count": blast.get("key_count"),
                "keys": [k["key"] for k in blast["keys"]],
                "command": argv[0].upper(),
            }
        ]
    return [{"kind": "command", "command": argv[0].upper() + (f" {argv[1].upper()}" if sub else "")}]


def _mask_config(values: dict[str, Any]) -> dict[str, Any]:
    """CONFIG GET answers with the live password: never let it into a result."""
    return {k: ("[SECRET:redis-credential]" if k in _CREDENTIAL_CONFIG and v else v) for k, v in values.items()}


def _mask_config_pairs(pairs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        k: ({kk: ("[SECRET:redis-credential]" if vv else vv) for kk, vv in v.items()} if k in _CREDENTIAL_CONFIG else v)
        for k, v in pairs.items()
    }


_CREDENTIAL_CONFIG = frozenset({"requirepass", "masterauth", "tls-key-file-pass", "tls-client-key-file-pass"})


def _count(value: Any, default: int, minimum: int = 1) -> int:
    try:
        return max(int(value), minimum) if value is not None else default
    except (TypeError, ValueError):
        raise UsageError(f"expected a whole number, got '{value}'") from None


def _scan(adapter: RedisAdapter, spec: dict[str, Any], ctx: StepContext) -> list[str]:
    limit = _count(spec.get("limit"), 100_000)
    found: list[str] = []
    with ctx.progress(f"SCAN {spec['match']}") as progress:
        for page in adapter.scan(spec["match"], _count(spec.get("count"), 1000, 1000), spec.get("type")):
            found.extend(page[: limit - len(found)])
            progress.advance(len(page))
            if len(found) >= limit:
                break
    return found


def _keycheck(adapter: RedisAdapter, spec: dict[str, Any], ctx: StepContext) -> list[dict[str, Any]]:
    """One pipeline per SCAN page: a keyspace of any size costs one round trip per thousand keys."""
    checks = spec.get("checks") or ["ttl", "type"]
    limit = _count(spec.get("limit"), 100_000)
    per_key = [c for c in ("type", "ttl", "memory", "freq") if c in checks]
    calls = {
        "type": lambda k: ["TYPE", k],
        "ttl": lambda k: ["TTL", k],
        "memory": lambda k: ["MEMORY", "USAGE", k],
        "freq": lambda k: ["OBJECT", "FREQ", k],
    }
    out: list[dict[str, Any]] = []
    with ctx.progress(f"SCAN {spec['match']} [{', '.join(per_key)}]") as progress:
        for page in adapter.scan(spec["match"], _count(spec.get("count"), 1000, 1000)):
            replies = adapter.pipeline_calls([calls[c](k) for k in page for c in per_key])
            for i, key in enumerate(page):
                row: dict[str, Any] = {"key": key}
                for j, check in enumerate(per_key):
                    reply = replies[i * len(per_key) + j]
                    row[check] = None if isinstance(reply, Exception) else reply
                if row.get("type") == "none" or row.get("ttl") == -2:
                    continue  # expired or deleted between SCAN and the check
                out.append(row)
            progress.advance(len(page))
            if len(out) >= limit:
                return out[:limit]
    return out


def _node_row(node: Any, outcome: str, result: Any = None, error: str | None = None) -> dict[str, Any]:
    return {"node": node.address, "role": node.role, "outcome": outcome, "result": result, "error": error}


def _plan_on_nodes(body: dict[str, Any], ctx: StepContext) -> Action:
    """`on:` — the nodes it names; a read fans out (bounded, parallel), a write runs on the node of this
    iteration (the runner runs a write on several nodes once per node, see `per_node`)."""
    deployment = ctx.connections.redis()
    where_on = body["on"]
    current = ctx.values.get("node") if isinstance(ctx.values.get("node"), dict) else None
    inner = {k: v for k, v in body.items() if k not in ("on", "node")}
    if current is not None and where_on not in ("node", "sentinel"):  # one run of a change on several nodes
        nodes = deployment.nodes_for("node", current.get("address"))
    else:
        nodes = deployment.nodes_for(where_on, body.get("node"))
    if not nodes:
        names = {"replicas": "no replicas"}.get(where_on, f"no node for on: {where_on}")
        return Action(Effect.READ, f"on: {where_on}", summary(inner), lambda: [], output=lambda r: names)
    first = _plan_on_first_answering(inner, ctx, deployment, nodes)
    where = ", ".join(n.address for n in nodes)
    if first.effect is not Effect.READ:
        if len(nodes) > 1:
            raise UsageError(
                f"on: {where_on} names {len(nodes)} nodes for a change: the runner runs it once per node; "
                "it cannot be inside a foreach"
            )
        node = nodes[0]
        changes, predict = first.changes, first.predict
        return Action(
            first.effect,
            f"{node.address} ({node.role})",
            first.command,
            lambda: [_node_row(node, "ok", first.execute())],
            measure=first.measure,
            changes=(lambda measured, rows: changes(measured, rows[0]["result"] if rows else None))
            if changes
            else None,
            predict=(lambda measured: [_node_row(node, "predicted", predict(measured) if predict else None)]),
        )

    def execute() -> list[dict[str, Any]]:
        from engine.common_errors import error_text

        rows = []
        for node, got in deployment.fan_out(nodes, lambda adapter: _plan_on(inner, ctx, adapter).execute()):
            if isinstance(got, BaseException):
                rows.append(_node_row(node, "error", None, error_text(got)))
            else:
                rows.append(_node_row(node, "ok", got))
        return rows

    def failed(rows: Any) -> str | None:
        if rows and all(r["outcome"] == "error" for r in rows):
            return "; ".join(f"{r['node']}: {r['error']}" for r in rows)
        return None

    return Action(Effect.READ, where, first.command, execute, failed=failed)


def _plan_on_first_answering(inner: dict[str, Any], ctx: StepContext, deployment: Any, nodes: list[Any]) -> Action:
    """Plan on the first node that answers (classifying a command asks the server): a dead node first in
    the list (a failed cluster primary) is then one error row of the fan-out, not the step's error."""
    first_error: Exception | None = None
    for node in nodes:
        try:
            return _plan_on(inner, ctx, deployment.node_adapter(node.address))
        except Exception as exc:  # the same error on every node (a bad command) is raised below
            first_error = first_error or exc
            if len(nodes) == 1:
                raise
    assert first_error is not None
    raise first_error


def per_node(body: Any, ctx: StepContext) -> list[dict[str, Any]] | None:
    """A write on several nodes: the nodes, in order, for the runner to run the step once on each."""
    if not isinstance(body, dict) or body.get("on") not in MULTI_NODE | {"primary"}:
        return None
    deployment = ctx.connections.redis()
    nodes = deployment.nodes_for(body["on"])
    if not nodes or (len(nodes) < 2 and body["on"] == "primary"):
        return None  # nothing to run on, or one primary: the step runs once
    inner = {k: v for k, v in body.items() if k not in ("on", "node")}
    op, value = _op(inner)
    if op != "command":
        return None
    if deployment.node_adapter(nodes[0].address).effect_of([_arg(a) for a in value]) is Effect.READ:
        return None
    return [{"address": n.address, "role": n.role} for n in nodes]


def connection_state_errors(located: Located, path: tuple[Any, ...], body: Any) -> list[SourceError]:
    """SELECT, MULTI, CLIENT REPLY, ...: the engine owns the connection; a step never changes it."""
    command = body.get("command") if isinstance(body, dict) else None
    if not command:
        return []
    from engine.adapters.redis_effects import connection_state_command
    from engine.spec import template

    literal = []
    for arg in command[:2]:
        if template.is_template(str(arg)):
            break
        literal.append(str(arg))
    found = connection_state_command(literal) if literal else None
    if found is None:
        return []
    return [
        located.error(
            (*path, "redis", "command", 0),
            f"{found} is not a step command: it changes the connection's own state (database, user, protocol, "
            "reply mode, transaction or subscriptions), which the engine owns; for another database, use a "
            "target whose URL names it (redis://host:port/N)",
        )
    ]


_TABLE: dict[str, Any] = {}


def bundled_table() -> dict[str, Any]:
    """The command table shipped with the engine: what a command does, told without a server."""
    if not _TABLE:
        from engine.adapters.redis_effects import bundled_table as load

        _TABLE.update(load())
    return _TABLE


class RedisKind(StepKind):
    name = "redis"
    schema = SCHEMA
    description = "A Redis command or a data helper against the target's Redis endpoint."
    per_node = staticmethod(per_node)

    def plan(self, body: Any, ctx: StepContext) -> Action:
        return plan(body, ctx)

    def static_effect(self, body: Any) -> Effect | None:
        return static_effect(body)

    def minimum_effect(self, body: Any) -> Effect | None:
        return minimum_effect(body)

    def validate(self, body: Any, located: Located, path: tuple[Any, ...], context: CheckContext) -> list[SourceError]:
        return connection_state_errors(located, path, body)

    def scope_names(self, body: Any) -> frozenset[str]:
        on = body.get("on") if isinstance(body, dict) else None
        return frozenset({"node", "loop"}) if on in MULTI_NODE | {"primary"} else frozenset()

    def summary(self, body: Any) -> str:
        return summary(body)


register(RedisKind())
