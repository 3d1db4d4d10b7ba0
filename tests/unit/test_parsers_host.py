"""Host command output and Redis's own files (log, redis-check-rdb/aof reports) -> data, from real samples."""

from __future__ import annotations

import pytest

from engine.parsers import host, redis_host
from engine.steps.parse_step import _parse

FREE_NEW = """\
               total        used        free      shared  buff/cache   available
Mem:     25276502016   640811008 24087232512    71192576   897478656 24635691008
Swap:       2147479552   104857600  2042621952
"""

FREE_OLD = """\
             total       used       free     shared    buffers     cached
Mem:       8061116    7712468     348648      10504     152352    2611284
-/+ buffers/cache:    4948832    3112284
Swap:            0          0          0
"""

DF_B1 = """\
Filesystem         1-blocks        Used   Available Capacity Mounted on
/dev/vda       270553174016 24477548544 84466745344      23% /
tmpfs              67108864       12288    67096576       1% /mnt/my data
"""

DF_K = """\
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/sda1         10000000  9500000    500000      95% /var/lib/redis
"""

PS = """\
  PID USER       RSS COMMAND
    1 root     19540 /process_api --addr 0.0.0.0:2024
 2210 redis     7048 /usr/bin/redis-server 127.0.0.1:6379
 6966 root      7168 redis-server *:7777
31467 root      2140 grep redis-server
 4242 redis     1200 redis-server-helper --x
"""

SS = """\
State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess
LISTEN 0      511        127.0.0.1:6379       0.0.0.0:*    users:(("redis-server",pid=2210,fd=6))
LISTEN 0      511             [::]:7777          [::]:*    users:(("redis-server",pid=6966,fd=7))
LISTEN 0      4096   127.0.0.53%lo:53         0.0.0.0:*
LISTEN 0      128          0.0.0.0:2024       0.0.0.0:*
"""

NETSTAT = """\
Active Internet connections (only servers)
Proto Recv-Q Send-Q Local Address           Foreign Address         State       PID/Program name
tcp        0      0 127.0.0.1:6379          0.0.0.0:*               LISTEN      2210/redis-server 1
tcp6       0      0 :::7777                 :::*                    LISTEN      6966/redis-server *
tcp        0      0 0.0.0.0:22              0.0.0.0:*               LISTEN      -
"""

LOG = """\
31462:C 26 Nov 2026 02:12:19.109 # oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo
31462:C 26 Nov 2026 02:12:19.109 # Redis version=7.0.15, bits=64, commit=00000000, modified=0, pid=31462
31462:C 26 Nov 2026 02:12:19.109 # Configuration loaded
31462:M 26 Nov 2026 02:12:19.110 * monotonic clock: POSIX clock_gettime
                _._
31462:M 26 Nov 2026 02:12:19.138 # Server initialized
31462:M 26 Nov 2026 02:12:19.138 # WARNING Memory overcommit must be enabled! Without it, a background save \
or replication may fail under low memory condition.
31462:M 26 Nov 2026 02:12:19.138 * Ready to accept connections
31462:M 26 Nov 2026 02:14:00.001 # Unexpected end of file reading the append only file appendonly.aof.1.incr.aof.
31462:M 26 Nov 2026 02:15:30.500 # Background saving terminated by signal 9
31462:M 26 Nov 2026 02:16:00.000 * DB saved on disk
Nov 26 02:16:10 db1 redis-server[31462]: 31462:M 26 Nov 2026 02:16:10.000 # Short read or OOM loading DB.
"""

CHECK_RDB_OK = """\
[offset 0] Checking RDB file /tmp/x/dump.rdb
[offset 27] AUX FIELD redis-ver = '7.0.15'
[offset 53] AUX FIELD ctime = '1795659156'
[offset 80] AUX FIELD aof-base = '0'
[offset 82] Selecting DB ID 0
[offset 300] Selecting DB ID 2
[offset 459] Checksum OK
[offset 459] \\o/ RDB looks OK! \\o/
[info] 51 keys read
[info] 1 expires
[info] 3 already expired
"""

CHECK_RDB_BAD = """\
[offset 0] Checking RDB file /tmp/bad.rdb
[offset 82] Selecting DB ID 0
--- RDB ERROR DETECTED ---
[offset 404] Unexpected EOF reading RDB file
[additional info] While doing: read-type
[info] 47 keys read
[info] 0 expires
[info] 0 already expired
"""

CHECK_AOF_BAD = """\
Start checking Multi Part AOF
Start to check BASE AOF (RDB format).
[offset 0] Checking RDB file appendonly.aof.1.base.rdb
[offset 89] \\o/ RDB looks OK! \\o/
[info] 0 keys read
RDB preamble is OK, proceeding with AOF tail...
AOF analyzed: filename=appendonly.aof.1.base.rdb, size=89, ok_up_to=89, ok_up_to_line=1, diff=0
BASE AOF appendonly.aof.1.base.rdb is valid
Start to check INCR files.
0x            1ed2: Expected \\r\\n, got: 0d00
AOF analyzed: filename=appendonly.aof.1.incr.aof, size=7893, ok_up_to=7877, ok_up_to_line=695, diff=16
AOF appendonly.aof.1.incr.aof is not valid. Use the --fix option to try fixing it.
"""

