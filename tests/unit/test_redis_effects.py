"""engine.adapters.redis_effects: what a Redis command does, and the RESP decoder of the dry-run guard."""

from __future__ import annotations

import pytest
from redis._parsers.encoders import Encoder
from redis.connection import Connection, PythonRespSerializer

from engine.adapters.redis_effects import (
    CommandInfo,
    bundled_table,
    classify,
    command_name,
    decode_resp_commands,
    from_snapshot,
    snapshot,
)
from engine.spec.model import Effect

TABLE = bundled_table()

READS = [
    ["GET", "k"],
    ["TTL", "k"],
    ["PTTL", "k"],
    ["SCAN", "0", "MATCH", "tenant:*", "COUNT", "1000"],
    ["INFO"],
    ["INFO", "memory"],
    ["CONFIG", "GET", "maxmemory"],
    ["CLIENT", "LIST"],
    ["SLOWLOG", "GET", "10"],
    ["MEMORY", "USAGE", "k"],
    ["DUMP", "k"],
    ["EXISTS", "k"],
    ["TYPE", "k"],
    ["HGETALL", "h"],
    ["DBSIZE"],
    ["PING"],
    ["OBJECT", "ENCODING", "k"],
    ["ACL", "LOG"],
]
WRITES = [
    ["SET", "k", "v"],
    ["EXPIRE", "k", "60"],
    ["PERSIST", "k"],
    ["HSET", "h", "f", "v"],
    ["BGSAVE"],
    ["CONFIG", "SET", "maxmemory", "2gb"],
    ["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    ["CONFIG", "REWRITE"],
    ["CONFIG", "RESETSTAT"],
    ["SLOWLOG", "RESET"],
    ["ACL", "LOG", "RESET"],
]
DESTRUCTIVE = [
    ["DEL", "k"],
    ["UNLINK", "a", "b"],
    ["GETDEL", "k"],
    ["HDEL", "h", "f"],
    ["FLUSHDB"],
    ["FLUSHDB", "ASYNC"],
    ["FLUSHALL"],
    ["SHUTDOWN", "NOSAVE"],
    ["CONFIG", "SET", "requirepass", "s3cret"],
    ["CONFIG", "SET", "dir", "/tmp"],
    ["CONFIG", "SET", "maxmemory", "2gb", "requirepass", "s3cret"],
    ["CLIENT", "KILL", "ID", "7"],
    ["RESTORE", "k", "0", "payload"],
    ["SWAPDB", "0", "1"],
    ["REPLICAOF", "host", "6379"],
    ["DEBUG", "SLEEP", "0"],
]


def _ids(commands: list[list[str]]) -> list[str]:
    return [" ".join(c) for c in commands]


def test_bundled_table_is_a_real_command_table() -> None:
    assert len(TABLE) > 200
    assert "write" in TABLE["set"].flags
    assert "readonly" in TABLE["get"].flags
    assert {"get", "set"} <= set(TABLE["config"].subcommands)


@pytest.mark.parametrize("argv", READS, ids=_ids(READS))
def test_reads(argv: list[str]) -> None:
    assert classify(argv, TABLE) is Effect.READ


@pytest.mark.parametrize("argv", WRITES, ids=_ids(WRITES))
def test_writes(argv: list[str]) -> None:
    assert classify(argv, TABLE) is Effect.WRITE


@pytest.mark.parametrize("argv", DESTRUCTIVE, ids=_ids(DESTRUCTIVE))
def test_destructive(argv: list[str]) -> None:
    assert classify(argv, TABLE) is Effect.DESTRUCTIVE


@pytest.mark.parametrize("argv", [["NOSUCHCOMMAND", "k"], ["CLIENT", "NOSUCHSUB"], ["CONFIG", "NOSUCHSUB", "x"]])
def test_unknown_command_is_destructive(argv: list[str]) -> None:
    assert classify(argv, TABLE) is Effect.DESTRUCTIVE


@pytest.mark.parametrize("argv", [["GET", "k"], ["SET", "k", "v"], ["EXPIRE", "k", "1"], ["DUMP", "k"]])
@pytest.mark.parametrize("table", [None, {}], ids=["no-table", "empty-table"])
def test_without_a_table_anything_not_known_to_read_is_destructive(
    argv: list[str], table: dict[str, CommandInfo] | None
) -> None:
    assert classify(argv, table) is Effect.DESTRUCTIVE


def test_without_a_table_the_read_allow_list_still_reads() -> None:
    assert classify(["INFO", "memory"], None) is Effect.READ
    assert classify(["CONFIG", "GET", "*"], None) is Effect.READ
    assert classify(["CONFIG", "SET", "requirepass", "x"], None) is Effect.DESTRUCTIVE


def test_empty_argv_is_destructive() -> None:
    assert classify([], TABLE) is Effect.DESTRUCTIVE


@pytest.mark.parametrize(
    ("argv", "effect"),
    [
        (["get", "k"], Effect.READ),
        (["Get", "k"], Effect.READ),
        (["config", "get", "maxmemory"], Effect.READ),
        (["Config", "Set", "MaxMemory", "1gb"], Effect.WRITE),
        (["config", "set", "RequirePass", "x"], Effect.DESTRUCTIVE),
        (["del", "k"], Effect.DESTRUCTIVE),
        (["flushall"], Effect.DESTRUCTIVE),
        (["client", "kill", "id", "1"], Effect.DESTRUCTIVE),
        (["slowlog", "reset"], Effect.WRITE),
        ([b"DEL", b"k"], Effect.DESTRUCTIVE),
        ([b"get", b"k"], Effect.READ),
    ],
)
def test_case_insensitive_and_bytes(argv: list[str | bytes], effect: Effect) -> None:
    assert classify(argv, TABLE) is effect


def test_command_name_joins_subcommands() -> None:
    assert command_name(["CONFIG", "SET", "x", "y"], TABLE) == "config|set"
    assert command_name(["client", "List"], TABLE) == "client|list"
    assert command_name(["DEL", "k"], TABLE) == "del"
    assert command_name(["CONFIG"], TABLE) == "config"
    assert command_name(["CONFIG", "GET", "x"], None) == "config|get"


def test_snapshot_round_trips() -> None:
    assert from_snapshot(snapshot(TABLE)) == TABLE


# -- decode_resp_commands ------------------------------------------------------------------------------
PACKER = Connection()  # constructing a Connection does not connect


def _packed(*args: object) -> bytes:
    return b"".join(PACKER.pack_command(*args))


def test_decodes_what_redis_py_packs_for_one_command() -> None:
    assert decode_resp_commands(_packed("SET", "tenant:acme:wm:active", "v")) == [
        [b"SET", b"tenant:acme:wm:active", b"v"]
    ]


def test_decodes_binary_and_empty_arguments() -> None:
    binary = b"\x00\xff\r\n$3\r\n*1\r\n"
    assert decode_resp_commands(_packed("SET", binary, "")) == [[b"SET", binary, b""]]


def test_decodes_non_ascii_and_numbers_as_redis_py_encodes_them() -> None:
    assert decode_resp_commands(_packed("CONFIG", "SET", "maxmemory", 5, 1.5, "é")) == [
        [b"CONFIG", b"SET", b"maxmemory", b"5", b"1.5", "é".encode()]
    ]


def test_command_name_with_a_space_is_split_by_redis_py() -> None:
    assert decode_resp_commands(_packed("CONFIG SET", "maxmemory", "1gb")) == [
        [b"CONFIG", b"SET", b"maxmemory", b"1gb"]
    ]


def test_decodes_a_large_value_packed_in_several_chunks() -> None:
    big = b"\r\n\x00" * 10_000
    # redis-py's pure-Python packer sends large values as separate buffers (hiredis's packs one)
    chunks = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode).pack("SET", "big", big)
    assert len(chunks) > 1
    assert decode_resp_commands(b"".join(chunks)) == [[b"SET", b"big", big]]


