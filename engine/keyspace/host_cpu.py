"""How much CPU this machine has to spare, from /proc/stat (Linux): read around a scan's first look at the server.

Why: on the server's own host, the small pages (small_pages.py) keep every call of ours as short as
`redis-cli --scan`'s, but their client parses a reply per key, about a core's worth of work; on a machine
whose cores are already taken, that work takes them from Redis and its clients (measured beside two
CPU-bound processes: production's p99 1.6 times the reference's with small pages, 0.7-0.9 times with
one-sub-step scripts, docs/performance.md). Where the file cannot be read (not Linux, a sandbox) the
figure is unknown and the choice does not use it.
"""

from __future__ import annotations

from dataclasses import dataclass

PROC_STAT = "/proc/stat"
MAX_BYTES = 1 << 20  # the cpu lines come first; the rest (interrupt counts) can be long on a big machine


@dataclass(frozen=True)
class Sample:
    idle: int  # jiffies every CPU spent idle (idle + iowait) since boot
    total: int  # ... and in all
    cores: int


def parse(text: str) -> Sample | None:
    """The machine's line ('cpu  user nice system idle iowait irq softirq steal ...') and the number of
    'cpuN' lines; None for anything else (never an exception)."""
    summary: list[str] | None = None
    cores = 0
    for line in text.splitlines():
        fields = line.split()
        if not fields or not fields[0].startswith("cpu"):
            continue
        if fields[0] == "cpu":
            summary = fields[1:9]  # guest time is counted in user time already
        elif fields[0][3:].isascii() and fields[0][3:].isdigit():
            cores += 1
    if summary is None or len(summary) < 4 or cores == 0:
        return None
    if not all(value.isascii() and value.isdigit() for value in summary):
        return None
    values = [int(value) for value in summary]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return Sample(idle, sum(values), cores)


def idle_cores(before: Sample | None, after: Sample | None) -> float | None:
    """Cores' worth of CPU that stayed idle between the two samples (0 to `cores`); None when unknown."""
    if before is None or after is None or before.cores != after.cores:
        return None
    total, idle = after.total - before.total, after.idle - before.idle
    if total <= 0 or not 0 <= idle <= total:
        return None
    return idle / total * after.cores


def sample(path: str = PROC_STAT) -> Sample | None:
    try:
        with open(path, encoding="ascii", errors="replace") as stat:
            return parse(stat.read(MAX_BYTES))
    except OSError:
        return None
