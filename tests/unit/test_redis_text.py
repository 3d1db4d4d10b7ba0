"""engine.parsers.redis_text and engine.parsers.redis_config: raw Redis replies and config values -> data."""

from __future__ import annotations

import pytest

from engine.parsers.redis_config import canonical_name, compare, normalise, same
from engine.parsers.redis_text import (
    MonitorEntry,
    command_label,
    first_key,
    format_monitor_line,
    key_positions,
    key_prefix,
    parse_client_list,
    parse_monitor_line,
    parse_slowlog,
    quote_arg,
    slowlog_by_command,
    summarise_clients,
    summarise_monitor,
    top_commandstats,
)
from engine.transcript.redact import Redactor

POSITIONS = {
    "get": (1, 1, 1),
    "set": (1, 1, 1),
    "hset": (1, 1, 1),
    "auth": (0, 0, 0),
    "config": (0, 0, 0),
    "config|get": (0, 0, 0),
    "object": (0, 0, 0),
    "object|encoding": (2, 2, 1),
    "mset": (1, -1, 2),
}


# -- MONITOR -----------------------------------------------------------------------------------------
def test_monitor_line_keeps_arguments_with_spaces_quotes_and_bytes_whole() -> None:
    line = r'1795659240.636765 [0 127.0.0.1:41774] "SET" "tenant:acme:k0" "a b \"c\"\n\x01\xc3\xa9"'
    entry = parse_monitor_line(line)
    assert entry == MonitorEntry(1795659240.636765, 0, "127.0.0.1:41774", ("SET", "tenant:acme:k0", 'a b "c"\n\x01é'))


@pytest.mark.parametrize(
    ("line", "client", "argv"),
    [
        ('1.5 [3 lua] "get" "k"', "lua", ("get", "k")),
        ('1.5 [0 unix:/tmp/redis.sock] "PING"', "unix:/tmp/redis.sock", ("PING",)),
        ('1.5 [0 [::1]:6000] "GET" "x"', "[::1]:6000", ("GET", "x")),
        ('1.5 [0 127.0.0.1:1] "SET" "k" ""', "127.0.0.1:1", ("SET", "k", "")),
        ('1.5 [0 127.0.0.1:1] "a\\\\b"', "127.0.0.1:1", ("a\\b",)),
    ],
)
def test_monitor_line_variants(line: str, client: str, argv: tuple[str, ...]) -> None:
    entry = parse_monitor_line(line)
    assert entry is not None and entry.client == client and entry.argv == argv


@pytest.mark.parametrize("line", ["OK", "", "1.5 [0 x] unquoted", '1.5 [0 x] "unterminated'])
def test_monitor_line_that_is_not_one_gives_none(line: str) -> None:
    assert parse_monitor_line(line) is None


def test_quote_arg_escapes_and_cuts() -> None:
    assert quote_arg('a"b\\c\n\x01é') == '"a\\"b\\\\c\\n\\x01é"'
    assert quote_arg("x" * 300, 10) == '"xxxxxxxxxx"...(300 bytes)'


def test_key_positions_from_resp3_dicts_and_resp2_lists() -> None:
    resp3 = {
        "get": {"name": "get", "first_key_pos": 1, "last_key_pos": 1, "step_count": 1},
        "object": {
            "name": "object",
            "first_key_pos": 0,
            "last_key_pos": 0,
            "step_count": 0,
            "subcommands": [["object|encoding", 3, [], 2, 2, 1, [], [], [], []]],
        },
        "nosuch": None,
    }
    assert key_positions(resp3) == {"get": (1, 1, 1), "object": (0, 0, 0), "object|encoding": (2, 2, 1)}
    resp2 = [[b"set", -3, [b"write"], 1, 1, 1]]
    assert key_positions(resp2) == {"set": (1, 1, 1)}


def test_first_key_label_and_prefix() -> None:
    assert first_key(["GET", "tenant:acme:wm:active"], POSITIONS) == "tenant:acme:wm:active"
    assert first_key(["OBJECT", "ENCODING", "k"], POSITIONS) == "k"
    assert first_key(["CONFIG", "GET", "*"], POSITIONS) is None
    assert first_key(["GET"], POSITIONS) is None  # malformed: no key argument
    assert first_key(["UNKNOWN", "x"], POSITIONS) is None
    assert command_label(["config", "get", "*"], POSITIONS) == "CONFIG GET"
    assert command_label(["get", "k"], POSITIONS) == "GET"
    assert key_prefix("tenant:acme:wm:active") == "tenant:acme"
    assert key_prefix("tenant:acme") == "tenant"
    assert key_prefix("session:42:x") == "session"
    assert key_prefix("plain") == "(no prefix)"


