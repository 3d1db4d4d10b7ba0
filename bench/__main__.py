"""`python -m bench`: ours vs the reference commands, side by side, on a keyspace built for the purpose.

Starts its own redis-server (never the one on 6379), builds the keyspace (cached as an RDB file under
bench/.cache so later runs start in seconds), runs each pair alternately for several rounds and prints
a table: operation, ours, reference, ratio, target, met.
"""

from __future__ import annotations

import argparse
import sys

from bench import engine_cases, startup
from bench.harness import exit_on_signals
from bench.measure import render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--keys", type=int, default=200_000, help="keyspace size (200k: a quick run; 1000000 for the figures)"
    )
    parser.add_argument(
        "--rtt",
        type=float,
        action="append",
        help="round trip (ms) a delaying relay adds; repeatable (default 0.25 and 1)",
    )
    parser.add_argument("--no-network", action="store_true", help="loopback only: no relay passes")
    parser.add_argument("--net-rounds", type=int, default=1, help="rounds through each relay (default 1)")
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound processes for the busy pass (0: skip it)")
    parser.add_argument(
        "--only",
        choices=["startup", "overhead", "keyspace", "cluster", "traffic", "restore"],
        action="append",
        help="run only these groups (repeatable)",
    )
    args = parser.parse_args(argv)
    exit_on_signals()
    groups = args.only or ["startup", "overhead", "keyspace", "cluster"]
    rows = []
    report = ""
    if "startup" in groups:
        rows += engine_cases.startup(max(args.rounds, 5))
        rows += startup.health_check(max(args.rounds, 7))
    if "overhead" in groups:
        rows += engine_cases.engine_overhead(args.rounds)
    if "keyspace" in groups:
        from bench import keyspace_cases

        keyspace_rows, report = keyspace_cases.run(
            args.keys, args.rounds, [] if args.no_network else (args.rtt or [0.25, 1.0]), args.net_rounds, args.busy
        )
        rows += keyspace_rows
    if "cluster" in groups:
        from bench import cluster_cases

        cluster_rows, cluster_report = cluster_cases.run(args.keys, args.rounds)
        rows += cluster_rows
        report = "\n\n".join(r for r in (report, cluster_report) if r)
    if "traffic" in groups:  # by name only: the pacing targets beside production traffic (bench/traffic_cases.py)
        from bench import traffic_cases

        traffic_rows, traffic_report = traffic_cases.run(args.keys, args.rounds, args.busy)
        rows += traffic_rows
        report = "\n\n".join(r for r in (report, traffic_report) if r)
    if "restore" in groups:  # by name only: a restore beside production traffic (bench/restore_cases.py)
        from bench import restore_cases

        restore_rows, restore_report = restore_cases.run(args.keys, args.rounds)
        rows += restore_rows
        report = "\n\n".join(r for r in (report, restore_report) if r)
    print(render(rows))
    if report:
        print()
        print(report)
    return 0 if all(r.met != "NO" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
