"""The relay's and the load generator's pure parts: the delay line keeps order and holds each chunk its
delay; turns are counted; a production request's two latencies."""

from __future__ import annotations

import array
from pathlib import Path

import pytest

from bench.load import charged_from, read_samples, reply_complete
from bench.relay import DelayLine, TurnCounter


def test_delay_line_holds_each_chunk_until_due_and_keeps_order() -> None:
    line = DelayLine(0.5)
    line.push(b"a", now=10.0)
    line.push(b"b", now=10.2)
    assert line.next_due() == 10.5
    assert line.pop_due(10.49) == b""
    assert line.pop_due(10.5) == b"a"
    assert line.next_due() == pytest.approx(10.7)
    line.push(b"c", now=10.3)
    assert line.pop_due(11.0) == b"bc"  # everything due, joined in arrival order
    assert len(line) == 0 and line.next_due() is None


def test_delay_line_forwards_bytes_unchanged() -> None:
    line = DelayLine(0.0)
    chunks = [bytes(range(256)), b"\r\n*1\r\n$4\r\nPING\r\n", b"", b"\x00" * 10]
    for chunk in chunks:
        line.push(chunk, now=1.0)
    assert line.pop_due(1.0) == b"".join(chunks)


def test_delay_line_refuses_a_negative_delay() -> None:
    with pytest.raises(ValueError):
        DelayLine(-0.1)


def test_turns_count_each_time_the_client_speaks_after_the_server() -> None:
    counter = TurnCounter()
    counter.client_sent()  # request
    counter.client_sent()  # the rest of a pipeline, before any reply: same turn
    counter.server_sent()
    counter.server_sent()  # a long reply in pieces
    counter.client_sent()  # next request
    counter.server_sent()
    assert counter.turns == 2
    assert TurnCounter().turns == 0


def test_load_client_finds_the_end_of_each_reply_kind() -> None:
    assert reply_complete(b"+OK\r\n") == 5
    assert reply_complete(b"+OK") == 0
    assert reply_complete(b"$-1\r\n") == 5
    assert reply_complete(b"$3\r\nabc\r\n+OK\r\n") == 9
    assert reply_complete(b"$3\r\nab") == 0
    assert reply_complete(b"-ERR x\r\n") == 8


def test_service_latency_counts_from_sending_unless_the_request_waited_for_its_connection() -> None:
    assert charged_from(due=10.0, sent=10.0006, free_at=9.99) == 10.0006  # the generator woke up late: not Redis's
    assert charged_from(due=10.0, sent=10.003, free_at=10.0029) == 10.0  # queued behind a slow reply: all of it


def test_samples_are_read_with_either_latency(tmp_path: Path) -> None:
    path = tmp_path / "load.bin"
    with path.open("wb") as sink:  # (due, from due, service) triples, as the generator writes them
        array.array("d", [1.0, 0.0008, 0.0002, 2.0, 0.003, 0.003]).tofile(sink)
    assert read_samples(path) == [(1.0, 0.0008), (2.0, 0.003)]
    assert read_samples(path, service=True) == [(1.0, 0.0002), (2.0, 0.003)]
