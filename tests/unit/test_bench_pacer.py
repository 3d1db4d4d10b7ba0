"""The server-side batch pacer: batches sized to a server-time budget from the measured cost per key."""

from __future__ import annotations

import pytest

from engine.keyspace.server_side import Pacer


def test_batches_converge_on_the_budget_and_grow_at_most_twofold() -> None:
    pacer = Pacer(budget_s=0.0015, floor=100, ceiling=4000)
    count = 1000
    sizes = []
    for _ in range(6):
        pacer.record(count, count * 1e-6)  # 1 us per key: the budget holds 1,500
        count = pacer.next_count(count)
        sizes.append(count)
    assert sizes[0] == 1500
    assert sizes[-1] == 1500
    cheap = Pacer(budget_s=0.0015, floor=100, ceiling=4000)
    cheap.record(200, 200 * 1e-8)
    assert cheap.next_count(200) == 400  # twofold at most, however cheap


def test_one_stretched_call_does_not_collapse_the_batches() -> None:
    pacer = Pacer(budget_s=0.0015, floor=100, ceiling=4000)
    for _ in range(4):
        pacer.record(1500, 1500e-6)
    pacer.record(1500, 0.030)  # the server lost its core for 28 ms mid-script
    assert pacer.next_count(1500) == 1500
    for _ in range(5):
        pacer.record(1500, 0.006)  # a real, lasting rise in cost per key: batches shrink to the budget
    assert pacer.next_count(1500) == 375


def test_batches_stay_within_floor_and_ceiling() -> None:
    slow = Pacer(budget_s=0.0015, floor=100, ceiling=4000)
    slow.record(100, 0.05)
    assert slow.next_count(100) == 100
    fast = Pacer(budget_s=0.0015, floor=100, ceiling=500)
    fast.record(400, 400e-8)
    assert fast.next_count(400) == 500


def test_summary_says_what_the_batches_did() -> None:
    pacer = Pacer(budget_s=0.0015)
    assert pacer.summary() == "no calls"
    pacer.record(1000, 0.0012)
    pacer.record(1500, 0.0021)
    assert pacer.summary() == (
        "2 calls of 1000-1500 keys, server time 0.00s, longest call 2.1 ms (budget 1.5 ms per call), "
        "paused 0.00s to hold the server at most 50% of the time"
    )


def test_pause_holds_our_share_of_the_server_to_the_duty_cycle() -> None:
    pacer = Pacer(budget_s=0.0015, duty=0.5)
    assert pacer.pause(0.0015, 0.0016) == pytest.approx(0.0014)  # loopback: almost no free time yet
    assert pacer.pause(0.0015, 0.0035) == 0.0  # a 2 ms network already left the server free long enough
    assert pacer.pause(0.0015, 0.0025) == pytest.approx(0.0005)
    assert pacer.paused_s == pytest.approx(0.0019)
    quarter = Pacer(duty=0.25)
    assert quarter.pause(0.001, 0.001) == pytest.approx(0.003)
