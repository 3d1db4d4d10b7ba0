"""The benchmark's arithmetic (percentiles, INFO deltas, windows, the round-trip cost model, SLOWLOG's
script calls) and the environment its commands run in."""

from __future__ import annotations

import math
import os

import pytest

from bench.harness import ROOT, tool_env
from bench.stats import (
    SCRIPT_CLIENT,
    Cost,
    Latency,
    calls,
    calls_delta,
    cpu_seconds,
    in_windows,
    median_cost,
    percentile,
    projected_ratio,
    projected_wall,
    script_calls,
    steal_seconds,
)


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # order of the input does not matter


def test_percentile_of_nothing_is_nan_and_out_of_range_is_refused() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        percentile([1.0], -1)


def test_latency_summary_and_rendering() -> None:
    summary = Latency.of([0.001] * 98 + [0.010, 0.050])
    assert summary.count == 100
    assert summary.p50 == pytest.approx(0.001)
    assert summary.max == pytest.approx(0.050)
    assert 0.001 < summary.p99 <= 0.050
    assert summary.render().startswith("1.00 / ")
    assert Latency.of([]).render() == "no samples"


def test_in_windows_keeps_samples_sent_inside_any_window_half_open() -> None:
    samples = [(0.5, 1.0), (1.0, 2.0), (1.5, 3.0), (2.0, 4.0), (5.0, 5.0)]
    assert in_windows(samples, [(1.0, 2.0)]) == [2.0, 3.0]  # [start, end)
    assert in_windows(samples, [(0.0, 1.0), (4.0, 6.0)]) == [1.0, 5.0]
    assert in_windows(samples, []) == []


def test_calls_delta_drops_probes_traffic_and_unchanged_commands() -> None:
    before = calls(
        {"cmdstat_scan": {"calls": 10, "usec": 1}, "cmdstat_info": {"calls": 3}, "cmdstat_get": {"calls": 5}}
    )
    after = calls(
        {
            "cmdstat_scan": {"calls": 110},
            "cmdstat_info": {"calls": 9},
            "cmdstat_get": {"calls": 900},
            "cmdstat_ttl": {"calls": 4},
            "cmdstat_dbsize": {"calls": 0},
        }
    )
    assert before == {"scan": 10, "info": 3, "get": 5}
    assert calls_delta(before, after) == {"scan": 100, "ttl": 4}
    assert calls_delta(before, after, exclude=()) == {"get": 895, "info": 6, "scan": 100, "ttl": 4}


def test_cpu_seconds_adds_system_and_user_time() -> None:
    assert cpu_seconds({"used_cpu_sys": "1.5", "used_cpu_user": 2.25, "used_cpu_sys_children": 9}) == 3.75


def test_model_charges_every_round_trip_the_path_time_plus_both_cpus() -> None:
    assert projected_wall(1000, 0.001, 0.5, 0.25) == pytest.approx(1.75)
    assert projected_wall(0, 0.001, 0.5, 0.25) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        projected_wall(-1, 0.001, 0.0, 0.0)


def test_projected_ratio_favours_fewer_round_trips_as_the_path_grows() -> None:
    ours = Cost(wall_s=2.0, round_trips=1_000, server_cpu_s=1.7, client_cpu_s=0.5)
    reference = Cost(wall_s=8.0, round_trips=100_000, server_cpu_s=1.0, client_cpu_s=1.0)
    near = projected_ratio(ours, reference, 0.00003)
    far = projected_ratio(ours, reference, 0.001)
    assert far < near
    assert far == pytest.approx((1.0 + 1.7 + 0.5) / (100.0 + 1.0 + 1.0))


def test_median_cost_keeps_one_real_run_together() -> None:
    runs = [Cost(3.0, 30, 0.3, 0.3), Cost(1.0, 10, 0.1, 0.1), Cost(2.0, 20, 0.2, 0.2)]
    assert median_cost(runs) == Cost(2.0, 20, 0.2, 0.2)
    assert median_cost(runs[:2]) == Cost(1.0, 10, 0.1, 0.1)  # even count: the lower middle, a real run
    with pytest.raises(ValueError):
        median_cost([])


