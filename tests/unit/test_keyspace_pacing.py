"""The pacing controller of keyspace scans: budgets and pauses from what the server is doing (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.keyspace import pacing
from engine.keyspace.pacing import Activity, Observation, Policy

POLICY = Policy(busy_budget_s=0.0015, min_budget_s=0.00025, idle_budget_s=0.004, floor=100, ceiling=4000)
REMOTE_1MS = Activity(rtt_s=0.001, others=0, seconds=0.1, same_host=False)


def _call(count: int, per_key_s: float, others: int | None, seconds: float = 0.01, rtt: float = 0.001):
    server = count * per_key_s
    return Observation(count, server, server + rtt, others, seconds)


def test_state_is_frozen() -> None:
    state = pacing.begin(POLICY, 1000, REMOTE_1MS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.count = 5  # type: ignore[misc]


def test_an_idle_server_grows_the_budget_to_the_idle_ceiling_without_pauses() -> None:
    state = pacing.begin(POLICY, 1000, REMOTE_1MS)
    assert not state.busy and state.budget_s == 0.0015  # starts at the busy budget, grows from there
    budgets, pauses = [], []
    for _ in range(6):
        state, pause = pacing.step(state, _call(state.count, 1e-6, others=0))
        budgets.append(state.budget_s)
        pauses.append(pause)
    assert budgets[:3] == [0.003, 0.004, 0.004]
    assert pauses == [0.0] * 6
    assert state.count == 4000  # 4 ms at 1 us a key, capped by the ceiling; grown at most twofold per call
    assert state.busy_calls == 0


def test_the_first_call_that_sees_another_client_shrinks_the_budget_and_pauses() -> None:
    state = pacing.begin(POLICY, 1000, REMOTE_1MS)
    for _ in range(4):
        state, _ = pacing.step(state, _call(state.count, 1e-6, others=0))
    assert state.budget_s == 0.004
    state, pause = pacing.step(state, _call(state.count, 1e-6, others=3, rtt=0.0))
    assert state.busy and state.budget_s == 0.0015
    assert state.count == 1500  # the busy budget over the measured cost per key
    assert pause == pytest.approx(0.004 * 1.0)  # duty 50%: as long free as the call took, none of it network


def test_the_server_counts_as_idle_again_only_after_a_quiet_window() -> None:
    busy = pacing.begin(POLICY, 1000, dataclasses.replace(REMOTE_1MS, others=12))
    assert busy.busy
    state, _ = pacing.step(busy, _call(1000, 1e-6, others=0, seconds=0.04))
    state, _ = pacing.step(state, _call(1000, 1e-6, others=0, seconds=0.04))
    assert state.busy and state.budget_s == 0.0015  # 80 ms of quiet: not yet
    state, _ = pacing.step(state, _call(1000, 1e-6, others=0, seconds=0.04))
    assert not state.busy and state.budget_s == 0.003  # 120 ms: idle, the budget starts growing


def test_a_server_that_will_not_say_counts_as_busy() -> None:
    state = pacing.begin(POLICY, 1000, dataclasses.replace(REMOTE_1MS, others=None))
    assert state.busy
    state, pause = pacing.step(state, _call(1000, 1e-6, others=None, rtt=0.0))
    assert state.busy and state.budget_s == 0.00025 and pause > 0  # calls cost nothing besides: the shortest


def test_the_busy_budget_is_twice_what_a_call_costs_besides_the_servers_work() -> None:
    assert POLICY.busy_budget(0.0001) == 0.00025
    assert POLICY.busy_budget(0.0005) == 0.001
    assert POLICY.busy_budget(0.004) == 0.0015
    lan = Activity(rtt_s=0.0001, others=50, seconds=0.1, same_host=False)
    state = pacing.begin(POLICY, 1000, lan)
    assert state.budget_s == 0.00025  # from the PING, before any call
    for _ in range(4):  # a slow path: each call costs 0.6 ms besides the server's work
        server = state.count * 1e-6
        state, _ = pacing.step(state, Observation(state.count, server, server + 0.0006, 5, 0.01))
    assert state.budget_s == pytest.approx(0.0012)
    assert state.count in (1199, 1200)  # 1.2 ms at 1 us a key: fewer, longer calls where each costs more anyway


def test_through_a_local_proxy_the_budget_follows_the_paths_round_trip() -> None:
    """The server's address is this machine's, but its quickest round trip is 1.3 ms (a TLS tunnel, a proxy, a
    relay): each call costs that whatever the scheduling, so the calls are as long as over a network."""
    proxied = Activity(rtt_s=0.0013, others=50, seconds=0.1, same_host=True)
    state = pacing.begin(POLICY, 1000, proxied)
    assert state.budget_s == 0.0015 and not state.same_host
    server = state.count * 1e-6
    state, _ = pacing.step(state, Observation(state.count, server, server + 0.0013, 5, 0.01))
    assert state.budget_s == 0.0015
    assert "the shortest, on the server's own host" not in pacing.summary(state)


def test_on_the_servers_own_host_the_busy_budget_stays_the_shortest() -> None:
    """There a production request that arrives during a call waits for the rest of it, so production's p99
    rises by about as much as a call lasts: one sub-step of the fewest keys, whatever a call costs besides."""
    assert POLICY.busy_budget(0.004, same_host=True) == 0.00002
    loopback = Activity(rtt_s=0.00005, others=50, seconds=0.1, same_host=True)
    state = pacing.begin(POLICY, 1000, loopback)
    for _ in range(4):  # a loaded machine: each call costs 0.6 ms of scheduling and client work besides
        server = state.count * 1e-6
        state, _ = pacing.step(state, Observation(state.count, server, server + 0.0006, 5, 0.01))
    assert state.budget_s == 0.00002 and state.count == 100
    assert pacing.sub_step(state) == POLICY.sub_floor == 10  # one sub-step of 10 keys fills the budget
    assert (
        "budget 0.02 ms per call while other clients were active (the shortest, on the server's own host; 4 calls"
        in (pacing.summary(state))
    )
    state, _ = pacing.step(state, Observation(250, 0.00025, 0.0003, 0, 0.2))  # nobody else for 0.2 s
    assert not state.busy and state.budget_s == 0.00004  # an idle server: growing (twofold a call) as anywhere else


def test_a_network_gap_counts_as_free_time_for_the_pause() -> None:
    state = pacing.begin(POLICY, 1000, dataclasses.replace(REMOTE_1MS, others=5))
    _, pause = pacing.step(state, Observation(1000, 0.0015, 0.0016, 5, 0.01))
    assert pause == pytest.approx(0.0014)  # loopback-like: almost no free time yet
    _, pause = pacing.step(state, Observation(1000, 0.0015, 0.0035, 5, 0.01))
    assert pause == 0.0  # a 2 ms network already left the server free long enough


def test_one_stretched_call_does_not_collapse_the_batches() -> None:
    state = pacing.begin(POLICY, 1500, dataclasses.replace(REMOTE_1MS, others=5))
    for _ in range(4):
        state, _ = pacing.step(state, _call(1500, 1e-6, others=5))
    state, _ = pacing.step(state, Observation(1500, 0.030, 0.031, 5, 0.03))  # descheduled mid-script
    assert state.count == 1500
    for _ in range(5):
        state, _ = pacing.step(state, Observation(1500, 0.006, 0.007, 5, 0.01))  # a lasting rise
    assert state.count == 375


def test_batches_stay_within_floor_and_ceiling() -> None:
    state = pacing.begin(POLICY, 100, dataclasses.replace(REMOTE_1MS, others=5))
    state, _ = pacing.step(state, Observation(100, 0.05, 0.05, 5, 0.05))
    assert state.count == 100
    small = dataclasses.replace(POLICY, ceiling=500)
    state = pacing.begin(small, 400, REMOTE_1MS)
    state, _ = pacing.step(state, _call(400, 1e-8, others=0))
    assert state.count == 500


def test_others_between_two_readings_less_our_own() -> None:
    assert pacing.others_between(1000, 1210, 205) == 5
    assert pacing.others_between(1000, 1100, 205) == 0  # never negative
    assert pacing.others_between(-1, 1100, 5) is None  # INFO refused


def test_summary_says_what_the_calls_did_and_why() -> None:
    state = pacing.begin(POLICY, 1000, dataclasses.replace(REMOTE_1MS, others=0))
    assert pacing.summary(state) == "no calls"
    state, _ = pacing.step(state, _call(1000, 1e-6, others=0, seconds=0.1))
    state, _ = pacing.step(state, _call(2000, 1e-6, others=120, seconds=0.1))
    text = pacing.summary(state)
    assert text.startswith("2 calls of 1000-2000 keys, server time 0.00s, longest call 2.0 ms")
    assert "budget 1.5 ms per call while other clients were active (1 calls, up to 1200 commands/s" in text
    assert "a call cost 1.00 ms besides the server's work" in text
    assert "growing to 3 ms while the server was idle (1 calls)" in text
    assert "at most 50% of the time while others were active" in text


def test_the_path_choice_and_its_reason() -> None:
    lan_busy = Activity(rtt_s=0.0001, others=100, seconds=0.1, same_host=False)
    choice = pacing.choose_path(lan_busy)
    assert choice.path == "client-side"
    assert "round trip 0.10 ms, other clients ran 1000 commands/s" in choice.reason
    assert "interleave" in choice.reason
    local_busy = dataclasses.replace(lan_busy, same_host=True, direct=True)
    choice = pacing.choose_path(local_busy)
    assert choice.path == "small-pages" and "own host beside other clients" in choice.reason
    assert choice.reason.startswith("same host, round trip 0.10 ms")
    local_idle = dataclasses.replace(local_busy, others=0)
    assert pacing.choose_path(local_idle).path == "server-side"
    assert pacing.choose_path(dataclasses.replace(local_busy, others=None)).path == "small-pages"
    # the small pages' client takes about a core: with none idle on the server's host, the scripts
    spare = dataclasses.replace(local_busy, idle_cores=1.2, cores=2)
    assert pacing.choose_path(spare).path == "small-pages"
    assert ", 1.2 of 2 cores idle: on the server's own host" in pacing.choose_path(spare).reason
    starved = dataclasses.replace(spare, idle_cores=0.6)
    assert pacing.choose_path(starved).path == "server-side"
    assert "0.6 of 2 cores idle: on the server's own host with no core to spare" in pacing.choose_path(starved).reason
    assert pacing.choose_path(dataclasses.replace(starved, others=0)).reason.endswith("nobody else is using the server")
    lan_idle = dataclasses.replace(lan_busy, others=0)
    assert pacing.choose_path(lan_idle) == pacing.Choice(
        "server-side", "round trip 0.10 ms, other clients ran 0 commands/s: nobody else is using the server"
    )
    far_busy = dataclasses.replace(lan_busy, rtt_s=0.001)
    choice = pacing.choose_path(far_busy)
    assert choice.path == "server-side" and choice.reason.endswith("round trips are dear")
    unknown = dataclasses.replace(lan_busy, others=None)
    choice = pacing.choose_path(unknown)
    assert choice.path == "client-side" and "INFO refused" in choice.reason


def test_on_the_servers_own_host_the_server_naming_our_socket_decides_not_the_round_trip() -> None:
    """A loaded machine stretches loopback PINGs past FAST_RTT_S (0.16-0.25 ms seen): where the server names
    our own socket (CLIENT INFO), the connection is direct whatever the round trip; where it names another
    (a tunnel, a sidecar proxy, a relay), the adapter reports no same host at all; where it will not say, the
    round trip decides as before, and the line says it was not confirmed."""
    seen = Activity(rtt_s=0.00025, others=100, seconds=0.1, same_host=True, idle_cores=1.5, cores=2, direct=True)
    assert seen.reached_directly()
    choice = pacing.choose_path(seen)
    assert choice.path == "small-pages" and choice.reason.startswith("same host, round trip 0.25 ms")
    assert pacing.begin(POLICY, 1000, seen).same_host  # the scripts' shortest calls too
    assert pacing.choose_path(dataclasses.replace(seen, idle_cores=0.5)).path == "server-side"
    idle = pacing.choose_path(dataclasses.replace(seen, others=0))
    assert idle.path == "server-side" and idle.reason.endswith("nobody else is using the server")
    unconfirmed = dataclasses.replace(seen, direct=None)
    assert not unconfirmed.reached_directly() and not pacing.begin(POLICY, 1000, unconfirmed).same_host
    choice = pacing.choose_path(unconfirmed)
    assert choice.path == "server-side" and choice.reason.endswith("round trips are dear")
    assert choice.reason.startswith("same host (not confirmed: CLIENT INFO refused), round trip 0.25 ms")
    quick = dataclasses.replace(unconfirmed, rtt_s=0.0001)
    assert quick.reached_directly() and pacing.choose_path(quick).path == "small-pages"
    # the same host through a local proxy or tunnel that does not confirm: its round trips are dear
    tunnelled = dataclasses.replace(unconfirmed, rtt_s=0.001)
    assert pacing.choose_path(tunnelled).path == "server-side"
    assert pacing.choose_path(tunnelled).reason.endswith("round trips are dear")
    forwarded = dataclasses.replace(seen, same_host=False, direct=False, rtt_s=0.0001)  # as the adapter reports it
    assert not forwarded.reached_directly() and pacing.choose_path(forwarded).path == "client-side"


def test_the_pacer_reports_its_calls_and_says_no_calls_before_any() -> None:
    from engine.keyspace.server_side import Pacer

    pacer = Pacer()
    assert pacer.summary() == "no calls"
    pacer.begin(1000, REMOTE_1MS)
    pause = pacer.observe(_call(1000, 1e-6, others=4, rtt=0.0))
    assert pause == pytest.approx(0.001) and pacer.paused_s == pytest.approx(0.001)
    assert (pacer.calls, pacer.smallest, pacer.largest, pacer.count) == (1, 1000, 1000, 250)
    assert pacer.summary().startswith("1 calls of 1000-1000 keys")
    added = Pacer(calls=3, smallest=100, largest=400, total_s=0.002, longest_s=0.001)  # only figures added
    assert added.summary() == "3 calls of 100-400 keys, server time 0.00s, longest call 1.0 ms, paused 0.00s"


def test_a_sub_step_is_a_quarter_of_the_budget_at_most_half_a_millisecond() -> None:
    """The script stops once its budget is spent, so it overruns it by one sub-step at most: 4.5 ms idle."""
    state = pacing.begin(POLICY, 1000, REMOTE_1MS)
    assert pacing.sub_step(state) == 250  # nothing measured yet: a quarter of the call
    state, _ = pacing.step(state, _call(1000, 1e-6, others=5))
    assert state.budget_s == 0.0015 and pacing.sub_step(state) == 375  # 0.375 ms at 1 us a key
    for _ in range(6):
        state, _ = pacing.step(state, _call(state.count, 1e-6, others=0, seconds=0.2))
    assert state.budget_s == 0.004 and pacing.sub_step(state) == 500  # capped at 0.5 ms
    slow = dataclasses.replace(state, costs=(1e-3,))
    assert pacing.sub_step(slow) == POLICY.sub_floor  # a key costs a millisecond: the fewest keys a sub-step asks


def test_beside_other_clients_a_call_reads_the_command_count_only_every_read_every_s() -> None:
    idle = pacing.begin(POLICY, 1000, REMOTE_1MS)
    assert pacing.wants_reading(idle, 0.0)  # while idle, every call: another client must be seen at once
    busy = pacing.begin(POLICY, 1000, dataclasses.replace(REMOTE_1MS, others=12))
    assert not pacing.wants_reading(busy, POLICY.read_every_s / 2)
    assert pacing.wants_reading(busy, POLICY.read_every_s)


def test_a_call_that_did_not_read_carries_the_servers_state_over() -> None:
    busy = pacing.begin(POLICY, 1000, dataclasses.replace(REMOTE_1MS, others=12))
    unread = dataclasses.replace(_call(1000, 1e-6, others=0, seconds=0.2, rtt=0.0), read=False)
    state, pause = pacing.step(busy, unread)
    # 200 ms "without a command" said nothing: it was not read, so the server still counts as busy
    assert state.busy and state.quiet_for_s == 0.0 and state.busy_calls == 1 and pause > 0
    assert (state.heard, state.heard_s) == (busy.heard, busy.heard_s)
    # the next reading covers the whole stretch since the last one: quiet over it, the server is idle again
    state, _ = pacing.step(state, _call(1000, 1e-6, others=0, seconds=0.2))
    assert not state.busy
    # an idle server stays idle through a call that did not read (none is made while idle, but the rule holds)
    later, _ = pacing.step(state, dataclasses.replace(_call(1000, 1e-6, others=5), read=False))
    assert not later.busy and later.quiet_for_s == state.quiet_for_s


def test_a_watch_is_busy_from_the_first_command_of_another_client_and_idle_after_a_quiet_spell() -> None:
    """A restore has no calls of its own to size: it only asks whether others are active (its pipelines
    are then small), by the same rule as the scans' controller."""
    watch = pacing.Watch(busy=True)  # before the first reading: counted as busy
    watch = pacing.heard(watch, 0, 0.1)
    assert not watch.busy  # nobody else for QUIET_S
    watch = pacing.heard(watch, 3, 0.05)
    assert watch.busy and watch.peak_rate == pytest.approx(60)
    watch = pacing.heard(watch, 0, 0.06)
    assert watch.busy  # quiet for 60 ms: not yet QUIET_S
    watch = pacing.heard(watch, 0, 0.05)
    assert not watch.busy and watch.readings == 4 and watch.busy_readings == 2
    assert pacing.heard(watch, None, 0.05).busy  # the server will not say: counted as busy
