"""The key export format: round trip, checksum, truncation, binary keys, never overwriting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.backup import keyfile
from engine.backup.keyfile import KeyFileError, KeyRecord
from tests.unit.test_backup_crc64 import REAL_DUMP

RECORDS = [
    KeyRecord(b"tenant:acme:wm:active", "hash", 3_600_000, REAL_DUMP),
    KeyRecord(b"tenant:acme:cache:leak:0", "string", -1, b"\x00\x01x\n\x00" + bytes(8)),
    KeyRecord(b"tenant:acme:\xff\xfebinary key", "set", 1, b"\x02payload\n\x00" + bytes(8)),
    KeyRecord("tenant:acme:naïve key with spaces".encode(), "list", 86_400_000, b"\x12\x00\n\x00" + bytes(8)),
]


def export(tmp_path, records=RECORDS, name="acme.keys.jsonl"):
    writer = keyfile.KeyFileWriter(tmp_path / name, {"source": "redis://127.0.0.1:6380/0", "match": "tenant:acme:*"})
    with writer:
        for record in records:
            writer.add(record)
        return writer.commit(redis_version="7.0.15")


def test_round_trip_keeps_every_field(tmp_path):
    summary = export(tmp_path)
    assert summary["key_count"] == 4 and summary["with_ttl"] == 3 and summary["without_ttl"] == 1
    assert summary["types"] == {"hash": 1, "list": 1, "set": 1, "string": 1}
    assert summary["rdb_version"] == 10  # from the first DUMP payload's trailer
    checked = keyfile.verify(summary["path"])
    assert checked["key_count"] == 4 and checked["sha256"] == summary["sha256"]
    assert checked["header"]["source"] == "redis://127.0.0.1:6380/0" and checked["header"]["redis_version"] == "7.0.15"
    assert checked["header"]["keys"] == 4 and checked["header"]["format"] == "runbook-keys"
    assert list(keyfile.records(summary["path"])) == RECORDS
    assert list(tmp_path.iterdir()) == [tmp_path / "acme.keys.jsonl"]  # no temp files left
    assert Path(summary["path"]).stat().st_mode & 0o777 == 0o600  # tenant data: owner only


def test_binary_keys_are_base64_and_text_keys_readable(tmp_path):
    path = export(tmp_path)["path"]
    lines = [json.loads(line) for line in Path(path).read_bytes().splitlines()]
    assert lines[1]["key"] == "tenant:acme:wm:active"
    assert "key_b64" in lines[3] and "key" not in lines[3]
    assert lines[4]["key"] == "tenant:acme:naïve key with spaces"
    assert lines[-1]["trailer"] == "runbook-keys" and lines[-1]["keys"] == 4


@pytest.mark.parametrize("offset", [5, 120, -80])
def test_any_flipped_byte_is_caught(tmp_path, offset):
    path = export(tmp_path)["path"]
    data = bytearray(Path(path).read_bytes())
    trailer_start = data.rindex(b"\n", 0, len(data) - 1) + 1
    position = offset if offset >= 0 else trailer_start + offset
    data[position] ^= 0x04
    Path(path).write_bytes(bytes(data))
    with pytest.raises(KeyFileError):
        keyfile.verify(path)


def test_a_payload_byte_changed_in_base64_fails_the_checksum(tmp_path):
    path = export(tmp_path)["path"]
    text = Path(path).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    record = json.loads(lines[1])
    record["dump"] = record["dump"][:-4] + ("AAAA" if record["dump"][-4:] != "AAAA" else "BBBB")
    lines[1] = json.dumps(record, separators=(",", ":")) + "\n"
    Path(path).write_text("".join(lines), encoding="utf-8")
    with pytest.raises(KeyFileError, match="checksum mismatch"):
        keyfile.verify(path)


def test_a_cut_off_file_is_truncated(tmp_path):
    path = export(tmp_path)["path"]
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    with pytest.raises(KeyFileError, match="truncated"):
        keyfile.verify(path)


def test_a_lost_line_is_caught(tmp_path):
    path = export(tmp_path)["path"]
    lines = Path(path).read_bytes().splitlines(keepends=True)
    Path(path).write_bytes(b"".join(lines[:2] + lines[3:]))
    with pytest.raises(KeyFileError, match="checksum mismatch"):
        keyfile.verify(path)


def test_not_an_export(tmp_path):
    path = tmp_path / "tenant_backup.txt"
    path.write_text("value1\nvalue2\n\n")  # what the runbook's mget writes
    with pytest.raises(KeyFileError, match="not JSON"):
        keyfile.verify(path)
    (tmp_path / "empty").write_text("")
    with pytest.raises(KeyFileError, match="empty"):
        keyfile.verify(tmp_path / "empty")


def test_an_export_is_never_overwritten(tmp_path):
    export(tmp_path)
    with pytest.raises(KeyFileError, match="never overwritten"):
        export(tmp_path)


def test_an_aborted_export_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), keyfile.KeyFileWriter(tmp_path / "x.jsonl", {}) as writer:
        writer.add(RECORDS[0])
        raise RuntimeError("redis went away")
    assert list(tmp_path.iterdir()) == []


def test_empty_export_is_valid(tmp_path):
    summary = export(tmp_path, records=[])
    assert summary["key_count"] == 0 and summary["rdb_version"] is None
    assert keyfile.verify(summary["path"])["key_count"] == 0
    assert list(keyfile.records(summary["path"])) == []


def test_bad_records_are_rejected():
    for decode in (keyfile.decode_record, keyfile.decode_key):  # nested past the parser's recursion limit
        with pytest.raises(KeyFileError, match="not a key record"):
            decode(b"[" * 100_000)
    with pytest.raises(KeyFileError, match="bad pttl"):
        keyfile.decode_record(b'{"key":"k","type":"string","pttl":-5,"dump":""}')
    with pytest.raises(KeyFileError):
        keyfile.decode_record(b'{"key":"k","type":"string","pttl":1,"dump":"***"}')


def test_the_key_only_passes_read_the_same_names_as_the_restore(tmp_path):
    """`keys` (EXISTS before and after a restore) skips the payloads but parses each line as `records`
    does: a line that names its key twice gives both the same one, so the keys checked are those written."""
    summary = export(tmp_path)
    assert list(keyfile.keys(summary["path"])) == [r.key for r in RECORDS]
    twice = b'{"key":"tenant:acme:a","type":"string","pttl":-1,"dump":"","key":"tenant:other:b"}'
    assert keyfile.decode_key(twice) == keyfile.decode_record(twice).key == b"tenant:other:b"
    binary = keyfile.encode_record(RECORDS[2])
    assert b"key_b64" in binary and keyfile.decode_key(binary) == RECORDS[2].key
    with pytest.raises(KeyFileError, match="line 7: not a key record"):
        keyfile.decode_key(b'{"type":"string"}', 7)


def test_verify_hands_every_key_to_the_watch_in_the_same_pass(tmp_path):
    summary = export(tmp_path)
    seen: list[tuple[str, bytes]] = []
    checked = keyfile.verify(summary["path"], lambda header: lambda key: seen.append((header["match"], key)))
    assert seen == [("tenant:acme:*", r.key) for r in RECORDS] and checked["key_count"] == 4
    empty = export(tmp_path, records=[], name="empty.keys.jsonl")
    headers: list[dict] = []
    keyfile.verify(empty["path"], lambda header: headers.append(header) or (lambda key: None))
    assert len(headers) == 1  # no keys, but the watch still saw the header


def test_fuzzed_record_lines_decode_or_raise_key_file_error_and_agree_on_the_key():
    """Every parser gets a fuzz test: mutated record lines (bytes flipped, cut, duplicated, JSON tokens
    swapped in) give a record or KeyFileError, never another exception, and whenever the full decode
    succeeds the key-only decode reads the same key."""
    import random

    rng = random.Random(15)
    lines = [keyfile.encode_record(r).rstrip(b"\n") for r in RECORDS]
    tokens = [b"null", b"[]", b"{}", b'"', b"\\", b"-1", b"1e309", b'"key_b64":"***"', b'"key":7', b"\xff", b"\x00"]
    tokens.append(b"[" * 100_000)  # nested past the parser's recursion limit: RecursionError, before
    for _ in range(3000):
        line = bytearray(rng.choice(lines))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(line) + 1)
            roll = rng.random()
            if roll < 0.3 and line:
                line[min(at, len(line) - 1)] = rng.randrange(256)
            elif roll < 0.5:
                del line[at:]
            elif roll < 0.8:
                line[at:at] = rng.choice(tokens)
            else:
                line[at:at] = line[: rng.randrange(len(line) + 1)]
        data = bytes(line)
        try:
            record = keyfile.decode_record(data)
        except KeyFileError:
            record = None
        try:
            key = keyfile.decode_key(data)
        except KeyFileError:
            key = None
        if record is not None:
            assert key == record.key
