"""The differences between two world states or fingerprints: what counts as a change, and what does not."""

from __future__ import annotations

from engine.rehearsal.snapshot import State, changed, differences, follow_on


def state(keys=None, config=None, files=None, run_id="r1", service="exit 0: active") -> State:
    keys = {"k": ("string", "d1", -1)} if keys is None else keys
    return State(
        redis={
            "up": True,
            "run_id": run_id,
            "config": config or {"maxmemory": "0"},
            "dbsize": len(keys),
            "digest": str(sorted(keys.items())),
            "keys": keys,
        },
        files=files or {"/w/dump.rdb": (10, "0o644", "aa")},
        service=service,
    )


def test_the_same_state_has_no_difference():
    assert differences(state(), state()) == []


def test_each_kind_of_change_is_named():
    before = state()
    assert differences(before, state(keys={"k": ("string", "d2", -1)})) == [
        "key k: ('string', 'd1', -1) -> ('string', 'd2', -1)"
    ]
    assert differences(before, state(keys={"k": ("string", "d1", 1700000000000)})) == [
        "key k: ('string', 'd1', -1) -> ('string', 'd1', 1700000000000)"  # an EXPIRE: the absolute expiry moved
    ]
    assert differences(before, state(keys={**before.redis["keys"], "new": ("hash", "x", -1)})) == ["key new appeared"]
    assert differences(before, state(config={"maxmemory": "1"})) == ["config maxmemory: '0' -> '1'"]
    assert differences(before, state(run_id="r2")) == ["redis restarted (run_id changed)"]
    assert differences(before, state(files={"/w/dump.rdb": (10, "0o644", "bb")})) == [
        "file /w/dump.rdb: (10, '0o644', 'aa') -> (10, '0o644', 'bb')"
    ]
    assert differences(before, state(service="exit 3: inactive")) == [
        "service status: exit 0: active -> exit 3: inactive"
    ]


def test_a_save_running_before_a_dry_run_may_write_its_dump_but_nothing_else_may_change():
    """A BGSAVE the world started before the dry run writes temp-<pid>.rdb, then dump.rdb, by itself."""
    saving = state()
    saving.redis["background"] = True
    written = {"/w/dump.rdb": (12, "0o644", "bb"), "/w/temp-42.rdb": (8, "0o644", "cc")}
    assert differences(saving, state(files=written)) == []
    assert differences(state(), state(files=written)) == [  # no save running before: the dry run's doing
        "file /w/dump.rdb: (10, '0o644', 'aa') -> (12, '0o644', 'bb')",
        "file /w/temp-42.rdb appeared",
    ]
    assert differences(saving, state(files={**written, "/w/redis.conf": (1, "0o644", "x")})) == [
        "file /w/redis.conf appeared"
    ]


def fingerprint(dirty=0, saves=(0, 1), background=False, files=None, run_id="r1"):
    return {
        "redis": {
            "up": True,
            "run_id": run_id,
            "config": {},
            "saves": saves,
            "dirty": dirty,
            "background": background,
        },
        "files": files or {"/w/dump.rdb": (10, "0o644", 1, 2)},
    }


def test_a_write_between_two_steps_is_a_change():
    assert changed(fingerprint(dirty=3), fingerprint(dirty=4)) == [
        "the dataset changed (Redis counted writes or a save)"
    ]
    assert changed(fingerprint(), fingerprint(run_id="r2")) == ["redis restarted (run_id changed)"]


def test_a_file_replaced_behind_the_gate_is_a_change():
    (line,) = changed(fingerprint(), fingerprint(files={"/w/dump.rdb": (10, "0o644", 9, 3)}))
    assert line.startswith("file /w/dump.rdb:")


def test_a_background_save_ending_during_a_later_step_is_not_that_steps_change():
    during = fingerprint(dirty=5, background=True)
    saved = fingerprint(dirty=0, saves=(1, 2), files={"/w/dump.rdb": (12, "0o644", 5, 9)})
    assert changed(during, saved) == []
    # without a save in progress, the same new dump is a change
    assert changed(fingerprint(dirty=5), saved) != []


def test_a_save_running_on_one_node_covers_its_own_files_not_another_node_s():
    """A replica's approved BGSAVE ending does not hide a dump the primary wrote behind the gate."""

    def world(saving: bool, files: dict) -> dict:
        out = fingerprint(files=files)
        out["redis"]["config"] = {"dir": "/p"}
        replica = {**fingerprint()["redis"], "config": {"dir": "/r"}, "background": saving, "role": "replica"}
        out["others"] = {"127.0.0.1:7002": replica}
        return out

    before = world(True, {"/r/dump.rdb": (10, "0o644", 1, 2), "/r/temp-7.rdb": (5, "0o644", 1, 3)})
    replica_saved = {"/r/dump.rdb": (12, "0o644", 5, 9)}
    assert changed(before, world(False, replica_saved)) == []
    primary_too = {**replica_saved, "/p/dump.rdb": (12, "0o644", 5, 10)}
    assert changed(before, world(False, primary_too)) == ["file /p/dump.rdb appeared"]


def test_a_failover_s_config_rewrite_is_follow_on_with_its_temporary_file_but_no_other_file():
    assert follow_on("127.0.0.1:7001: file /tmp/runbook-redis-x/redis.conf: 10 -> 12 bytes")
    assert follow_on("127.0.0.1:7001: file /tmp/runbook-redis-x/redis.conf.MYs0vF appeared")  # CONFIG REWRITE's temp
    assert follow_on("file /tmp/runbook-redis-x/redis.conf.MYs0vF removed")
    assert not follow_on("file /tmp/runbook-redis-x/redis.conf.bak appeared")
    assert not follow_on("127.0.0.1:7001: file /tmp/runbook-redis-x/dump.rdb appeared")


def test_a_running_save_covers_its_directory_however_the_path_to_it_is_spelled(tmp_path):
    """CONFIG GET dir is the server's resolved cwd; the files are read under the path the world gave it."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    seen = str(tmp_path / "link")

    def world(saving: bool, files: dict) -> dict:
        out = fingerprint(background=saving, files=files)
        out["redis"]["config"] = {"dir": str(real)}
        return out

    before = world(True, {f"{seen}/dump.rdb": (10, "0o644", 1, 2)})
    assert changed(before, world(False, {f"{seen}/dump.rdb": (12, "0o644", 5, 9)})) == []
