"""RDB files and the replication stream, without a server: header, trailer, check-rdb output, framing."""

from __future__ import annotations

import io
import os

import pytest

from engine.backup import rdb
from engine.backup.crc64 import crc64
from tests.unit.test_backup_crc64 import REAL_DUMP, REAL_RDB

CHECK_OK = """[offset 0] Checking RDB file dump.rdb
[offset 27] AUX FIELD redis-ver = '7.0.15'
[offset 41] AUX FIELD redis-bits = '64'
[offset 82] Selecting DB ID 0
[offset 130] Checksum OK
[offset 130] \\o/ RDB looks OK! \\o/
[info] 3 keys read
[info] 1 expires
[info] 0 already expired
"""
CHECK_TRUNCATED = """[offset 0] Checking RDB file trunc.rdb
[offset 27] AUX FIELD redis-ver = '7.0.15'
--- RDB ERROR DETECTED ---
[offset 55] Unexpected EOF reading RDB file
[additional info] While doing: read-aux
[additional info] Reading type 0 (string)
[info] 0 keys read
[info] 0 expires
[info] 0 already expired
"""


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_header_magic_and_version():
    assert rdb.parse_header(b"REDIS0010") == {"magic_ok": True, "version": 10, "magic": "REDIS"}
    assert rdb.parse_header(b"REDIS0011")["version"] == 11
    assert rdb.parse_header(b"RADIS0010")["magic_ok"] is False
    assert rdb.parse_header(b"REDIS00x0")["version"] is None
    assert rdb.parse_header(b"RED")["version"] is None


def test_dump_payload_version():
    assert rdb.dump_payload_version(REAL_DUMP) == 10
    assert rdb.dump_payload_version(b"short") is None


def test_a_real_rdb_verifies(tmp_path):
    out = rdb.verify_file(write(tmp_path, "ok.rdb", REAL_RDB))
    assert out["exists"] and out["magic_ok"] and out["version"] == 10 and out["eof_ok"]
    assert out["checksum_ok"] is True and out["checksum_disabled"] is False
    assert out["checksum_stored"] == out["checksum_computed"] == f"{crc64(REAL_RDB[:-8]):016x}"
    assert out["bytes"] == len(REAL_RDB) and out["problems"] == []


def test_a_flipped_byte_breaks_the_crc(tmp_path):
    data = bytearray(REAL_RDB)
    data[40] ^= 0x01
    out = rdb.verify_file(write(tmp_path, "flip.rdb", bytes(data)))
    assert out["magic_ok"] and out["eof_ok"] and out["checksum_ok"] is False
    assert any("CRC64 mismatch" in p for p in out["problems"])


def test_a_truncated_file_has_no_eof_opcode(tmp_path):
    out = rdb.verify_file(write(tmp_path, "cut.rdb", REAL_RDB[:100]))
    assert out["magic_ok"] and out["eof_ok"] is False and out["checksum_ok"] is False
    assert any("truncated" in p for p in out["problems"])


def test_a_tiny_file_is_truncated(tmp_path):
    out = rdb.verify_file(write(tmp_path, "tiny.rdb", b"REDIS0010"))
    assert out["problems"] and "truncated" in out["problems"][-1] and out["checksum_ok"] is None


def test_wrong_magic(tmp_path):
    out = rdb.verify_file(write(tmp_path, "magic.rdb", b"RADIS" + REAL_RDB[5:]))
    assert out["magic_ok"] is False
    assert any("not an RDB file" in p for p in out["problems"])


def test_missing_file(tmp_path):
    out = rdb.verify_file(tmp_path / "nope.rdb")
    assert out["exists"] is False and "not found" in out["problems"][0]


def test_checksum_disabled_is_not_a_failure(tmp_path):
    # rdbchecksum no writes eight zero bytes
    out = rdb.verify_file(write(tmp_path, "nocrc.rdb", REAL_RDB[:-8] + bytes(8)))
    assert out["checksum_disabled"] is True and out["checksum_ok"] is None and out["problems"] == []


def test_old_versions_have_no_checksum(tmp_path):
    out = rdb.verify_file(write(tmp_path, "v4.rdb", b"REDIS0004" + b"\xfe\x00" + b"\xff"))
    assert out["version"] == 4 and out["eof_ok"] and out["checksum_ok"] is None and out["problems"] == []


