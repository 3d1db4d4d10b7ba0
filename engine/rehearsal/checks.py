"""What 'resolved' can be measured by: functions a scenario's success expressions call on the world."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from engine.outcome import Outcome
from engine.rehearsal import nodes
from engine.rehearsal.faults import take_snapshot
from engine.rehearsal.world import World
from engine.spec import template

# Names that look at the procedure's run, not at the world: a check using one cannot be asked before the run.
RUN_NAMES = frozenset({"result", "ran", "findings", "output", "run", "revealed"})


def about_the_world(that: str) -> bool:
    """A check of the world alone (it can be asked before the procedure runs, to see the incident is there)."""
    try:
        return not (template.expression_variables(that) & RUN_NAMES)
    except Exception:
        return False


def holds(that: str, names: dict[str, Any]) -> tuple[bool, str | None]:
    """(held, why not) for one expression; a check that cannot be evaluated or cannot reach Redis does not hold."""
    try:
        return bool(template.evaluate(that, names)), None
    except template.TemplateError as exc:
        return False, f"check failed to evaluate: {exc}"
    except redis.RedisError as exc:
        return False, f"Redis: {type(exc).__name__}: {exc}"


def no_run() -> dict[str, Any]:
    return {
        "exit_code": None,
        "outcome": None,
        "results": {},
        "outcomes": {},
        "findings": [],
        "output": "",
        "transcript": None,
        "dry_run_transcript": None,
    }


def namespace(world: World, run: dict[str, Any]) -> dict[str, Any]:
    """Names for `success` expressions; `run` holds the real run's outcome, findings and step results."""

    def call(fn: Any, on: str | None = None) -> Any:
        """fn(client) on the world's Redis, or on the nodes `on` names: one value for `primary` or a
        HOST:PORT, {address: value} for `primaries`, `replicas`, `all`."""
        if on is None:
            with world.client() as client:
                return fn(client)
        where, single = nodes.select(world, on)
        out = {}
        for node in where:
            with world.client(node=node) as client:
                out[node] = fn(client)
        return out[where[0]] if single else out

    def can_write(on: str | None = None) -> bool:
        def probe(client: redis.Redis) -> bool:
            try:
                client.set("rehearsal:probe", "1", px=5000)
                client.delete("rehearsal:probe")
                return True
            except redis.RedisError:
                return False

        try:
            answer = call(probe, on)
        except (redis.RedisError, ValueError):
            return False
        return all(answer.values()) if isinstance(answer, dict) else bool(answer)

    def ping(on: str | None = None) -> bool:
        if on is None:
            return world.ping()
        try:
            answer = call(lambda c: bool(c.ping()), on)
        except (redis.RedisError, ValueError):
            return False
        return all(answer.values()) if isinstance(answer, dict) else bool(answer)

    def replica_links_up() -> bool:
        """Every data node that answers as a replica has its link up, and the world has at least one."""
        found = nodes.links(world)
        return bool(found) and all(status == "up" for status in found.values())

    def auth_ok(password: str | None) -> bool:
        try:
            with world.client(password=password or False) as client:
                client.ping()
            return True
        except redis.RedisError:
            return False

    def used_memory_pct() -> float:
        info = call(lambda c: c.info("memory"))
        return 100.0 * info["used_memory"] / info["maxmemory"] if info.get("maxmemory") else 0.0

    def count(match: str, on: str | None = None) -> Any:
        return call(lambda c: sum(1 for _ in c.scan_iter(match=match, count=1000)), on)

    def count_without_ttl(match: str, on: str | None = None) -> Any:
        return call(lambda c: sum(1 for k in c.scan_iter(match=match, count=1000) if c.ttl(k) == -1), on)

    def unchanged_since(name: str, match: str = "*", ignore: str | None = None) -> bool:
        """Every key matching `match` has the type, value and TTL presence it had at snapshot `name`."""
        import fnmatch

        before = {k: v for k, v in world.vars[f"snapshot:{name}"].items() if fnmatch.fnmatchcase(k, match)}
        after = take_snapshot(world, match)
        if ignore:
            before = {k: v for k, v in before.items() if not fnmatch.fnmatchcase(k, ignore)}
            after = {k: v for k, v in after.items() if not fnmatch.fnmatchcase(k, ignore)}
        return before == after

    def values_equal_snapshot(name: str, match: str = "*") -> bool:
        """Like unchanged_since, but TTL presence only (a restore gives back values and TTLs)."""
        return unchanged_since(name, match)

    def clients(name: str | None = None, idle_min: int | None = None) -> int:
        """Connected clients (CLIENT LIST) with this name / idle this long, if given; not the check's own."""

        def count_them(c: redis.Redis) -> int:
            own = c.client_id()
            return sum(
                1
                for entry in c.client_list()
                if int(entry["id"]) != own
                and (name is None or entry.get("name") == name)
                and (idle_min is None or int(entry.get("idle", 0)) >= idle_min)
            )

        return call(count_them)

    def config_changed_since(name: str) -> list[str]:
        """The configuration parameters whose value differs from `config_snapshot: name` (names only)."""
        before = world.vars[f"config:{name}"]
        after = call(lambda c: c.config_get("*"))
        return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))

    def revealed(secret: str | None) -> bool:
        """Does `secret` appear anywhere the rehearsal left text: both transcripts, the step summaries and results?"""
        if not secret:
            return False
        texts = [run.get("output") or "", json.dumps(run.get("results"), default=str)]
        for path in (run.get("transcript"), run.get("dry_run_transcript")):
            if path and Path(path).exists():
                texts.append(Path(path).read_text(encoding="utf-8"))
        return any(secret in text for text in texts)

    def restarted_since(name: str) -> bool:
        """The server is not the process that ran at `snapshot: name` (its run id changed, or it is down)."""
        try:
            return call(lambda c: c.info("server")["run_id"]) != world.vars[f"run_id:{name}"]
        except redis.RedisError:
            return True

    def restarted(node: str) -> bool:
        """The node answers as a new process: its run_id differs from the one it had when the world was
        built (False while it is down: a restart that did not come back is no restart)."""
        try:
            with world.client(node=world.node(node)) as client:
                return bool(client.info("server")["run_id"] != world.run_ids_at_start[node])
        except redis.RedisError:
            return False

    def restarted_nodes() -> list[str]:
        """Sorted addresses of the data nodes that answer as new processes since the world was built."""
        return sorted(a for a in world.run_ids_at_start if restarted(a))

    def result(step_id: str) -> Any:
        return run["results"].get(step_id)

    return {
        "ping": ping,
        "dbsize": lambda on=None: call(lambda c: c.dbsize(), on),
        "exists": lambda key, on=None: call(lambda c: bool(c.exists(key)), on),
        "ttl": lambda key: call(lambda c: c.ttl(key)),
        "get": lambda key, on=None: call(lambda c: c.get(key), on),
        "config": lambda name, on=None: call(lambda c: c.config_get(name).get(name), on),
        "info": lambda section, field, on=None: call(lambda c: c.info(section).get(field), on),
        # a deployment's nodes as they answer now (engine/rehearsal/nodes.py)
        "roles": lambda: nodes.roles(world),
        "role": lambda node: nodes.roles(world).get(node),
        "primary": lambda: nodes.primary(world),
        "primaries": lambda: sorted(a for a, r in nodes.roles(world).items() if r == "primary"),
        "replicas": lambda: sorted(a for a, r in nodes.roles(world).items() if r == "replica"),
        "sentinel_primary": lambda: nodes.sentinel_primary(world),
        "links": lambda: nodes.links(world),
        "replica_links_up": replica_links_up,
        "lag": lambda node: nodes.lag(world, node),
        "cluster_state": lambda node=None: nodes.cluster_state(world, node),
        "slots_covered": lambda: nodes.slots_covered(world),
        "connected_clients": lambda: call(lambda c: c.info("clients")["connected_clients"]),
        "clients": clients,
        "config_changed_since": config_changed_since,
        "revealed": revealed,
        "world_config": lambda name, parameter: world.vars[f"config:{name}"].get(parameter),
        "can_write": can_write,
        "auth_ok": auth_ok,
        "used_memory_pct": used_memory_pct,
        "count": count,
        "count_without_ttl": count_without_ttl,
        "unchanged_since": unchanged_since,
        "restarted_since": restarted_since,
        "restarted": restarted,
        "restarted_nodes": restarted_nodes,
        "values_equal_snapshot": values_equal_snapshot,
        "result": result,
        "ran": lambda *step_ids: all(run.get("outcomes", {}).get(s) == Outcome.OK for s in step_ids),
        "world": world.template_values(),
        "old_password": world.original_password,
        "new_password": lambda: world.current_password,
        "run": run,
        "findings": run["findings"],
        "output": run["output"],
        "file_mode": lambda path: oct(__import__("os").stat(path).st_mode & 0o777),
        "file_age": lambda path: __import__("time").time() - __import__("os").stat(path).st_mtime,
        "file_text": lambda path: Path(path).read_text(encoding="utf-8", errors="replace"),
        "files": lambda pattern: sorted(str(p) for p in Path("/").glob(pattern.lstrip("/"))),
    }
