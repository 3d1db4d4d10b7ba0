"""Host command output (`free`, `df -P`, `ps -eo`, `ss -ltnp` / `netstat -tlnp`) -> data.

Pure functions over the text a command printed on the Redis host, so procedures grade numbers instead
of grepping. Every parser reads the header line to find its columns (procps and util-linux versions
differ), tolerates blank and unknown lines, and never raises on odd input: what it cannot read it leaves
out. Sizes are bytes.
"""

from __future__ import annotations

import re
from typing import Any

# -- free ------------------------------------------------------------------------------------------


def parse_free(text: str) -> dict[str, Any]:
    """`free -b` (or -k: say so with `unit`) -> {mem: {...}, swap: {...}, available_pct, swap_used_pct}.

    Newer procps prints `total used free shared buff/cache available`; older ones `... buffers cached`
    and no `available` column, which is then estimated as free + buffers + cached.
    """
    return _free(text, 1)


def parse_free_kib(text: str) -> dict[str, Any]:
    """`free` / `free -k` output (KiB columns) -> the same data as parse_free, in bytes."""
    return _free(text, 1024)


def _free(text: str, unit: int) -> dict[str, Any]:
    header: list[str] = []
    rows: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        words = line.split()
        if words[0] == "total":
            header = [w.replace("/", "_").replace("-", "_").lower() for w in words]
            continue
        label = words[0].rstrip(":").lower()
        if label not in ("mem", "swap") or not header:
            continue
        values = [_int(w) for w in words[1:]]
        rows[label] = {name: v * unit for name, v in zip(header, values, strict=False) if v is not None}
    mem = rows.get("mem", {})
    if mem and "available" not in mem:
        mem["available"] = mem.get("free", 0) + mem.get("buffers", 0) + mem.get("cached", 0)
    swap = rows.get("swap", {})
    total = mem.get("total") or 0
    swap_total = swap.get("total") or 0
    return {
        "mem": mem,
        "swap": swap,
        "available_pct": round(100.0 * mem.get("available", 0) / total, 1) if total else None,
        "used_pct": round(100.0 * (total - mem.get("available", 0)) / total, 1) if total else None,
        "swap_used_pct": round(100.0 * swap.get("used", 0) / swap_total, 1) if swap_total else 0.0,
    }


# -- df --------------------------------------------------------------------------------------------

_BLOCKS = re.compile(r"^(\d+)([KMGT]?)-blocks$", re.IGNORECASE)
_BLOCK_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_df(text: str) -> list[dict[str, Any]]:
    """`df -P` in any block size (`-B1`, `-k`, default 1024/512) -> one dict per filesystem, sizes in bytes.

    POSIX output keeps one filesystem per line; the mount point is everything after the fifth column,
    so mount points with spaces survive.
    """
    block = 1024
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "Filesystem":
            match = _BLOCKS.match(words[1]) if len(words) > 1 else None
            if match:
                block = int(match.group(1)) * _BLOCK_UNITS[match.group(2).lower()]
            continue
        parts = line.split(None, 5)
        if len(parts) < 6:
            continue
        size, used, avail = _int(parts[1]), _int(parts[2]), _int(parts[3])
        if size is None or used is None or avail is None:
            continue
        capacity = _int(parts[4].rstrip("%"))
        out.append(
            {
                "filesystem": parts[0],
                "size": size * block,
                "used": used * block,
                "available": avail * block,
                "use_pct": capacity
                if capacity is not None
                else (round(100.0 * used / (used + avail)) if used + avail else 0),
                "mount": parts[5],
            }
        )
    return out


# -- ps --------------------------------------------------------------------------------------------

_PS_NAMES = {"command": "args", "cmd": "args", "%cpu": "cpu_pct", "%mem": "mem_pct", "rss": "rss_kib", "vsz": "vsz_kib"}


def parse_ps(text: str) -> list[dict[str, Any]]:
    """`ps -eo pid,user,rss,args` (any columns, `args` last) -> one dict per process.

    RSS and VSZ are KiB in ps; `rss` is added in bytes. The last column keeps its spaces. `program` is
    the first word of args without its directory (`redis-server`), so templates can filter on it.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = [_PS_NAMES.get(w.lower(), w.lower()) for w in lines[0].split()]
    out = []
    for line in lines[1:]:
        parts = line.split(None, len(header) - 1)
        if len(parts) < len(header) - 1:
            continue
        row: dict[str, Any] = {}
        for name, value in zip(header, parts, strict=False):
            row[name] = value if name in ("args", "user", "comm", "stat", "tty") else _number(value)
        row.setdefault("args", "")
        row["program"] = _program(str(row["args"] or row.get("comm") or ""))
        if isinstance(row.get("rss_kib"), int):
            row["rss"] = row["rss_kib"] * 1024
        out.append(row)
    return out


def processes_named(processes: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Processes whose program (first word of args, without its directory) is `name`."""
    return [p for p in processes if _program(str(p.get("args") or p.get("comm") or "")) == name]


def _program(args: str) -> str:
    """'/usr/bin/redis-server 127.0.0.1:6379' -> 'redis-server'; 'redis-rdb-bgsave' stays itself."""
    first = args.split(None, 1)[0] if args.strip() else ""
    return first.rsplit("/", 1)[-1].rstrip(":")


# -- ss / netstat ---------------------------------------------------------------------------------

_SS_USERS = re.compile(r'\("(?P<name>[^"]*)",pid=(?P<pid>\d+)')


def parse_listening(text: str) -> list[dict[str, Any]]:
    """`ss -ltnp` or `netstat -tlnp` (detected from the header) -> listening TCP sockets.

    Each: {address, host, port, pid, process}; pid/process are None when the tool could not see them
    (another user's process without root). IPv6 addresses lose their brackets in `host`.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    out: list[dict[str, Any]] = []
    netstat = any(line.split()[0] == "Proto" for line in lines[:3])
    for line in lines:
        words = line.split()
        if words[0] in ("State", "Netid", "Proto", "Active"):
            continue
        row = _netstat_row(words) if netstat else _ss_row(words, line)
        if row is not None:
            out.append(row)
    return out


def _ss_row(words: list[str], line: str) -> dict[str, Any] | None:
    if words[0] in ("tcp", "tcp6", "udp", "u_str"):  # ss -a style with a Netid column
        words = words[1:]
    if len(words) < 5 or words[0] != "LISTEN":
        return None
    host, port = _split_address(words[3])
    users = _SS_USERS.search(line)
    return {
        "address": words[3],
        "host": host,
        "port": port,
        "pid": int(users.group("pid")) if users else None,
        "process": users.group("name") if users else None,
    }


def _netstat_row(words: list[str]) -> dict[str, Any] | None:
    if len(words) < 6 or not words[0].startswith("tcp") or words[5] != "LISTEN":
        return None
    host, port = _split_address(words[3])
    pid, process = None, None
    if len(words) > 6 and "/" in words[6]:
        pid_text, _, process = " ".join(words[6:]).partition("/")
        pid = _int(pid_text)
        process = process.split()[0] if process.split() else process
    return {"address": words[3], "host": host, "port": port, "pid": pid, "process": process}


def _split_address(address: str) -> tuple[str, int | None]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]").split("%", 1)[0]
    return host or "*", _int(port)


def listening_on(sockets: list[dict[str, Any]], port: int) -> list[dict[str, Any]]:
    return [s for s in sockets if s.get("port") == int(port)]


# -- helpers ---------------------------------------------------------------------------------------


def _int(text: str) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _number(text: str) -> int | float | str:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text