@pytest.mark.parametrize("cutoff", [6000, 1], ids=["default-cutoff", "every-value-its-own-chunk"])
def test_decodes_python_resp_serializer_output(cutoff: int) -> None:
    serializer = PythonRespSerializer(cutoff, Encoder("utf-8", "strict", False).encode)
    args = ("RESTORE", "k", 0, b"\x00\x01\r\n", "", "REPLACE")
    assert decode_resp_commands(b"".join(serializer.pack(*args))) == [
        [b"RESTORE", b"k", b"0", b"\x00\x01\r\n", b"", b"REPLACE"]
    ]


def test_decodes_a_pipeline_of_several_commands() -> None:
    commands = [("SET", "a", "1"), ("GET", "a"), ("DEL", "a", b"", b"\x00"), ("FLUSHDB",)]
    packed = b"".join(PACKER.pack_commands(commands))
    assert decode_resp_commands(packed) == [
        [b"SET", b"a", b"1"],
        [b"GET", b"a"],
        [b"DEL", b"a", b"", b"\x00"],
        [b"FLUSHDB"],
    ]


def test_decodes_a_transaction() -> None:
    packed = b"".join(PACKER.pack_commands([("MULTI",), ("UNLINK", "k"), ("EXEC",)]))
    assert [argv[0] for argv in decode_resp_commands(packed)] == [b"MULTI", b"UNLINK", b"EXEC"]


