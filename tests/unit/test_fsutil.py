"""engine/fsutil.py and its writers on real files: nothing followed, nothing truncated, nothing hangs.

Temporary names are random; to plant a symlink where the engine will create one, the tests fix the
random part (monkeypatching secrets.token_hex), which is what a successful guess would be.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from engine import fsutil
from engine.backup import keyfile, rdb
from engine.backup.keyfile import KeyFileError, KeyFileWriter, KeyRecord, UnsafeInput

TOKEN = "0123456789abcdef"


@pytest.fixture
def guessed(monkeypatch):
    """Make every temp name predictable, as if an attacker had guessed it."""
    monkeypatch.setattr(fsutil.secrets, "token_hex", lambda n=None: TOKEN)
    return TOKEN


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "victim"
    path.write_text("precious")
    return path


def record(n: int) -> KeyRecord:
    return KeyRecord(key=f"tenant:acme:k{n}".encode(), type="string", pttl=-1, payload=b"\x00\x01x" + bytes(10))


def assert_untouched(victim: Path) -> None:
    assert victim.read_text() == "precious"


# -- temp names ------------------------------------------------------------------------------------
def test_temp_names_are_unpredictable_and_never_the_pid(tmp_path):
    with fsutil.Directory.open(tmp_path) as directory:
        names = [directory.create_temp("x.jsonl", "tmp")[0] for _ in range(3)]
    assert len(set(names)) == 3
    assert all(str(os.getpid()) not in name for name in names)
    assert all(stat.S_IMODE((tmp_path / n).stat().st_mode) == 0o600 for n in names)


# -- a symlink planted at every name the engine creates ---------------------------------------------
def test_export_body_temp_is_never_followed(tmp_path, victim, guessed):
    (tmp_path / f".out.jsonl.body-{guessed}").symlink_to(victim)
    with pytest.raises(FileExistsError):
        KeyFileWriter(tmp_path / "out.jsonl", {"match": "tenant:acme:*"})
    assert_untouched(victim)
    assert not (tmp_path / "out.jsonl").exists()


def test_export_assembly_temp_is_never_followed(tmp_path, victim, guessed):
    (tmp_path / f".out.jsonl.tmp-{guessed}").symlink_to(victim)
    with pytest.raises(FileExistsError), KeyFileWriter(tmp_path / "out.jsonl", {"match": "tenant:acme:*"}) as writer:
        writer.add(record(1))
        writer.commit()
    assert_untouched(victim)
    assert not (tmp_path / "out.jsonl").exists()
    assert not (tmp_path / f".out.jsonl.body-{guessed}").exists()  # its own temp is cleaned up


def test_export_output_symlink_is_refused(tmp_path, victim):
    (tmp_path / "out.jsonl").symlink_to(victim)
    with pytest.raises(KeyFileError, match="already exists"):
        KeyFileWriter(tmp_path / "out.jsonl", {"match": "tenant:acme:*"})
    assert_untouched(victim)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "victim"]


def test_export_output_appearing_during_the_export_is_not_replaced(tmp_path, victim):
    with KeyFileWriter(tmp_path / "out.jsonl", {"match": "tenant:acme:*"}) as writer:
        writer.add(record(1))
        (tmp_path / "out.jsonl").symlink_to(victim)  # planted while the export runs
        with pytest.raises(KeyFileError, match="appeared while exporting"):
            writer.commit()
    assert_untouched(victim)
    assert (tmp_path / "out.jsonl").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "victim"]


def test_a_dry_run_export_creates_no_file(tmp_path):
    with KeyFileWriter(tmp_path / "out.jsonl", {"match": "tenant:acme:*"}, write=False) as writer:
        for n in range(3):
            writer.add(record(n))
        result = writer.commit()
    assert list(tmp_path.iterdir()) == []
    assert result["written"] is False and result["key_count"] == 3 and result["sha256"] is None
    with KeyFileWriter(tmp_path / "real.jsonl", {"match": "tenant:acme:*"}) as writer:
        for n in range(3):
            writer.add(record(n))
        real = writer.commit()
    assert abs(real["bytes"] - result["bytes"]) < 200  # the same, but for header timestamps/paths


def test_rdb_download_temp_is_never_followed(tmp_path, victim, guessed):
    (tmp_path / f".dump.rdb.part-{guessed}").symlink_to(victim)
    with pytest.raises(FileExistsError):
        rdb.write_atomically(tmp_path, "dump.rdb", lambda fh: fh.write(b"REDIS0011"))
    assert_untouched(victim)
    assert not (tmp_path / "dump.rdb").exists()


def test_rdb_download_output_symlink_is_refused(tmp_path, victim):
    (tmp_path / "dump.rdb").symlink_to(victim)
    with pytest.raises(rdb.RdbError, match="never overwritten"):
        rdb.write_atomically(tmp_path, "dump.rdb", lambda fh: fh.write(b"REDIS0011"))
    assert_untouched(victim)


def test_replacing_write_temp_is_never_followed(tmp_path, victim, guessed):
    (tmp_path / f".redis.pass.tmp-{guessed}").symlink_to(victim)
    with pytest.raises(FileExistsError):
        fsutil.write_file(tmp_path / "redis.pass", b"new", replace=True)
    assert_untouched(victim)


def test_replacing_write_refuses_a_symlink_at_the_final_name(tmp_path, victim):
    (tmp_path / "redis.pass").symlink_to(victim)
    with pytest.raises(fsutil.UnsafeFileError, match="symbolic link"):
        fsutil.write_file(tmp_path / "redis.pass", b"new", replace=True)
    assert_untouched(victim)
    assert (tmp_path / "redis.pass").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["redis.pass", "victim"]  # temp removed


def test_replacing_write_swaps_the_file_and_never_truncates_it_in_place(tmp_path):
    path = tmp_path / "redis.pass"
    path.write_text("old")
    with open(path) as reader:  # someone holding the old file keeps reading the old content
        fsutil.write_file(path, b"new", mode=0o600, replace=True)
        assert reader.read() == "old"
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_world_writable_directory_without_sticky_bit_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(fsutil.UnsafeFileError, match="writable by every user"):
        fsutil.write_file(shared / "x.jsonl", b"data")
    shared.chmod(0o1777)  # like /tmp: sticky, so others cannot replace our files
    fsutil.write_file(shared / "x.jsonl", b"data")
    assert (shared / "x.jsonl").read_bytes() == b"data"


# -- reading user-named files ----------------------------------------------------------------------
def hostile(kind: str, tmp_path: Path) -> str:
    if kind == "dev-zero":
        return "/dev/zero"
    path = tmp_path / kind
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    return str(path)


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("fifo", r"a FIFO \(named pipe\)"),
        ("dev-zero", "a character device"),
        ("directory", "a directory"),
        ("socket", "socket"),
    ],
)
def test_only_regular_files_are_read(tmp_path, kind, why):
    path = hostile(kind, tmp_path)
    with pytest.raises(fsutil.UnsafeFileError, match=why):
        fsutil.read_regular(path, max_bytes=1024, what="the input")


def test_a_file_over_its_cap_is_refused_before_reading(tmp_path):
    path = tmp_path / "big"
    with open(path, "wb") as fh:
        fh.truncate(fsutil.LOCAL_READ_MAX_BYTES + 1)
    with pytest.raises(fsutil.UnsafeFileError, match="more than the 16 MiB allowed"):
        fsutil.read_regular(path, max_bytes=fsutil.LOCAL_READ_MAX_BYTES)
    path.write_bytes(b"x" * 10)
    assert fsutil.read_regular(path, max_bytes=10) == b"x" * 10


def test_a_symlink_to_a_regular_file_is_read(tmp_path):
    """Secrets are often mounted as symlinks (Kubernetes): reading follows them, and checks the target."""
    (tmp_path / "real").write_text("pw")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert fsutil.read_text(tmp_path / "link", max_bytes=10) == "pw"
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "to-fifo").symlink_to(tmp_path / "fifo")
    with pytest.raises(fsutil.UnsafeFileError, match="FIFO"):
        fsutil.read_text(tmp_path / "to-fifo", max_bytes=10)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_an_export_to_restore_must_be_a_regular_file(tmp_path, kind):
    with pytest.raises(UnsafeInput, match="not a regular file"):
        keyfile.verify(hostile(kind, tmp_path))


def test_an_export_line_over_the_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(keyfile, "KEY_RECORD_MAX_BYTES", 64)
    path = tmp_path / "long.jsonl"
    path.write_bytes(b'{"format": "runbook-keys"}\n' + b"x" * 1000)  # no newline: one endless line
    with pytest.raises(UnsafeInput, match="line 2 is longer than 64 bytes"):
        keyfile.verify(path)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_an_rdb_to_verify_must_be_a_regular_file(tmp_path, kind):
    with pytest.raises(fsutil.UnsafeFileError, match="not a regular file"):
        rdb.verify_file(hostile(kind, tmp_path))


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_load_procedure_refuses_what_is_not_a_regular_file_without_blocking(tmp_path, kind):
    """Callers name regular files, but a path from a hostile catalog must end in an error, never a hang."""
    from engine.errors import UsageError
    from engine.spec.loader import load_procedure

    with pytest.raises(UsageError) as caught:
        load_procedure(Path(hostile(kind, tmp_path)))
    assert "not a regular file" in str(caught.value.errors[0])
