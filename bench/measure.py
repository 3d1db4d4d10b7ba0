"""Timing that compares fairly: ours and the reference alternate, several rounds, medians reported."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    operation: str
    ours_s: float
    reference_s: float
    target: float | None  # the ratio ours/reference must not exceed; None: for the record only
    note: str = ""
    unit: str = "s"  # "s": seconds; "" a count (round trips)
    limit_s: float | None = None  # ours must also take at most this many seconds (an absolute target)

    def cell(self, value: float) -> str:
        return f"{value:.3f}s" if self.unit == "s" else f"{value:,.0f}"

    @property
    def ratio(self) -> float:
        return self.ours_s / self.reference_s if self.reference_s else float("inf")

    @property
    def met(self) -> str:
        if self.target is None and self.limit_s is None:
            return "-"
        within = (self.target is None or self.ratio <= self.target) and (
            self.limit_s is None or self.ours_s <= self.limit_s
        )
        return "yes" if within else "NO"

    @property
    def target_cell(self) -> str:
        targets = ([f"<= {self.target}x"] if self.target is not None else []) + (
            [f"<= {self.limit_s}s"] if self.limit_s is not None else []
        )
        return ", ".join(targets) or "record"


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def alternate(
    ours: Callable[[], object],
    reference: Callable[[], object],
    rounds: int,
    before_each: Callable[[], object] | None = None,
) -> tuple[float, float]:
    """Median seconds of each, run alternately so drift (caches, other load) hits both alike."""
    a, b = [], []
    for _ in range(rounds):
        if before_each:
            before_each()
        a.append(timed(ours))
        if before_each:
            before_each()
        b.append(timed(reference))
    return statistics.median(a), statistics.median(b)


def shell(command: str, timeout: float = 3600) -> Callable[[], object]:
    def run() -> object:
        return subprocess.run(command, shell=True, check=True, capture_output=True, timeout=timeout)

    return run


def render(rows: list[Row]) -> str:
    header: tuple[str, ...] = ("operation", "ours", "reference", "ratio", "target", "met")
    lines: list[tuple[str, ...]] = [header] + [
        (
            r.operation,
            r.cell(r.ours_s),
            r.cell(r.reference_s),
            f"{r.ratio:.3f}x",
            r.target_cell,
            r.met,
        )
        for r in rows
    ]
    lines = [tuple(cell.replace("|", "\\|") for cell in line) for line in lines]  # Markdown-safe cells
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    notes = [f"- {r.operation}: {r.note}" for r in rows if r.note]
    return "\n".join(out + (["", *notes] if notes else []))
