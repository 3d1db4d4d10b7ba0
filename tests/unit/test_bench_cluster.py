"""The cluster bench's pure parts: how the keyspace is split over the primaries, and which round is reported."""

from __future__ import annotations

import itertools

from redis.crc import key_slot

from bench.cluster_cases import Pair, key_of, owner_index, slot_ranges
from bench.harness import Measured
from bench.keyspace import _resp, commands
from bench.stats import Cost


def test_slot_ranges_are_redis_cli_s_and_cover_every_slot_once():
    ranges = slot_ranges(3)
    assert [(r.start, r.stop - 1) for r in ranges] == [(0, 5460), (5461, 10922), (10923, 16383)]
    assert [s for r in slot_ranges(5) for s in r] == list(range(16384))


def test_the_key_of_a_frame_is_its_second_argument_whatever_the_command():
    assert key_of(_resp(b"SET", "tenant:t1:cache:7", b"x" * 300)) == b"tenant:t1:cache:7"
    assert key_of(_resp(b"HSET", "k", "f", "v")) == b"k"
    assert key_of(_resp(b"EXPIRE", "a\r\nb", 10)) == b"a\r\nb"  # the length, not a line end, bounds it
    for frame in itertools.islice(commands(200), 300):
        key = key_of(frame)
        assert key.startswith(b"tenant:t") and key in frame


def test_each_command_goes_to_the_primary_serving_its_key_s_slot():
    ranges = slot_ranges(3)
    owners = set()
    for frame in itertools.islice(commands(300), 400):
        owner = owner_index(frame, ranges)
        assert key_slot(key_of(frame)) in ranges[owner]
        owners.add(owner)
    assert owners == {0, 1, 2}


def _run(wall: float) -> Measured:
    return Measured(Cost(wall, 0, 0.0, 0.0), (0.0, wall), {})


def test_the_row_shows_the_round_whose_ratio_is_the_median():
    pair = Pair([_run(1.0), _run(3.0), _run(2.0)], [_run(4.0), _run(4.0), _run(2.0)], ((1, 1, 1), (2, 2, 2)))
    assert pair.ratios() == [0.25, 0.75, 1.0]
    row = pair.row("x", 0.5)
    assert (row.ours_s, row.reference_s) == (3.0, 4.0) and row.met == "NO"
    assert "0.250, 0.750, 1.000" in row.note and "load average 1.0/1.0/1.0 before" in row.note
