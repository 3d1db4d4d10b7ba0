"""/proc/stat read as the machine's idle CPU: the figures, and anything else read as unknown, never an exception."""

from __future__ import annotations

import random

import pytest

from engine.keyspace import host_cpu

STAT = """cpu  100 5 50 800 40 0 5 0 0 0
cpu0 50 2 25 400 20 0 3 0 0 0
cpu1 50 3 25 400 20 0 2 0 0 0
intr 123456 0 0 0
ctxt 99
"""


def test_the_machine_line_and_its_cores():
    assert host_cpu.parse(STAT) == host_cpu.Sample(idle=840, total=1000, cores=2)


def test_idle_cores_between_two_samples():
    before = host_cpu.Sample(idle=840, total=1000, cores=2)
    assert host_cpu.idle_cores(before, host_cpu.Sample(idle=990, total=1200, cores=2)) == pytest.approx(1.5)
    assert host_cpu.idle_cores(before, host_cpu.Sample(idle=840, total=1200, cores=2)) == 0.0
    # nothing elapsed, the counters went back, more idle than time, a CPU came or went, a sample missing
    assert host_cpu.idle_cores(before, before) is None
    assert host_cpu.idle_cores(before, host_cpu.Sample(idle=800, total=1200, cores=2)) is None
    assert host_cpu.idle_cores(before, host_cpu.Sample(idle=1100, total=1200, cores=2)) is None
    assert host_cpu.idle_cores(before, host_cpu.Sample(idle=990, total=1200, cores=3)) is None
    assert host_cpu.idle_cores(None, before) is None and host_cpu.idle_cores(before, None) is None


def test_this_machine_reads_as_its_own_cores(tmp_path):
    sample = host_cpu.sample()
    if sample is not None:  # Linux
        assert 0 < sample.idle < sample.total and sample.cores >= 1
    assert host_cpu.sample(str(tmp_path / "missing")) is None
    assert host_cpu.sample(str(tmp_path)) is None  # a directory


@pytest.mark.parametrize(
    "text",
    [
        "",
        "cpu",
        "cpu 1 2 3\ncpu0 1 2 3",  # too few fields
        "cpu  1 2 3 4 5\n",  # no per-CPU line
        "cpu0 1 2 3 4\n",  # no machine line
        "cpu  1 2 -3 4 5\ncpu0 1 2 3 4 5",
        "cpu  1 2 x 4 5\ncpu0 1 2 3 4 5",
        "cpu  1 2 ３ 4 5\ncpu0 1 2 3 4 5",  # a full-width digit
        "cpu  1 2 3 4 5\ncpu٣ 1 2 3 4 5",  # an Arabic-Indic digit: not a CPU line
    ],
)
def test_anything_else_reads_as_unknown(text):
    assert host_cpu.parse(text) is None


def test_fuzzed_files_give_a_sample_or_none_never_an_exception():
    rng = random.Random(20261130)
    alphabet = [
        "cpu",
        "cpu0",
        "cpu1",
        " ",
        "  ",
        "\n",
        "\r",
        "\t",
        "0",
        "7",
        "99999999999999999999",
        "-",
        "x",
        "\0",
        "é",
    ]
    for _ in range(5000):
        text = STAT if rng.random() < 0.5 else ""
        chars = list(text)
        for _ in range(rng.randint(1, 12)):
            at = rng.randrange(len(chars) + 1)
            if chars and rng.random() < 0.4:
                del chars[min(at, len(chars) - 1)]
            else:
                chars.insert(at, rng.choice(alphabet))
        sample = host_cpu.parse("".join(chars))
        assert sample is None or (sample.cores >= 1 and 0 <= sample.idle <= sample.total)
