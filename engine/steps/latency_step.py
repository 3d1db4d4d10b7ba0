"""`latency:` steps: PING round trips timed from here, summarised like `redis-cli --latency`.

`redis-cli --latency` pings until Ctrl-C and prints min/avg/max; `--latency-history` restarts every 15 s.
Here a step pings `count` times, `every` apart, and reports min/avg/max and percentiles in milliseconds;
put `sample:` on it for the history mode (one summary per window, a series of them).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from engine.errors import UsageError
from engine.spec.model import Effect
from engine.spec.params import parse_count, parse_duration
from engine.steps import Action, StepKind, register

if TYPE_CHECKING:
    from engine.run.context import StepContext

MAX_PINGS = 100_000

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "description": "PING round trips -> {pings, min_ms, avg_ms, max_ms, p50_ms, p90_ms, p99_ms, stddev_ms}.",
    "properties": {
        "count": {
            "type": ["integer", "string"],
            "description": f"How many PINGs (1..{MAX_PINGS}); default 100.",
        },
        "every": {
            "type": ["string", "number"],
            "description": "Pause between PINGs (a duration; default 10ms, as redis-cli).",
        },
    },
}

RESULT_SCHEMA = {
    "type": "object",
    "required": ["pings", "min_ms", "avg_ms", "max_ms", "p50_ms", "p90_ms", "p99_ms", "stddev_ms"],
    "properties": {
        "pings": {"type": "integer", "description": "round trips measured"},
        "min_ms": {"type": "number"},
        "avg_ms": {"type": "number"},
        "max_ms": {"type": "number"},
        "p50_ms": {"type": "number"},
        "p90_ms": {"type": "number"},
        "p99_ms": {"type": "number"},
        "stddev_ms": {"type": "number"},
    },
}


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest rank: the smallest value with at least pct% of the values at or below it."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarise(round_trips_ms: list[float]) -> dict[str, Any]:
    values = sorted(round_trips_ms)
    n = len(values)
    mean = sum(values) / n
    return {
        "pings": n,
        "min_ms": round(values[0], 3),
        "avg_ms": round(mean, 3),
        "max_ms": round(values[-1], 3),
        "p50_ms": round(percentile(values, 50), 3),
        "p90_ms": round(percentile(values, 90), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "stddev_ms": round(math.sqrt(sum((v - mean) ** 2 for v in values) / n), 3),
    }


def _bounds(body: dict[str, Any]) -> tuple[int, float]:
    try:
        count = parse_count(body.get("count", 100))
        every = parse_duration(body.get("every", "10ms"))
    except ValueError as exc:
        raise UsageError(f"latency: {exc}") from None
    if count > MAX_PINGS:
        raise UsageError(f"latency: count must be at most {MAX_PINGS}, got {count}")
    return count, every


def plan(body: dict[str, Any] | None, ctx: StepContext) -> Action:
    body = body or {}
    count, every = _bounds(body)
    adapter = ctx.connections.redis()

    def execute() -> dict[str, Any]:
        trips: list[float] = []
        with ctx.progress("PING", count) as progress:
            for i in range(count):
                started = time.perf_counter()
                adapter.call(["PING"])
                trips.append((time.perf_counter() - started) * 1000)
                progress.advance(1)
                if every and i + 1 < count:
                    time.sleep(every)
        return summarise(trips)

    return Action(Effect.READ, adapter.endpoint.url, f"PING x{count} every {every:g}s", execute)


class LatencyKind(StepKind):
    name = "latency"
    schema = {**SCHEMA, "type": ["object", "null"]}
    description = "Sample PING round trips: min/avg/max and percentiles, like redis-cli --latency."
    number_fields = {"count": "count", "every": "duration"}

    plan = staticmethod(plan)

    def summary(self, body: Any) -> str:
        return f"PING round trips x{(body or {}).get('count', 100)}"


register(LatencyKind())