def test_summarise_monitor_counts_and_masks_credentials() -> None:
    redactor = Redactor()
    redactor.add("redis-password", "hunter2")
    lines = [
        '1.0 [0 10.0.0.1:5000] "AUTH" "hunter2"',
        '1.1 [0 10.0.0.1:5000] "GET" "tenant:acme:cache:1"',
        '1.2 [0 10.0.0.2:5001] "HSET" "tenant:acme:wm:active" "f" "' + "v" * 500 + '"',
        '1.3 [0 10.0.0.2:5001] "GET" "tenant:globex:cache:1"',
        '1.4 [0 10.0.0.2:5001] "CONFIG" "GET" "maxmemory"',
        '1.5 [0 10.0.0.2:5001] "CONFIG" "SET" "requirepass" "newpass"',
    ]
    entries = [e for e in map(parse_monitor_line, lines) if e]
    out = summarise_monitor(
        entries, seconds=2.0, positions=POSITIONS, redact=redactor.argv, stopped_by="seconds", sample_lines=5
    )
    assert out["commands"] == 6 and out["seconds"] == 2.0 and out["rate_per_s"] == 3.0
    assert out["by_command"] == {"GET": 2, "CONFIG GET": 1, "CONFIG SET": 1, "AUTH": 1, "HSET": 1}
    assert next(iter(out["by_command"])) == "GET"  # most frequent first
    assert out["by_prefix"] == {"tenant:acme": 2, "(no key)": 3, "tenant:globex": 1}
    assert out["by_client"] == {"10.0.0.2:5001": 4, "10.0.0.1:5000": 2}
    assert len(out["sample"]) == 5  # bounded
    text = "\n".join(out["sample"])
    assert "hunter2" not in text and '"AUTH" "[SECRET:redis-password]"' in out["sample"][0]
    assert "...(500 bytes)" in out["sample"][2]  # long values are cut
    assert out["sample"][1] == '1.100000 [0 10.0.0.1:5000] "GET" "tenant:acme:cache:1"'
    every = summarise_monitor(entries, seconds=1, positions=POSITIONS, redact=redactor.argv, stopped_by="x")
    assert "newpass" not in "\n".join(every["sample"])


def test_summarise_monitor_keeps_top_prefixes_and_counts_the_rest() -> None:
    entries = [MonitorEntry(1.0, 0, f"c{i}", ("GET", f"p{i}:x")) for i in range(60)]
    out = summarise_monitor(entries, seconds=1, positions=POSITIONS, redact=list, stopped_by="max_commands")
    assert len(out["by_prefix"]) == 51 and out["by_prefix"]["(other)"] == 10
    assert sum(out["by_client"].values()) == 60


def test_format_monitor_line_round_trips() -> None:
    line = r'1795659240.636765 [0 127.0.0.1:41774] "SET" "a b" "x\"y"'
    entry = parse_monitor_line(line)
    assert entry is not None
    assert parse_monitor_line(format_monitor_line(entry, entry.argv)) == entry


# -- CLIENT LIST -------------------------------------------------------------------------------------
CLIENT_LIST = (
    "id=4 addr=127.0.0.1:43222 laddr=127.0.0.1:6379 fd=7 name= age=10 idle=0 flags=N db=0 cmd=client|list "
    "user=default omem=0 tot-mem=37658 resp=3\n"
    "id=7 addr=10.0.0.9:5100 laddr=127.0.0.1:6379 fd=9 name=worker-1 age=500 idle=500 flags=b db=0 cmd=blpop "
    "user=default omem=0 tot-mem=20000 resp=2\n"
    "id=8 addr=10.0.0.9:5101 laddr=127.0.0.1:6379 fd=10 name= age=900 idle=800 flags=N db=0 cmd=get "
    "user=default omem=0 tot-mem=20000 resp=2\n"
)


def test_client_list_parse_and_filter() -> None:
    clients = parse_client_list(CLIENT_LIST)
    assert [c["id"] for c in clients] == [4, 7, 8]
    assert clients[1]["name"] == "worker-1" and clients[1]["flags"] == "b" and clients[1]["idle"] == 500
    assert clients[0]["name"] == "" and clients[0]["cmd"] == "client|list"
    blocked = summarise_clients(clients, flags="b", idle_min=None, limit=10)
    assert blocked["total"] == 3 and blocked["matched"] == 1 and blocked["by_cmd"] == {"blpop": 1}
    assert blocked["clients"][0]["addr"] == "10.0.0.9:5100"
    idle = summarise_clients(clients, flags=None, idle_min=300, limit=1)
    assert idle["matched"] == 2 and len(idle["clients"]) == 1


