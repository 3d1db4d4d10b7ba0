"""Runs one command and reports what it and its children cost: `python -m bench.rusage OUT -- ARGV...`.

Why a launcher: the peak RSS the kernel reports for a child starts from its parent's memory at fork
(the exec'd image inherits the high-water mark of the address space it replaced), so a child of the
benchmark itself would report the benchmark's own size. This small process runs the command, waits,
and writes a JSON line to OUT: {"began", "ended" (CLOCK_MONOTONIC, comparable across processes),
"status", "cpu" (user + system seconds of the command and every child it waited for), "maxrss_kb"}.
A string after `--shell` runs through /bin/sh.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    out, rest = argv[0], argv[1:]
    shell = rest[:1] == ["--shell"]
    command = rest[1] if shell else rest[rest.index("--") + 1 :]
    began = time.monotonic()
    status = subprocess.call(command, shell=shell)
    ended = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "w") as sink:
        json.dump(
            {
                "began": began,
                "ended": ended,
                "status": status,
                "cpu": usage.ru_utime + usage.ru_stime,
                "maxrss_kb": usage.ru_maxrss,
            },
            sink,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