def test_check_rdb_ok_output():
    parsed = rdb.parse_check_rdb(CHECK_OK, 0)
    assert parsed["ok"] is True and parsed["keys"] == 3 and parsed["expires"] == 1
    assert parsed["already_expired"] == 0 and parsed["redis_ver"] == "7.0.15" and parsed["error"] is None


def test_check_rdb_error_output():
    parsed = rdb.parse_check_rdb(CHECK_TRUNCATED, 1)
    assert parsed["ok"] is False and parsed["keys"] == 0
    assert parsed["error"].startswith("at offset 55: Unexpected EOF reading RDB file")
    assert "While doing: read-aux" in parsed["error"]


def test_check_rdb_unavailable():
    assert rdb.run_check_rdb("/x.rdb", binary=None) == {"available": False, "ok": None, "error": None}


def test_encode_command():
    assert rdb.encode_command("AUTH", "p w") == b"*2\r\n$4\r\nAUTH\r\n$3\r\np w\r\n"


def chunks(*parts: bytes):
    """A recv() that hands out the given chunks one by one, then EOF."""
    queue = list(parts)
    return lambda n: queue.pop(0) if queue else b""


def test_preamble_skips_keepalives_and_reads_fullresync_then_length():
    stream = rdb.ReplicationStream(chunks(b"\n", b"\n+FULLRESYNC abc123 4", b"2\r\n\n\n$5\r\nREDIS"))
    head = stream.preamble()
    assert head["replid"] == "abc123" and head["offset"] == 42
    assert head["mode"] == "disk" and head["length"] == 5 and stream.keepalives == 4
    got = io.BytesIO()
    assert stream.copy_payload(head, got.write) == 5 and got.getvalue() == b"REDIS"


def test_diskless_payload_ends_at_the_mark_even_across_reads():
    mark = b"0123456789" * 4
    payload = os.urandom(3000)
    wire = b"+FULLRESYNC id 0\r\n$EOF:" + mark + b"\r\n" + payload + mark + b"*1\r\n$4\r\nPING\r\n"
    # cut the stream so that the mark straddles reads
    cut = [wire[:30], wire[30:1000], wire[1000 : len(wire) - 50], wire[len(wire) - 50 : len(wire) - 30], wire[-30:]]
    stream = rdb.ReplicationStream(chunks(*cut))
    head = stream.preamble()
    assert head["mode"] == "diskless" and head["mark"] == mark
    got = io.BytesIO()
    assert stream.copy_payload(head, got.write) == len(payload)
    assert got.getvalue() == payload


def test_error_reply_is_refused():
    stream = rdb.ReplicationStream(chunks(b"-NOPERM this user has no permissions to run the 'psync' command\r\n"))
    with pytest.raises(rdb.RdbError, match="refused the sync: NOPERM"):
        stream.preamble()


def test_a_connection_closed_mid_payload_fails():
    stream = rdb.ReplicationStream(chunks(b"$100\r\nREDIS0010"))
    head = stream.preamble()
    with pytest.raises(rdb.RdbError, match="closed the connection"):
        stream.copy_payload(head, lambda data: None)


def test_bad_eof_mark_length():
    with pytest.raises(rdb.RdbError, match="EOF mark"):
        rdb.ReplicationStream(chunks(b"$EOF:short\r\n")).preamble()


def test_write_atomically_never_overwrites(tmp_path):
    path, result = rdb.write_atomically(tmp_path / "sub", "a.rdb", lambda fh: fh.write(b"REDIS"))
    assert path.read_bytes() == b"REDIS" and result == 5
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(rdb.RdbError, match="never overwritten"):
        rdb.write_atomically(tmp_path / "sub", "a.rdb", lambda fh: fh.write(b"other"))
    assert path.read_bytes() == b"REDIS"


def test_write_atomically_leaves_nothing_on_failure(tmp_path):
    def fail(fh):
        fh.write(b"partial")
        raise rdb.RdbError("cut off")

    with pytest.raises(rdb.RdbError):
        rdb.write_atomically(tmp_path, "b.rdb", fail)
    assert list(tmp_path.iterdir()) == []
