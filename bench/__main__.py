"""`python -m bench`: ours vs the reference commands, side by side, on a keyspace built for the purpose.

Starts its own redis-server (never the one on 6379), builds the keyspace (cached as an RDB file under
bench/.cache so later runs start in seconds), runs each pair alternately for several rounds and prints
a table: operation, ours, reference, ratio, target, met.
"""

from __future__ import annotations

import argparse
import sys

from bench import engine_cases
from bench.measure import render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=1_000_000, help="keyspace size for the keyspace cases")
    parser.add_argument(
        "--only",
        choices=["startup", "overhead", "keyspace"],
        action="append",
        help="run only these groups (repeatable)",
    )
    args = parser.parse_args(argv)
    groups = args.only or ["startup", "overhead", "keyspace"]
    rows = []
    if "startup" in groups:
        rows += engine_cases.startup(max(args.rounds, 5))
    if "overhead" in groups:
        rows += engine_cases.engine_overhead(args.rounds)
    if "keyspace" in groups:
        from bench import keyspace_cases

        rows += keyspace_cases.run(args.keys, args.rounds)
    print(render(rows))
    return 0 if all(r.met != "NO" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
