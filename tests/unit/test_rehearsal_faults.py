"""The pure parts of the fault registry: AOF record boundaries, where a truncation cuts, the registry itself."""

from __future__ import annotations

import pytest

from engine.rehearsal import faults


def resp(*argv: str | bytes) -> bytes:
    """One command as Redis appends it to an AOF."""
    out = b"*%d\r\n" % len(argv)
    for arg in argv:
        data = arg.encode() if isinstance(arg, str) else arg
        out += b"$%d\r\n%s\r\n" % (len(data), data)
    return out


AOF = resp("SELECT", "0") + resp("SET", "k", "hello") + resp("HSET", "h", "f", "va\r\nlue with a CRLF")


def test_record_starts_finds_every_command_even_with_crlf_inside_a_value():
    first = len(resp("SELECT", "0"))
    second = first + len(resp("SET", "k", "hello"))
    assert faults.record_starts(AOF) == [0, first, second]


def test_record_starts_skips_timestamp_annotations():
    annotated = b"#TS:1700000000\r\n" + AOF
    assert len(faults.record_starts(annotated)) == 3


def test_record_starts_refuses_what_is_not_an_aof():
    with pytest.raises(ValueError, match="not an AOF record at byte 0"):
        faults.record_starts(b"REDIS0011\xfa")


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99, 1.0])
def test_the_cut_always_lands_strictly_inside_the_last_command(keep):
    last = faults.record_starts(AOF)[-1]
    cut, complete = faults.cut_inside_last_record(AOF, keep)
    assert last < cut < len(AOF)  # at least one byte of it kept, at least one lost: half-written
    assert complete == 2
    assert faults.record_starts(AOF[:last]) == faults.record_starts(AOF)[:2]  # the commands before are whole


def test_a_file_with_a_single_command_cannot_be_cut_meaningfully():
    with pytest.raises(ValueError, match="1 command"):
        faults.cut_inside_last_record(resp("SELECT", "0"), 0.5)


def test_every_documented_fault_is_registered_and_unknown_ones_are_named():
    documented = {
        "redis",
        "save",
        "backup",
        "flushall",
        "delete",
        "fill_until_oom",
        "leak_keys",
        "idle_connections",
        "slow_client",
        "blocked_client",
        "stalled_reader",
        "client_burst",
        "fill_clients",
        "host_command",
        "kill_redis",
        "stop_redis",
        "somabrain_health",
        "start_fails",
        "service",
        "wait",
        "corrupt",
        "age_file",
        "truncate_aof",
        "run_procedure",
        "snapshot",
        "config_snapshot",
        "acl_file",
        "failed_logins",
        "file_size_limit",
        "no_config_file",
        "acl_user",
        "host_script",
        "inventory",
        "append_to_file",
        "write_file",
        # deployment worlds (engine/rehearsal/topology_faults.py)
        "replica_link_broken",
        "replica_lagging",
        "kill_primary",
        "kill_replica",
        "cluster_node_down",
        "cluster_open_slot",
        "flapping_replica",
        "node_snapshot",
        "config_file_line",
        "replica_down",
        "sentinels_down",
    }
    assert set(faults.FAULTS) == documented
    with pytest.raises(ValueError, match=r"unknown fault 'meteor' \(known: acl_file, .*, backup, "):
        faults.apply(None, {"meteor": {}})  # type: ignore[arg-type]


class _PaperWorld:
    """What the file-only faults touch: an inventory path and the world's template values."""

    def __init__(self, directory):
        self.inventory_path = directory / "inventory.yaml"
        self.directory = directory

    def template_values(self):
        return {"directory": str(self.directory), "data_dir": str(self.directory / "data")}


def _inventory_file(path):
    import yaml

    target = {"redis": {"url": "redis://127.0.0.1:1/0"}, "ssh": {"service_user": "redis", "paths": {"rdb": "/x"}}}
    path.write_text(yaml.safe_dump({"environments": {"sandbox": {"targets": {"rehearsal": target}}}}))


def test_the_inventory_fault_sets_and_removes_what_the_procedure_is_told(tmp_path):
    import yaml

    world = _PaperWorld(tmp_path)
    _inventory_file(world.inventory_path)
    faults.apply(
        world, {"inventory": {"set": {"ssh.paths.rdb": "{{ world.data_dir }}/old.rdb"}, "unset": ["ssh.service_user"]}}
    )  # type: ignore[arg-type]
    ssh = yaml.safe_load(world.inventory_path.read_text())["environments"]["sandbox"]["targets"]["rehearsal"]["ssh"]
    assert ssh == {"paths": {"rdb": f"{tmp_path}/data/old.rdb"}}
    with pytest.raises(RuntimeError, match=r"ssh\.service_user is not in the inventory"):  # nothing to remove
        faults.apply(world, {"inventory": {"unset": ["ssh.service_user"]}})  # type: ignore[arg-type]


def test_append_to_file_appends_and_refuses_a_missing_file(tmp_path):
    world = _PaperWorld(tmp_path)
    (tmp_path / "export.jsonl").write_text("{}\n")
    faults.apply(world, {"append_to_file": {"path": "{{ world.directory }}/export.jsonl", "text": "x\n", "times": 3}})  # type: ignore[arg-type]
    assert (tmp_path / "export.jsonl").read_text() == "{}\nx\nx\nx\n"
    with pytest.raises(RuntimeError, match="is not a file"):
        faults.apply(world, {"append_to_file": {"path": "{{ world.directory }}/missing.jsonl"}})  # type: ignore[arg-type]


def test_write_file_writes_a_new_file_and_refuses_an_existing_one(tmp_path):
    world = _PaperWorld(tmp_path)
    world.vars = {}
    args = {"path": "{{ world.directory }}/baseline.yaml", "text": "dir: {{ world.data_dir }}\n"}
    faults.apply(world, {"write_file": args})  # type: ignore[arg-type]
    assert (tmp_path / "baseline.yaml").read_text() == f"dir: {tmp_path / 'data'}\n"
    assert world.vars["written_files"] == [str(tmp_path / "baseline.yaml")]
    with pytest.raises(RuntimeError, match="exists already"):
        faults.apply(world, {"write_file": args})  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="is not a directory"):
        faults.apply(world, {"write_file": {"path": "{{ world.directory }}/nowhere/b.yaml"}})  # type: ignore[arg-type]


def test_age_file_sets_a_backups_modification_time_back_and_refuses_an_unknown_file(tmp_path):
    import time

    world = _PaperWorld(tmp_path)
    backup = tmp_path / "nightly.rdb"
    backup.write_bytes(b"REDIS0011")
    world.vars = {"nightly": str(backup)}  # type: ignore[attr-defined]
    faults.apply(world, {"age_file": {"file": "nightly", "age": "27h"}})  # type: ignore[arg-type]
    assert 27 * 3600 <= time.time() - backup.stat().st_mtime < 27 * 3600 + 60
    assert world.vars["aged_nightly"] == 27 * 3600  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="not a file of this world"):
        faults.apply(world, {"age_file": {"file": "weekly", "age": "1h"}})  # type: ignore[arg-type]