def test_rows_render_counts_as_counts_and_times_as_seconds() -> None:
    from bench.measure import Row, render

    table = render([Row("round trips", 1279, 1500, 1.0, unit=""), Row("audit | x", 1.5, 3.0, 0.4)])
    assert "| 1,279 " in table and "| 1,500 " in table and "1279.000s" not in table
    assert "1.500s" in table and "0.500x" in table and "| NO " in table
    assert "audit \\| x" in table  # a Markdown-safe cell


def test_an_absolute_limit_is_met_only_when_ours_is_within_it() -> None:
    from bench.measure import Row, render

    within, over = Row("start-up", 0.30, 0.15, None, limit_s=0.35), Row("start-up", 0.40, 0.15, None, limit_s=0.35)
    assert (within.met, over.met) == ("yes", "NO") and within.target_cell == "<= 0.35s"
    assert Row("both", 0.30, 0.15, 1.5, limit_s=0.35).met == "NO"  # 2x over the ratio target, under the limit
    assert Row("record", 0.30, 0.15, None).met == "-"
    assert "| <= 0.35s " in render([within])


def _entry(id_: int, us: int, command: str, address: str = "127.0.0.1:5000") -> dict[str, object]:
    return {"id": id_, "duration": us, "command": command.encode(), "client_address": address.encode()}


def test_script_calls_take_the_machine_s_stalls_off_our_calls() -> None:
    entries = [  # as SLOWLOG holds them: a script's own commands ("?:0") logged before the script's entry
        _entry(1, 4100, "EVALSHA_RO abc 0 0 * 1000"),
        _entry(2, 20197, "SCAN 0 MATCH * COUNT 250", SCRIPT_CLIENT),
        _entry(3, 400, "TTL k", SCRIPT_CLIENT),  # under STALL_US: could be work, stays counted as ours
        _entry(4, 21839, "EVAL_RO local function tenant_of(k) end"),
        _entry(5, 6100, "EVALSHA_RO abc 0 5 * 2000"),  # over 5 ms with nothing inside over STALL_US: its own
        _entry(6, 1500, "GET k"),  # production traffic between our calls is not inside them
        _entry(7, 600, "TTL k", SCRIPT_CLIENT),
        _entry(8, 3000, "EVALSHA_RO abc 0 9 * 2000"),
    ]
    calls = script_calls(reversed(entries))  # slowlog_get gives the newest first
    assert calls.longest_s == pytest.approx(0.021839)
    assert calls.longest_own_s == pytest.approx(0.0061)  # the 21.8 ms call less its 20.2 ms SCAN is 1.6 ms
    assert calls.stalled == ("21.8 ms, SCAN 0 MATCH in it 20.2 ms", "3.0 ms, TTL k in it 0.6 ms")
    assert "2 calls held a command" in calls.shown() and "longest 21.8 ms as timed" in calls.shown()


def test_script_calls_without_a_stall_show_only_the_longest() -> None:
    calls = script_calls([_entry(1, 4200, "EVALSHA_RO abc"), _entry(2, 900, "SCAN 0 COUNT 10")])
    assert (calls.longest_s, calls.longest_own_s, calls.stalled) == (0.0042, 0.0042, ())
    assert calls.shown() == "longest call 4.2 ms"
    assert script_calls([]).longest_s == 0.0


def test_measured_commands_read_bytecode_as_an_installed_tool_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("PYTHONPYCACHEPREFIX", "/tmp/elsewhere")
    monkeypatch.setenv("PYTHONPATH", "/extra")
    env = tool_env()
    assert "PYTHONDONTWRITEBYTECODE" not in env and "PYTHONPYCACHEPREFIX" not in env
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/extra"]


def test_steal_seconds_reads_the_machine_line_of_proc_stat() -> None:
    stat = "cpu  106982 1775 20896 212043 553 0 9668 111 0 0\ncpu0 4898 0 1854 21013 21 0 32 4 0 0\n"
    assert steal_seconds(stat) == pytest.approx(1.11)
    assert steal_seconds(stat, ticks_per_s=1000) == pytest.approx(0.111)
    assert steal_seconds("cpu  1 2 3 4\n") == 0.0 and steal_seconds("") == 0.0  # an older kernel: none to say
