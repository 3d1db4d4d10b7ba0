"""What the kernel says about processes (Linux /proc), for tests that check which processes exist."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcStat:
    pid: int
    name: str  # the command name, as in /proc/PID/stat (at most 15 characters)
    state: str  # "R", "S", "Z" (a zombie), ...
    parent: int


def processes() -> Iterator[ProcStat]:
    """Every process that still exists while it is read (one that ends meanwhile is skipped)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the name is in parentheses and may itself hold spaces or parentheses: split around the last ")"
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        yield ProcStat(int(entry.name), name, rest[0], int(rest[1]))
