"""A Redis Cluster, ours vs what an operator runs today: one node at a time.

- audit-ttl on a 3-primary cluster holding the benchmark keyspace (bench/keyspace.py, 1,000,000 keys
  for the figures) vs `redis-cli --scan --pattern 'tenant:*' | wc -l` run against each primary in turn;
- `redis/health-check` of a 6-node cluster (3 primaries + 3 replicas) vs 6 sequential health checks of
  single nodes (six standalone servers: each run then does exactly one node's work).

Each pair runs alternately (ours, reference, ours, ...) for `--rounds` rounds, each a fresh `runbook`
process as an operator runs it (with the private caches of `_env`, warmed by one uncounted run); the row
shows the round whose ratio is the median of the rounds' ratios, and the load average around the pair.

The keyspace is split by hash slot over the three primaries (the slot ranges `redis-cli --cluster create`
gives), streamed through one `redis-cli --pipe` per primary, saved without a client timeout and cached
per primary under bench/.cache; a later run copies the cached RDBs in, and each node, loading them,
claims the slots its keys are in (the rest of its range is assigned, the nodes meet, and the cluster
is ready in seconds). Every server started here is stopped on every way out (`finally`; SIGTERM and
SIGHUP end the benchmark through it), and its directory removed.

`python -m bench.cluster_cases [--keys N] [--rounds N]`, or `python -m bench --only cluster`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from bench.harness import Measured, Meter, exit_on_signals
from bench.keyspace import CACHE, LOAD_TIMEOUT, commands, mass_insert, save_to_cache
from bench.measure import Row, render
from engine.sandbox import RedisServer
from engine.sandbox.topologies import start_cluster

SLOTS = 16384
PRIMARIES = 3
READY_TIMEOUT = 120.0  # a safety net for a broken start on a busy machine, not a timing expectation
JOIN_TIMEOUT = 60.0  # a socket timeout for the set-up calls: generous, a busy machine is slow, never stuck
RUNBOOK = [sys.executable, "-m", "engine.cli", "run"]


# -- the loaded cluster -------------------------------------------------------------------------------
def slot_ranges(primaries: int = PRIMARIES) -> list[range]:
    """The slots each primary serves, as `redis-cli --cluster create` splits them."""
    per = SLOTS / primaries
    bounds = [round(per * i) for i in range(primaries)] + [SLOTS]
    return [range(bounds[i], bounds[i + 1]) for i in range(primaries)]


def key_of(frame: bytes) -> bytes:
    """The key of one RESP command frame (`*N`, `$len` CMD, `$len` KEY, ...): its second argument."""
    at = frame.index(b"\r\n", frame.index(b"\r\n") + 2) + 2  # past `*N` and the command's `$len`
    at = frame.index(b"\r\n", at) + 2  # past the command name
    end = frame.index(b"\r\n", at)
    size = int(frame[at + 1 : end])
    return frame[end + 2 : end + 2 + size]


def owner_index(frame: bytes, ranges: Sequence[range]) -> int:
    slot = key_slot(key_of(frame))
    return next(i for i, owned in enumerate(ranges) if slot in owned)


@dataclass
class LoadedCluster:
    """The primaries of a cluster holding the benchmark keyspace, and the directory they live in."""

    servers: list[RedisServer]
    directory: Path

    @property
    def seed(self) -> RedisServer:
        return self.servers[0]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)  # the copied datasets (hundreds of MB)


def start_loaded_cluster(keys: int, seed: int = 7) -> LoadedCluster:
    """A cluster of PRIMARIES primaries holding `keys` keys; built once, then loaded from the cache.

    Every server is stopped on every way out of here but the successful one (the caller's then)."""
    ranges = slot_ranges()
    cached = [CACHE / f"cluster-{keys}-{seed}-{i + 1}of{len(ranges)}.rdb" for i in range(len(ranges))]
    loaded = LoadedCluster([], Path(tempfile.mkdtemp(prefix="runbook-bench-cluster-")))
    try:
        have_cache = all(path.exists() for path in cached)
        for i, _ in enumerate(ranges):
            directory = loaded.directory / f"node{i + 1}"
            directory.mkdir()
            if have_cache:
                shutil.copy(cached[i], directory / "dump.rdb")
            server = RedisServer.start(
                directory=directory, config={"save": ""}, cluster=True, start_timeout=LOAD_TIMEOUT
            )
            loaded.servers.append(server)
        join(loaded.servers, ranges)
        if have_cache and sum(s.client(socket_timeout=None).dbsize() for s in loaded.servers) == keys:
            return loaded
        _build(loaded.servers, ranges, keys, seed)
        for server, path in zip(loaded.servers, cached, strict=True):
            save_to_cache(server, path)
        return loaded
    except BaseException:
        loaded.stop()
        raise


def join(servers: Sequence[RedisServer], ranges: Sequence[range]) -> None:
    """Give each server its slot range (those it claimed from its loaded keys are kept), its own config
    epoch, and make them meet; return once every node sees every slot served."""
    for epoch, (server, owned) in enumerate(zip(servers, ranges, strict=True), start=1):
        with server.client(socket_timeout=JOIN_TIMEOUT) as client:
            pipe = client.pipeline(transaction=False)
            for slot in owned:  # a slot it already claimed answers "busy": left as it is
                pipe.execute_command("CLUSTER", "ADDSLOTS", slot)
            pipe.execute(raise_on_error=False)
            try:
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
            except redis.ResponseError:
                pass  # already has one (it claimed slots on load): the cluster settles any collision
    with servers[0].client(socket_timeout=JOIN_TIMEOUT) as first:
        for other in servers[1:]:
            with other.client(socket_timeout=JOIN_TIMEOUT) as client:
                bus = client.config_get("cluster-port")["cluster-port"]
            first.execute_command("CLUSTER", "MEET", other.host, other.port, bus)
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        infos = []
        for server in servers:
            with server.client(socket_timeout=JOIN_TIMEOUT) as client:
                infos.append(str(client.execute_command("CLUSTER", "INFO")))
        want = (f"cluster_known_nodes:{len(servers)}", "cluster_state:ok", f"cluster_slots_ok:{SLOTS}")
        if all(all(w in info for w in want) for info in infos):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the benchmark cluster did not settle within {READY_TIMEOUT:.0f}s:\n{infos}")
        time.sleep(0.1)


def _build(servers: Sequence[RedisServer], ranges: Sequence[range], keys: int, seed: int) -> None:
    """The benchmark keyspace, each command streamed to the primary owning its key's slot."""
    with ExitStack() as stack:
        streams = [stack.enter_context(mass_insert(server)) for server in servers]
        batches: list[list[bytes]] = [[] for _ in servers]
        for frame in commands(keys, seed):
            owner = owner_index(frame, ranges)
            batch = batches[owner]
            batch.append(frame)
            if len(batch) >= 10_000:
                streams[owner].write(b"".join(batch))
                batch.clear()
        for stream, batch in zip(streams, batches, strict=True):
            stream.write(b"".join(batch))


# -- measuring ------------------------------------------------------------------------------------------
class Summed:
    """INFO cpu and commandstats added up over several servers: what `Meter` reads, for a deployment."""

    def __init__(self, servers: Sequence[RedisServer]) -> None:
        self.clients = [server.client(socket_timeout=None) for server in servers]

    def info(self, section: str) -> dict[str, Any]:
        total: dict[str, Any] = {}
        for client in self.clients:
            for name, value in client.info(section).items():
                if isinstance(value, dict):  # commandstats: {'cmdstat_get': {'calls': 3, ...}}
                    total.setdefault(name, {"calls": 0})["calls"] += int(value.get("calls", 0))
                elif isinstance(value, int | float) and not isinstance(value, bool):
                    total[name] = total.get(name, 0) + value
        return total

    def close(self) -> None:
        for client in self.clients:
            client.close()


def _env(work: Path) -> dict[str, str]:
    """A private validation cache, warmed once, as the start-up bench uses (bytecode: harness.tool_env)."""
    return {"XDG_CACHE_HOME": str(work / "cache")}


@dataclass(frozen=True)
class Pair:
    """Both sides' runs, round by round, and the load average around them."""

    ours: list[Measured]
    reference: list[Measured]
    load: tuple[tuple[float, float, float], tuple[float, float, float]]

    def ratios(self) -> list[float]:
        return [a.cost.wall_s / b.cost.wall_s for a, b in zip(self.ours, self.reference, strict=True)]

    def median_round(self) -> int:
        ratios = self.ratios()
        return sorted(range(len(ratios)), key=ratios.__getitem__)[(len(ratios) - 1) // 2]

    def row(self, label: str, target: float) -> Row:
        i = self.median_round()
        ours = [m.cost.wall_s for m in self.ours]
        theirs = [m.cost.wall_s for m in self.reference]
        note = (
            f"median of {len(ours)} rounds' ratios ({', '.join(f'{r:.3f}' for r in self.ratios())}); "
            f"medians {statistics.median(ours):.3f}s vs {statistics.median(theirs):.3f}s; "
            f"load average {_load(self.load[0])} before, {_load(self.load[1])} after"
        )
        return Row(label, self.ours[i].cost.wall_s, self.reference[i].cost.wall_s, target, note=note)


def _load(avg: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.1f}" for x in avg)


def alternate(meter: Meter, ours: Callable[[], list[str]], reference: str, rounds: int, env: dict[str, str]) -> Pair:
    before = os.getloadavg()
    mine, theirs = [], []
    for _ in range(rounds):
        mine.append(meter.run(ours(), env=env))
        theirs.append(meter.run(reference, env=env))
    return Pair(mine, theirs, (before, os.getloadavg()))


def _method(transcript: Path) -> str:
    """The keyspace step's `method:` line (which path it took, its batches), from a transcript."""
    for line in transcript.read_text(encoding="utf-8").split("\n"):
        if '"step.output"' in line and "method:" in line:
            return str(json.loads(line)["output"])
    return "(no method line)"


def audit_ttl(work: Path, cluster: LoadedCluster, keys: int, rounds: int) -> tuple[Row, str]:
    """audit-ttl of the whole cluster vs redis-cli --scan | wc -l against each primary in turn."""
    env = _env(work)
    tick = iter(range(10**6))
    url = f"redis://{cluster.seed.host}:{cluster.seed.port}/0"

    def ours() -> list[str]:
        return [*RUNBOOK, "redis/audit-ttl", "--redis", url, "--transcript", str(work / f"audit-{next(tick)}.jsonl")]

    scans = "; ".join(f"redis-cli -h {s.host} -p {s.port} --scan --pattern 'tenant:*'" for s in cluster.servers)
    reference = f"({scans}) | wc -l"
    admin = Summed(cluster.servers)
    try:
        meter = Meter(admin)  # type: ignore[arg-type]  # reads INFO only: summed over the primaries
        warm = ours()  # uncounted: validates the procedure, fills the caches, and is checked
        meter.run(warm, env=env)
        meter.calibrate_idle(3.0)  # the servers' own CPU at rest (cluster bus, cron): not the operation's
        method = _method(Path(warm[-1]))
        pair = alternate(meter, ours, reference, rounds, env)
    finally:
        admin.close()
    scale = f"{keys / 1e6:g}M" if keys >= 1_000_000 else f"{keys // 1000}k"
    row = pair.row(
        f"audit-ttl, {PRIMARIES}-primary cluster, {scale} keys (vs redis-cli --scan | wc -l per primary in turn)", 0.35
    )
    return row, _details("audit-ttl", pair) + f"\n- ours (the uncounted first run): {method}"


def health_check(work: Path, rounds: int) -> tuple[Row, str]:
    """redis/health-check of a 6-node cluster vs 6 sequential health checks of single nodes."""
    env = _env(work)
    hc = ["redis/health-check", "--transcripts-dir", str(work / "hc")]
    with ExitStack() as stack:
        cluster = start_cluster(primaries=3, replicas=1)
        stack.callback(cluster.stop)
        singles = []
        for _ in range(len(cluster.nodes)):
            single = RedisServer.start()
            stack.callback(single.stop)
            singles.append(single)
        admin = Summed([*cluster.nodes, *singles])
        stack.callback(admin.close)
        meter = Meter(admin)  # type: ignore[arg-type]
        ours = [*RUNBOOK, *hc, "--redis", cluster.nodes[0].url]
        each = [" ".join([*RUNBOOK, *hc, "--redis", single.url]) + " > /dev/null" for single in singles]
        reference = " && ".join(each)
        meter.run(ours, env=env)  # uncounted: validates the procedure and fills the caches
        meter.calibrate_idle(3.0)
        pair = alternate(meter, lambda: ours, reference, rounds, env)
    row = pair.row("health-check, 6-node cluster (vs 6 sequential single-node health checks)", 0.5)
    return row, _details("health-check", pair)


def _details(name: str, pair: Pair) -> str:
    lines = []
    for side, runs in (("ours", pair.ours), ("reference", pair.reference)):
        cost = sorted((m.cost for m in runs), key=lambda c: c.wall_s)[(len(runs) - 1) // 2]
        lines.append(
            f"- {name}, {side} (median run): wall {cost.wall_s:.2f}s, server CPU {cost.server_cpu_s:.2f}s, "
            f"client CPU {cost.client_cpu_s:.2f}s, {cost.commands} commands, peak RSS {cost.peak_rss_mb} MB"
        )
    return "\n".join(lines)


def run(keys: int, rounds: int, only: Sequence[str] = ("audit", "health")) -> tuple[list[Row], str]:
    """The cluster cases; (rows for the summary table, details)."""
    rows: list[Row] = []
    details: list[str] = []
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="runbook-bench-cluster-work-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        if "audit" in only:
            cluster = start_loaded_cluster(keys)
            try:
                row, text = audit_ttl(work, cluster, keys, rounds)
            finally:
                cluster.stop()  # before the next cluster: its memory back
            rows.append(row)
            details.append(text)
        if "health" in only:
            row, text = health_check(work, rounds)
            rows.append(row)
            details.append(text)
    return rows, "\n".join(details)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_cases", description=__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys in the cluster (default 1000000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each pair (default 5)")
    parser.add_argument("--only", choices=["audit", "health"], action="append", help="one case (repeatable)")
    args = parser.parse_args(argv)
    exit_on_signals()
    rows, details = run(args.keys, args.rounds, args.only or ("audit", "health"))
    print(render(rows))
    print()
    print(details)
    return 0 if all(r.met != "NO" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