CHECK_AOF_FIXED = """\
Start checking Multi Part AOF
AOF analyzed: filename=appendonly.aof.1.base.rdb, size=89, ok_up_to=89, ok_up_to_line=1, diff=0
BASE AOF appendonly.aof.1.base.rdb is valid
AOF analyzed: filename=appendonly.aof.1.incr.aof, size=7893, ok_up_to=7877, ok_up_to_line=695, diff=16
This will shrink the AOF appendonly.aof.1.incr.aof from 7893 bytes, with 16 bytes, to 7877 bytes
Continue? [y/N]: Successfully truncated AOF appendonly.aof.1.incr.aof
All AOF files and manifest are valid
"""

CHECK_AOF_OLD_OK = """\
Start checking Old-Style AOF
AOF analyzed: filename=/var/lib/redis/appendonly.aof, size=120, ok_up_to=120, ok_up_to_line=30, diff=0
AOF /var/lib/redis/appendonly.aof is valid
"""


def test_free_new_procps_in_bytes():
    data = host.parse_free(FREE_NEW)
    assert data["mem"]["total"] == 25276502016 and data["mem"]["available"] == 24635691008
    assert data["mem"]["buff_cache"] == 897478656
    assert data["available_pct"] == round(100 * 24635691008 / 25276502016, 1)
    assert data["swap"]["used"] == 104857600 and data["swap_used_pct"] == round(100 * 104857600 / 2147479552, 1)


def test_free_old_procps_estimates_available_and_kib_scales():
    data = host.parse_free_kib(FREE_OLD)
    assert data["mem"]["total"] == 8061116 * 1024
    assert data["mem"]["available"] == (348648 + 152352 + 2611284) * 1024
    assert data["swap_used_pct"] == 0.0


def test_free_of_nothing_is_empty_not_an_error():
    assert host.parse_free("") == {
        "mem": {},
        "swap": {},
        "available_pct": None,
        "used_pct": None,
        "swap_used_pct": 0.0,
    }


def test_df_block_sizes_and_mount_points_with_spaces():
    rows = host.parse_df(DF_B1)
    assert rows[0] == {
        "filesystem": "/dev/vda",
        "size": 270553174016,
        "used": 24477548544,
        "available": 84466745344,
        "use_pct": 23,
        "mount": "/",
    }
    assert rows[1]["mount"] == "/mnt/my data"
    (kib,) = host.parse_df(DF_K)
    assert kib["available"] == 500000 * 1024 and kib["use_pct"] == 95


def test_ps_keeps_args_whole_and_finds_redis_servers_by_program_name():
    procs = host.parse_ps(PS)
    assert procs[1] == {
        "pid": 2210,
        "user": "redis",
        "rss_kib": 7048,
        "args": "/usr/bin/redis-server 127.0.0.1:6379",
        "program": "redis-server",
        "rss": 7048 * 1024,
    }
    named = host.processes_named(procs, "redis-server")
    assert [p["pid"] for p in named] == [2210, 6966]  # not grep, not redis-server-helper


def test_ss_and_netstat_give_the_same_listeners():
    ss = host.parse_listening(SS)
    assert ss[0] == {
        "address": "127.0.0.1:6379",
        "host": "127.0.0.1",
        "port": 6379,
        "pid": 2210,
        "process": "redis-server",
    }
    assert ss[1]["host"] == "::" and ss[1]["port"] == 7777
    assert ss[2]["host"] == "127.0.0.53" and ss[2]["pid"] is None
    net = host.parse_listening(NETSTAT)
    assert [(r["port"], r["pid"], r["process"]) for r in net] == [
        (6379, 2210, "redis-server"),
        (7777, 6966, "redis-server"),
        (22, None, None),
    ]
    assert host.listening_on(net, 6379)[0]["host"] == "127.0.0.1"
    assert host.listening_on(ss, 1) == []


def test_redis_log_lines_are_graded():
    data = redis_host.parse_redis_log(LOG)
    assert data["count"] == 11
    kinds = [(e["message"][:20], e["kind"]) for e in data["entries"]]
    assert ("oO0OoO0OoO0Oo Redis ", "info") in kinds
    assert ("Server initialized", "info") in kinds
    assert [e["kind"] for e in data["tuning"]] == ["tuning"]  # the overcommit advice, not an incident
    assert [e["message"][:30] for e in data["errors"]] == [
        "Unexpected end of file reading",
        "Short read or OOM loading DB.",  # found inside a journald line
    ]
    assert [e["message"] for e in data["warnings"]] == ["Background saving terminated by signal 9"]
    assert data["entries"][0]["time"] == "2026-11-26T02:12:19.109"
    assert data["entries"][0]["role"] == "child" and data["entries"][-1]["pid"] == 31462