# -- SLOWLOG -----------------------------------------------------------------------------------------
def test_slowlog_raw_and_parsed_forms_with_redaction() -> None:
    redactor = Redactor()
    raw = [
        [12, 1700000000, 25000, ["KEYS", "tenant:*"], "10.0.0.1:5000", "api"],
        [11, 1699999990, 1500, ["AUTH", "default", "hunter2"], "10.0.0.2:5000", ""],
        [10, 1699999980, 800, ["HGETALL", "tenant:acme:wm:active"]],  # Redis < 4: no client fields
    ]
    entries = parse_slowlog(raw, redactor.argv)
    assert entries[0] == {
        "id": 12,
        "time": 1700000000,
        "duration_us": 25000,
        "duration_ms": 25.0,
        "command": "KEYS",
        "args": '"tenant:*"',
        "client": "10.0.0.1:5000",
        "client_name": "api",
    }
    assert "hunter2" not in entries[1]["args"] and entries[1]["client_name"] is None
    assert entries[2]["client"] is None and entries[2]["command"] == "HGETALL"
    parsed = [{"id": 1, "start_time": 5, "duration": 10, "command": b"GET k", "client_address": b"a:1"}]
    assert parse_slowlog(parsed, redactor.argv)[0]["command"] == "GET"
    by = slowlog_by_command(entries)
    assert list(by) == ["KEYS", "AUTH", "HGETALL"] and by["KEYS"] == {"count": 1, "total_ms": 25.0, "max_ms": 25.0}


# -- INFO commandstats -------------------------------------------------------------------------------
def test_top_commandstats_ranks_by_time_and_calls() -> None:
    info = {
        "cmdstat_get": {"calls": 1000, "usec": 500, "usec_per_call": 0.5, "rejected_calls": 0, "failed_calls": 0},
        "cmdstat_keys": {"calls": 2, "usec": 9000, "usec_per_call": 4500.0},
        "cmdstat_config|get": "calls=5,usec=500,usec_per_call=100.00,rejected_calls=0,failed_calls=1",
    }
    out = top_commandstats(info, 2)
    assert out["total_calls"] == 1007 and out["total_usec"] == 10000 and out["commands"] == 3
    assert [r["command"] for r in out["by_time"]] == ["KEYS", "GET"]
    assert out["by_time"][0]["time_pct"] == 90.0
    assert [r["command"] for r in out["by_calls"]] == ["GET", "CONFIG GET"]
    assert out["by_calls"][1]["failed_calls"] == 1
    assert top_commandstats({}, 5) == {"commands": 0, "total_calls": 0, "total_usec": 0, "by_time": [], "by_calls": []}


# -- config values -----------------------------------------------------------------------------------
def test_config_values_compare_as_redis_means_them() -> None:
    assert same("maxmemory", "2147483648", "2gb")
    assert not same("maxmemory", "2000000000", "2gb")
    assert same("maxmemory", "2000000000", "2g")
    assert same("maxmemory-policy", "allkeys-lru", "ALLKEYS-LRU")
    assert same("save", "900 1 300 10", "900 1  300 10")
    assert same("save", "", '""') and not same("save", "", "900 1")
    current = "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60"
    assert not same("client-output-buffer-limit", current, "normal 32mb 8mb 60")
    assert same("client-output-buffer-limit", current, "pubsub 32mb 8mb 60")
    assert same("client-output-buffer-limit", current, "replica 256mb 64mb 60")
    assert normalise("appendonly", True) == ("yes",)


def test_canonical_names_follow_the_server() -> None:
    redis7 = {"hash-max-listpack-entries": "512", "hash-max-ziplist-entries": "512"}
    name, note = canonical_name("hash-max-ziplist-entries", redis7)
    assert name == "hash-max-listpack-entries" and "alias" in (note or "")
    assert canonical_name("hash-max-ziplist-entries", {"hash-max-ziplist-entries": "512"}) == (
        "hash-max-ziplist-entries",
        None,
    )


def test_compare_rows_mask_credentials_and_flag_unknown_settings() -> None:
    current = {"maxmemory": "0", "requirepass": "hunter2", "hash-max-listpack-value": "64", "save": ""}
    rows = compare(
        current,
        {"maxmemory": "1gb", "requirepass": "hunter2", "hash-max-ziplist-value": 64, "include": "/x", "save": ""},
    )
    by = {r["asked"]: r for r in rows}
    assert by["maxmemory"]["same"] is False and by["maxmemory"]["current"] == "0"
    assert by["requirepass"]["same"] is True and "hunter2" not in str(by["requirepass"])
    assert by["hash-max-ziplist-value"]["param"] == "hash-max-listpack-value" and by["hash-max-ziplist-value"]["same"]
    assert by["include"]["known"] is False and by["include"]["same"] is False
    assert by["save"]["same"] is True
