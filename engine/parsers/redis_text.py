"""Redis replies that redis-py hands over raw (MONITOR lines, CLIENT LIST, SLOWLOG GET, COMMAND INFO) -> data.

Pure functions: the step kinds fetch, these parse, count and rank. Arguments of commands are always
passed through a caller-given `redact` function before they can reach a result (AUTH, HELLO AUTH,
CONFIG SET requirepass, MIGRATE AUTH and ACL SETUSER passwords are masked by engine's Redactor.argv).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Redact = Callable[[Sequence[str]], list[str]]

SAMPLE_LINES = 20
ARG_CHARS = 200  # an argument longer than this is cut in samples (values can be large)
TOP_ENTRIES = 50  # by_prefix / by_client keep this many, the rest is counted under "(other)"

_MONITOR = re.compile(r'^(?P<time>\d+(?:\.\d+)?) \[(?P<db>\d+) (?P<client>.*?)\] (?P<args>".*)$', re.DOTALL)
_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "a": b"\a", "b": b"\b", '"': b'"', "\\": b"\\"}


# -- MONITOR ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MonitorEntry:
    time: float
    db: int
    client: str  # "127.0.0.1:5000", "[::1]:5000", "unix:/path", "lua", ""
    argv: tuple[str, ...]


def parse_monitor_line(line: str | bytes) -> MonitorEntry | None:
    """One MONITOR line (`1700000000.123456 [0 127.0.0.1:5000] "SET" "k" "v"`) -> entry; None if not one.

    Arguments are unescaped exactly as Redis escaped them (sdscatrepr: \\" \\\\ \\n \\r \\t \\a \\b \\xHH),
    so an argument holding spaces or quotes stays one argument (redis-py's own parser joins them).
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    match = _MONITOR.match(line.strip("\r\n"))
    if not match:
        return None
    try:
        argv = tuple(_unquote_args(match.group("args")))
    except ValueError:
        return None
    if not argv:
        return None
    return MonitorEntry(float(match.group("time")), int(match.group("db")), match.group("client"), argv)


def _unquote_args(text: str) -> list[str]:
    out: list[str] = []
    raw = text.encode("utf-8", "surrogateescape")
    i, n = 0, len(raw)
    while i < n:
        if raw[i : i + 1] == b" ":
            i += 1
            continue
        if raw[i : i + 1] != b'"':
            raise ValueError(f"expected a quoted argument at {i}")
        i += 1
        buf = bytearray()
        while True:
            if i >= n:
                raise ValueError("unterminated argument")
            ch = raw[i : i + 1]
            if ch == b"\\" and i + 1 < n:
                nxt = chr(raw[i + 1])
                if nxt == "x" and i + 3 < n:
                    buf += bytes([int(raw[i + 2 : i + 4], 16)])
                    i += 4
                    continue
                buf += _ESCAPES.get(nxt, nxt.encode())
                i += 2
                continue
            if ch == b'"':
                i += 1
                break
            buf += ch
            i += 1
        out.append(buf.decode("utf-8", "replace"))
    return out


def quote_arg(arg: str, limit: int = ARG_CHARS) -> str:
    """An argument as redis-cli shows it ("...", escapes for quotes and control characters), cut at `limit`."""
    cut = ""
    if len(arg) > limit:
        cut = f"...({len(arg.encode('utf-8', 'replace'))} bytes)"
        arg = arg[:limit]
    out = []
    for ch in arg:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"' + cut


def format_monitor_line(entry: MonitorEntry, argv: Sequence[str]) -> str:
    return f"{entry.time:.6f} [{entry.db} {entry.client}] " + " ".join(quote_arg(a) for a in argv)


KeyPositions = Mapping[str, tuple[int, int, int]]


def key_positions(reply: Any) -> dict[str, tuple[int, int, int]]:
    """COMMAND INFO as redis-py returns it (RESP3 dicts or RESP2 lists) -> {name: (first, last, step)}.

    Subcommands are included as 'container|sub' (e.g. 'object|encoding').
    """
    out: dict[str, tuple[int, int, int]] = {}

    def add(entry: Any) -> None:
        if isinstance(entry, Mapping):
            name = _text(entry.get("name", ""))
            first, last, step = entry.get("first_key_pos", 0), entry.get("last_key_pos", 0), entry.get("step_count", 0)
            subs = entry.get("subcommands") or []
        elif isinstance(entry, list | tuple) and len(entry) >= 6:
            name, first, last, step = _text(entry[0]), entry[3], entry[4], entry[5]
            subs = entry[9] if len(entry) > 9 else []
        else:
            return
        if name:
            out[name.lower()] = (int(first or 0), int(last or 0), int(step or 0))
        for sub in subs or []:
            add(sub)

    entries = reply.values() if isinstance(reply, Mapping) else (reply or [])
    for entry in entries:
        if entry:
            add(entry)
    return out


def command_label(argv: Sequence[str], positions: KeyPositions) -> str:
    """'GET', or 'CONFIG GET' for a command with subcommands."""
    name = argv[0].lower()
    container = any(known.startswith(f"{name}|") for known in positions)
    if len(argv) > 1 and container:
        return f"{argv[0].upper()} {argv[1].upper()}"
    return argv[0].upper()


def first_key(argv: Sequence[str], positions: KeyPositions) -> str | None:
    """The first key a command names, by the server's own key positions; None for key-less commands."""
    name = argv[0].lower()
    pos = None
    if len(argv) > 1:
        pos = positions.get(f"{name}|{argv[1].lower()}")
    if pos is None:
        pos = positions.get(name)
    if pos is None or pos[0] <= 0 or pos[0] >= len(argv):
        return None
    return argv[pos[0]]


def key_prefix(key: str) -> str:
    """'tenant:acme:wm:active' -> 'tenant:acme'; 'session:42' -> 'session'; 'plain' -> '(no prefix)'."""
    parts = key.split(":")
    if parts[0] == "tenant" and len(parts) > 2:
        return f"tenant:{parts[1]}"
    return parts[0] if len(parts) > 1 else "(no prefix)"


def _top(counter: Counter[str], limit: int = TOP_ENTRIES) -> dict[str, int]:
    ranked = counter.most_common()
    out = dict(ranked[:limit])
    rest = sum(count for _, count in ranked[limit:])
    if rest:
        out["(other)"] = rest
    return out


def summarise_monitor(
    entries: Iterable[MonitorEntry],
    *,
    seconds: float,
    positions: KeyPositions,
    redact: Redact,
    stopped_by: str,
    sample_lines: int = SAMPLE_LINES,
) -> dict[str, Any]:
    """Counts by command, key prefix and client, and the first lines (arguments redacted, long ones cut)."""
    by_command: Counter[str] = Counter()
    by_prefix: Counter[str] = Counter()
    by_client: Counter[str] = Counter()
    sample: list[str] = []
    total = 0
    for entry in entries:
        total += 1
        by_command[command_label(entry.argv, positions)] += 1
        key = first_key(entry.argv, positions)
        by_prefix[key_prefix(key) if key is not None else "(no key)"] += 1
        by_client[entry.client or "(unknown)"] += 1
        if len(sample) < sample_lines:
            sample.append(format_monitor_line(entry, redact(list(entry.argv))))
    return {
        "commands": total,
        "seconds": round(seconds, 3),
        "rate_per_s": round(total / seconds, 1) if seconds > 0 else None,
        "stopped_by": stopped_by,
        "by_command": dict(by_command.most_common()),
        "by_prefix": _top(by_prefix),
        "by_client": _top(by_client),
        "sample": sample,
    }


# -- CLIENT LIST -----------------------------------------------------------------------------------
_TEXT_FIELDS = frozenset({"addr", "laddr", "name", "flags", "events", "cmd", "user", "lib-name", "lib-ver"})


def parse_client_list(text: str | bytes) -> list[dict[str, Any]]:
    """CLIENT LIST text -> one dict per client; numeric fields as ints (client names cannot hold spaces)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    clients = []
    for line in text.splitlines():
        if not line.strip():
            continue
        entry: dict[str, Any] = {}
        for field in line.split(" "):
            name, sep, value = field.partition("=")
            if not sep:
                continue
            entry[name] = value if name in _TEXT_FIELDS or not re.fullmatch(r"-?\d+", value) else int(value)
        clients.append(entry)
    return clients


def client_matches(client: Mapping[str, Any], *, flags: str | None = None, idle_min: int | None = None) -> bool:
    """`flags`: every flag letter given must be set (e.g. 'b' = blocked); `idle_min`: idle at least that long."""
    if flags and not all(f in str(client.get("flags", "")) for f in flags):
        return False
    return not (idle_min is not None and int(client.get("idle", 0)) < idle_min)


def summarise_clients(
    clients: list[dict[str, Any]], *, flags: str | None, idle_min: int | None, limit: int
) -> dict[str, Any]:
    matched = [c for c in clients if client_matches(c, flags=flags, idle_min=idle_min)]
    keep = ("id", "addr", "name", "age", "idle", "flags", "db", "cmd", "user", "omem", "tot-mem")
    return {
        "total": len(clients),
        "matched": len(matched),
        "filter": {"flags": flags, "idle_min": idle_min},
        "by_cmd": dict(Counter(str(c.get("cmd", "")) for c in matched).most_common()),
        "clients": [{k: c.get(k) for k in keep if k in c} for c in matched[:limit]],
    }


# -- SLOWLOG GET -----------------------------------------------------------------------------------
def parse_slowlog(reply: Any, redact: Redact) -> list[dict[str, Any]]:
    """SLOWLOG GET (raw lists, or dicts when redis-py parsed them) -> entries with redacted arguments."""
    out = []
    for raw in reply or []:
        entry_id: Any  # the server's reply, as redis-py (RESP2 or RESP3) returns it
        start: Any
        duration: Any
        if isinstance(raw, Mapping):
            args = raw.get("command", "")
            argv = [_text(a) for a in args] if isinstance(args, list | tuple) else _text(args).split(" ")
            entry_id, start, duration = raw.get("id"), raw.get("start_time"), raw.get("duration")
            client, client_name = raw.get("client_address"), raw.get("client_name")
        else:
            seq = list(raw)
            entry_id, start, duration = seq[0], seq[1], seq[2]
            argv = [_text(a) for a in seq[3]] if len(seq) > 3 else []
            client = _text(seq[4]) if len(seq) > 4 else None
            client_name = _text(seq[5]) if len(seq) > 5 else None
        shown = redact(argv) if argv else []
        out.append(
            {
                "id": int(entry_id),
                "time": int(start),
                "duration_us": int(duration),
                "duration_ms": round(int(duration) / 1000, 3),
                "command": shown[0].upper() if shown else "",
                "args": " ".join(quote_arg(a, 80) for a in shown[1:]),
                "client": _text(client) if client is not None else None,
                "client_name": _text(client_name) if client_name else None,
            }
        )
    return out


def slowlog_by_command(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{COMMAND: {count, total_ms, max_ms}}, slowest total first."""
    agg: dict[str, dict[str, Any]] = {}
    for e in entries:
        row = agg.setdefault(e["command"], {"count": 0, "total_ms": 0.0, "max_ms": 0.0})
        row["count"] += 1
        row["total_ms"] = round(row["total_ms"] + e["duration_ms"], 3)
        row["max_ms"] = max(row["max_ms"], e["duration_ms"])
    return dict(sorted(agg.items(), key=lambda kv: -kv[1]["total_ms"]))


# -- INFO commandstats -----------------------------------------------------------------------------
def top_commandstats(info: Mapping[str, Any], top: int) -> dict[str, Any]:
    """INFO commandstats (as redis-py parses it) -> totals and the `top` commands by CPU time spent."""
    rows: list[dict[str, Any]] = []
    for name, stats in info.items():
        if not str(name).startswith("cmdstat_"):
            continue
        if isinstance(stats, str):  # calls=1,usec=2,... unparsed
            stats = {k: _number(v) for k, _, v in (p.partition("=") for p in stats.split(","))}
        command = str(name)[len("cmdstat_") :].replace("|", " ").upper()
        rows.append(
            {
                "command": command,
                "calls": int(stats.get("calls", 0)),
                "usec": int(stats.get("usec", 0)),
                "usec_per_call": float(stats.get("usec_per_call", 0.0)),
                "rejected_calls": int(stats.get("rejected_calls", 0)),
                "failed_calls": int(stats.get("failed_calls", 0)),
            }
        )
    total_usec = sum(r["usec"] for r in rows)
    total_calls = sum(r["calls"] for r in rows)
    for r in rows:
        r["time_pct"] = round(100.0 * r["usec"] / total_usec, 1) if total_usec else 0.0
        r["calls_pct"] = round(100.0 * r["calls"] / total_calls, 1) if total_calls else 0.0
    by_time = sorted(rows, key=lambda r: (-r["usec"], -r["calls"], r["command"]))
    by_calls = sorted(rows, key=lambda r: (-r["calls"], -r["usec"], r["command"]))
    return {
        "commands": len(rows),
        "total_calls": total_calls,
        "total_usec": total_usec,
        "by_time": by_time[:top],
        "by_calls": by_calls[:top],
    }


def _number(value: str) -> float | int | str:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
