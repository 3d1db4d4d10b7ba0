"""A cluster's keyspace scripts run one pacer per primary; the step's summary adds them up."""

from __future__ import annotations

from engine.keyspace.pacing import Activity, Observation
from engine.keyspace.server_side import Pacer

BUSY = Activity(rtt_s=0.0, others=5, seconds=0.1, same_host=True)


def _call(pacer: Pacer, count: int, server_s: float) -> float:
    """One call seen by `pacer` (another client active, no network gap): the pause it asks for."""
    if pacer.state is None:
        pacer.begin(count, BUSY)
    return pacer.observe(Observation(count, server_s, server_s, 5, 0.01))


def test_fresh_keeps_the_settings_and_none_of_the_measurements():
    used = Pacer(budget_s=0.002, duty=0.25, floor=50, ceiling=700, idle_budget_s=0.003)
    assert _call(used, 400, 0.001) > 0
    fresh = used.fresh()
    assert (fresh.budget_s, fresh.duty, fresh.floor, fresh.ceiling, fresh.idle_budget_s) == (
        0.002,
        0.25,
        50,
        700,
        0.003,
    )
    assert (fresh.calls, fresh.total_s, fresh.longest_s, fresh.smallest, fresh.largest, fresh.paused_s) == (
        0,
        0.0,
        0.0,
        0,
        0,
        0.0,
    )
    assert fresh.state is None and fresh.probed is None  # each node looks at its own server first
    assert fresh.begin(300, BUSY) == 300  # nothing measured yet: the start size as given


def test_absorb_adds_calls_time_and_pauses_and_keeps_the_extremes():
    total = Pacer()
    first, second, idle = total.fresh(), total.fresh(), total.fresh()
    _call(first, 100, 0.001)
    _call(first, 800, 0.002)
    _call(second, 300, 0.004)
    for node in (first, second, idle):  # a primary without matching keys made no call: changes nothing
        total.absorb(node)
    assert total.calls == 3
    assert total.smallest == 100 and total.largest == 800
    assert abs(total.total_s - 0.007) < 1e-12 and total.longest_s == 0.004
    assert total.paused_s == first.paused_s + second.paused_s > 0
    assert total.summary().startswith("3 calls of 100-800 keys, server time 0.01s, longest call 4.0 ms")


def test_absorbing_into_an_unused_pacer_takes_the_smallest_batch_as_is():
    total = Pacer()
    node = total.fresh()
    _call(node, 250, 0.001)
    total.absorb(node)
    assert total.smallest == 250 == total.largest
