"""Redis's CRC-64/Jones in pure Python: known vectors, a real RDB trailer and DUMP payload, lane maths."""

from __future__ import annotations

import random

import pytest

from engine.backup.crc64 import CHECK, Crc64, crc64, crc64_bytewise

LOREM = (
    b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore "
    b"et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut "
    b"aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum "
    b"dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui "
    b"officia deserunt mollit anim id est laborum."
)
# Written by redis-server 7.0.15 (SAVE with a, b (EX), h (hash), l (list)); redis-check-rdb: OK, 4 keys.
REAL_RDB = bytes.fromhex(
    "524544495330303130fa0972656469732d76657206372e302e3135fa0a72656469732d62697473c040fa056374696d65c2d697"
    "076bfa08757365642d6d656dc248170f00fa08616f662d62617365c000fe00fb0401000161c00112016c01020d0d000000020081"
    "7802817902ff1001680d0d0000000200816602817602fffcc3009f1ba2010000000162c002ff2bcde2ed97de0894"
)
# DUMP h from the same server: <type + value> <rdb version 10, LE> <crc64, LE>
REAL_DUMP = bytes.fromhex("100d0d00000002008166028176 02ff0a0020f13d442354089d".replace(" ", ""))


def test_the_check_value_redis_documents():
    assert CHECK == 0xE9C6D914C4B8D9CA
    assert crc64_bytewise(b"123456789") == CHECK
    assert crc64(b"123456789") == CHECK


def test_redis_crc64_self_test_vector():
    # src/crc64.c's test: crc64 of the lorem ipsum string including its terminating NUL (sizeof)
    assert crc64(LOREM + b"\0") == 0xC7794709E69683B3


def test_a_real_rdb_file_trailer_matches():
    assert crc64(REAL_RDB[:-8]) == int.from_bytes(REAL_RDB[-8:], "little")


def test_a_real_dump_payload_trailer_matches():
    assert crc64(REAL_DUMP[:-8]) == int.from_bytes(REAL_DUMP[-8:], "little")


def test_empty_input_and_continuation():
    assert crc64(b"") == 0
    assert crc64(b"56789", crc64(b"1234")) == CHECK
    assert crc64(b"", 12345) == 12345


@pytest.mark.parametrize("size", [1, 7, 8, 9, 63, 64, 65, 1000, 4097])
@pytest.mark.parametrize(("lanes", "lane_bytes"), [(1, 1), (2, 3), (4, 8), (16, 5), (64, 2)])
def test_lanes_agree_with_the_bytewise_reference(size, lanes, lane_bytes):
    rng = random.Random(size * 131 + lanes)
    data = rng.randbytes(size)
    start = rng.getrandbits(64)
    assert crc64(data, 0, lanes=lanes, lane_bytes=lane_bytes) == crc64_bytewise(data)
    assert crc64(data, start, lanes=lanes, lane_bytes=lane_bytes) == crc64_bytewise(data, start)


def test_default_lanes_on_more_than_one_block():
    data = random.Random(3).randbytes((1 << 20) * 2 + 12345)
    expected = crc64_bytewise(data)
    assert crc64(data) == expected
    assert crc64(memoryview(data)) == expected
    assert crc64(bytearray(data)) == expected


def test_incremental_chunks_of_any_size():
    rng = random.Random(5)
    data = rng.randbytes(1_500_000)
    crc = Crc64()
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 3, 8, 1000, 70_000, 600_000])
        crc.update(data[pos : pos + step])
        pos += step
    assert crc.digest() == crc64(data) and crc.length == len(data)


def test_leading_zeros_do_not_change_the_crc():
    # the property that lets a short block be padded in front
    assert crc64(bytes(1000) + b"123456789") == CHECK


def test_lanes_must_be_a_power_of_two():
    with pytest.raises(ValueError):
        crc64(b"x" * 100_000, lanes=3)