def test_decodes_hand_built_resp() -> None:
    packed = b"*2\r\n$3\r\nDEL\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n"
    assert decode_resp_commands(packed) == [[b"DEL", b""], [b"PING"]]


def test_empty_input_is_no_command() -> None:
    assert decode_resp_commands(b"") == []


@pytest.mark.parametrize("packed", [b"PING\r\n", b"*1\r\n:1\r\n", b"+OK\r\n"])
def test_anything_that_is_not_a_resp_request_is_refused(packed: bytes) -> None:
    with pytest.raises(ValueError):
        decode_resp_commands(packed)


def test_truncated_bulk_string_is_refused() -> None:
    with pytest.raises(ValueError):
        decode_resp_commands(b"*1\r\n$10\r\nabc")


SENTINEL_AND_CLUSTER_READS = [
    ["SENTINEL", "MASTERS"],
    ["SENTINEL", "MASTER", "somabrain"],
    ["SENTINEL", "REPLICAS", "somabrain"],
    ["SENTINEL", "SENTINELS", "somabrain"],
    ["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "somabrain"],
    ["SENTINEL", "CKQUORUM", "somabrain"],
    ["SENTINEL", "INFO-CACHE", "somabrain"],
    ["CLUSTER", "INFO"],
    ["CLUSTER", "NODES"],
    ["CLUSTER", "SHARDS"],
    ["CLUSTER", "SLOTS"],
    ["CLUSTER", "COUNTKEYSINSLOT", "7"],
    ["CLUSTER", "KEYSLOT", "k"],
    ["CLUSTER", "MYID"],
]
SENTINEL_AND_CLUSTER_DESTRUCTIVE = [
    ["SENTINEL", "FAILOVER", "somabrain"],
    ["SENTINEL", "SET", "somabrain", "quorum", "1"],
    ["SENTINEL", "RESET", "*"],
    ["SENTINEL", "REMOVE", "somabrain"],
    ["SENTINEL", "MONITOR", "x", "127.0.0.1", "6379", "2"],
    ["SENTINEL", "SOMETHING-NEW"],
    ["CLUSTER", "FAILOVER"],
    ["CLUSTER", "FORGET", "abc"],
    ["CLUSTER", "MEET", "127.0.0.1", "7000"],
    ["CLUSTER", "RESET"],
    ["CLUSTER", "SETSLOT", "1", "NODE", "abc"],
    ["CLUSTER", "ADDSLOTS", "1"],
    ["CLUSTER", "DELSLOTS", "1"],
    ["CLUSTER", "REPLICATE", "abc"],
]


@pytest.mark.parametrize("table", [TABLE, {}], ids=["data-node-table", "sentinel-without-command"])
@pytest.mark.parametrize("argv", SENTINEL_AND_CLUSTER_READS, ids=lambda a: " ".join(a[:2]))
def test_sentinel_and_cluster_introspection_reads(argv, table):
    assert classify(argv, table) is Effect.READ


@pytest.mark.parametrize("table", [TABLE, {}], ids=["data-node-table", "sentinel-without-command"])
@pytest.mark.parametrize("argv", SENTINEL_AND_CLUSTER_DESTRUCTIVE, ids=lambda a: " ".join(a[:2]))
def test_sentinel_and_cluster_changes_are_destructive(argv, table):
    assert classify(argv, table) is Effect.DESTRUCTIVE