def test_redis_log_window_uses_the_hosts_clock():
    data = redis_host.parse_redis_log(LOG, now="2026-11-26 02:19:00", within=300)
    assert data["since"] == "2026-11-26T02:14:00"
    assert data["count"] == 4 and data["error_count"] == 2 and data["warning_count"] == 1
    assert redis_host.parse_redis_log(LOG, now="26 Nov 2026 03:00:00", within=300)["count"] == 0
    with pytest.raises(ValueError, match="needs `now`"):
        redis_host.parse_redis_log(LOG, within=300)


def test_a_routine_diskless_sync_is_not_a_warning_but_losing_every_replica_is():
    done = "9968:M 29 Nov 2026 08:53:24.383 # Diskless rdb transfer, done reading from pipe, {} replicas still up."
    data = redis_host.parse_redis_log("\n".join([done.format(1), done.format(2), done.format(0)]))
    assert [e["kind"] for e in data["entries"]] == ["info", "info", "warning"]
    assert data["problem_count"] == 1 and data["problems"][0]["message"].endswith("0 replicas still up.")


def test_a_successful_config_rewrite_is_routine_but_a_failed_one_is_an_error():
    ok = "9968:M 29 Nov 2026 11:53:35.010 # CONFIG REWRITE executed with success."
    failed = "9968:M 29 Nov 2026 11:53:36.010 # CONFIG REWRITE failed: Permission denied"
    data = redis_host.parse_redis_log("\n".join([ok, failed]))
    assert [e["kind"] for e in data["entries"]] == ["info", "error"]
    assert data["problem_count"] == 1


def test_check_rdb_reports_keys_and_errors():
    ok = redis_host.parse_check_rdb(CHECK_RDB_OK)
    assert ok["ok"] and ok["key_count"] == 51 and ok["loadable_keys"] == 48 and ok["expires"] == 1
    assert ok["databases"] == [0, 2] and ok["redis_version"] == "7.0.15" and ok["created"] == 1795659156
    bad = redis_host.parse_check_rdb(CHECK_RDB_BAD)
    assert not bad["ok"] and bad["error"] == "Unexpected EOF reading RDB file" and bad["while_doing"] == "read-type"
    missing = redis_host.parse_check_rdb("[offset 0] Checking RDB file /nope.rdb\n")
    assert not missing["ok"] and missing["key_count"] is None and "missing" in missing["error"]


def test_check_aof_multipart_broken_then_fixed():
    bad = redis_host.parse_check_aof(CHECK_AOF_BAD)
    assert not bad["ok"] and bad["multipart"] and bad["fixable"] and not bad["fixed"]
    assert bad["invalid"] == ["appendonly.aof.1.incr.aof"]
    assert bad["files"][1]["ok_up_to"] == 7877 and bad["files"][1]["diff"] == 16
    fixed = redis_host.parse_check_aof(CHECK_AOF_FIXED)
    assert fixed["ok"] and fixed["fixed"]
    old = redis_host.parse_check_aof(CHECK_AOF_OLD_OK)
    assert old["ok"] and not old["multipart"] and old["files"][0]["valid"]
    assert not redis_host.parse_check_aof("Cannot open file /x: No such file or directory\n")["ok"]


def test_parse_step_dispatches_and_checks_its_window():
    assert _parse({"format": "ss", "text": NETSTAT})[0]["port"] == 6379
    assert _parse({"format": "free", "text": None})["mem"] == {}
    data = _parse({"format": "redis-log", "text": LOG, "now": "2026-11-26 02:19:00", "within": "5m"})
    assert data["count"] == 4
    from engine.errors import UsageError

    with pytest.raises(UsageError, match="needs `now`"):
        _parse({"format": "redis-log", "text": LOG, "within": "5m"})


@pytest.mark.parametrize("now", ["2026-11-26T02:19:00Z", "2026-11-26T04:19:00+02:00", "2026-11-26T02:19:00.000Z"])
def test_redis_log_window_accepts_the_engines_now(now):
    data = _parse({"format": "redis-log", "text": LOG, "now": now, "within": "5m"})
    assert data["since"] == "2026-11-26T02:14:00"
    assert data["count"] == 4


REDIS_CONF = """\
# Redis configuration file example.
bind 127.0.0.1 -::1
port 6379

maxmemory 2gb
maxmemory-policy allkeys-lru
save 3600 1
save 300 100
requirepass "with space"
client-output-buffer-limit normal 0 0 0
client-output-buffer-limit replica 256mb 64mb 60
  # indented comment
rename-command FLUSHALL ""
"""


def test_parse_redis_conf_from_cat_output():
    data = _parse({"format": "redis-conf", "text": REDIS_CONF})
    assert data["maxmemory"] == "2gb" and data["maxmemory-policy"] == "allkeys-lru"
    assert data["save"] == "3600 1 300 100"
    assert data["client-output-buffer-limit"] == "normal 0 0 0 replica 256mb 64mb 60"
    assert data["requirepass"] == "with space" and data["bind"] == "127.0.0.1 -::1"
    assert data["rename-command"] == 'FLUSHALL ""'
    assert _parse({"format": "redis-conf", "text": None}) == {}
