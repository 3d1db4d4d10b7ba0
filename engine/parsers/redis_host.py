"""What Redis leaves on its host -> data: log lines, `redis-check-rdb` and `redis-check-aof` reports.

Pure functions. The log parser reads the Redis 3+ line format (`<pid>:<role> <day> <Mon> <year>
<hh:mm:ss.mmm> <level> <message>`) wherever it appears in a line, so journald prefixes do not hide it,
and grades each line: an error, a warning worth a look, a host tuning warning (printed at every start
on untuned hosts), or information. Times are the host's local wall clock, as Redis writes them; a
window ("the last 5 minutes") is measured against the host's own clock (`now`), never the engine's.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, start=1)}
_LOG_LINE = re.compile(
    r"(?P<pid>\d+):(?P<role>[XCSM]) (?P<day>\d{1,2}) (?P<mon>[A-Z][a-z]{2}) (?P<year>\d{4}) "
    r"(?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2})(?:\.(?P<ms>\d{1,6}))? (?P<level>[.\-*#]) ?(?P<message>.*)$"
)
_LEVELS = {".": "debug", "-": "verbose", "*": "notice", "#": "warning"}
_ROLES = {"X": "sentinel", "C": "child", "S": "replica", "M": "master"}

# Warnings Redis prints at every start on a host that is not tuned for it: real advice, not an incident.
_TUNING = re.compile(
    r"overcommit|transparent huge pages|tcp backlog|somaxconn|max(imum)? (number of )?(open files|file descriptors)"
    r"|maxclients",
    re.IGNORECASE,
)
# Lines at `#` level that are part of every normal start, stop or save.
_ROUTINE = re.compile(
    r"oO0OoO0OoO0Oo|^Redis version=|^Configuration loaded|^Server initialized|^User requested shutdown"
    r"|^Redis is now ready to exit|^Saving the final RDB snapshot|^Received SIG(TERM|INT)|^Warning: no config file"
    r"|^Server started|^Ready to accept|^DB saved on disk|^Removing the pid file|^Calling fsync|^Stopping AOF"
    r"|^Redis ready to exit|^Synchronization with replica|^Connection with (replica|master) .* lost"
    r"|^CONFIG REWRITE executed with success"  # logged at warning level by every successful CONFIG REWRITE
    # a primary logs every diskless full sync at warning level; only "0 replicas still up" is a problem
    r"|^Diskless rdb transfer, done reading from pipe, [1-9]\d* replicas? still up",
    re.IGNORECASE,
)
_ERROR = re.compile(
    r"\b(error|errors|fatal|fail(ed)?|failure|corrupt\w*|crash\w*|panic|assertion|unrecoverable|can'?t|cannot"
    r"|unable|bad file format|short read|unexpected end of file|unexpected eof|oom|out of memory|denied"
    r"|segfault|bug report|refus\w+|aborting|killed)\b",
    re.IGNORECASE,
)


def parse_time(text: str) -> datetime | None:
    """'2026-11-26 02:03:04', '2026-11-26T02:03:04', Redis's '26 Nov 2026 02:03:04.567', or the engine's own
    `now` ('2026-11-26T02:03:04Z', or with an offset: converted to UTC) -> naive datetime."""
    text = str(text).strip()
    if text.endswith("Z") or re.search(r"[+-]\d{2}:?\d{2}$", text):
        try:
            aware = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            aware = None
        if aware is not None and aware.tzinfo is not None:
            return aware.astimezone(UTC).replace(tzinfo=None)
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    match = re.match(r"^(\d{1,2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$", text)
    if match and match.group(2) in _MONTHS:
        day, mon, year, h, m, s, frac = match.groups()
        micro = int((frac or "0").ljust(6, "0"))
        return datetime(int(year), _MONTHS[mon], int(day), int(h), int(m), int(s), micro)
    return None


def classify(level: str, message: str) -> str:
    """error | warning | tuning | info, for one log message."""
    if _TUNING.search(message) and not re.search(r"\b(fatal|crash|corrupt)", message, re.IGNORECASE):
        return "tuning"
    if _ROUTINE.search(message.strip()):
        return "info"
    if _ERROR.search(message):
        return "error"
    return "warning" if level == "warning" else "info"


def parse_log_line(line: str) -> dict[str, Any] | None:
    match = _LOG_LINE.search(line.rstrip("\r\n"))
    if not match or match.group("mon") not in _MONTHS:
        return None
    g = match.groupdict()
    try:
        when = datetime(
            int(g["year"]),
            _MONTHS[g["mon"]],
            int(g["day"]),
            int(g["h"]),
            int(g["m"]),
            int(g["s"]),
            int((g["ms"] or "0").ljust(6, "0")),
        )
    except ValueError:
        return None
    level = _LEVELS[g["level"]]
    message = g["message"].strip()
    return {
        "time": when.isoformat(timespec="milliseconds"),
        "pid": int(g["pid"]),
        "role": _ROLES[g["role"]],
        "level": level,
        "message": message,
        "kind": classify(level, message),
        "_dt": when,
    }


def parse_redis_log(
    text: str, *, now: str | None = None, within: float | None = None, keep: int = 200
) -> dict[str, Any]:
    """Redis log text -> {entries, errors, warnings, tuning, problems, counts, window}.

    `within` (seconds) keeps only lines from the last `within` seconds before `now`, the host's clock
    as text (`date '+%Y-%m-%d %H:%M:%S'` on the host). Lists keep the last `keep` items.
    """
    cutoff = None
    now_dt = parse_time(now) if now else None
    if within is not None:
        if now_dt is None:
            raise ValueError("a time window needs `now`, the host's clock (date '+%Y-%m-%d %H:%M:%S' on the host)")
        cutoff = now_dt - timedelta(seconds=float(within))
    entries = []
    for line in str(text).splitlines():
        entry = parse_log_line(line)
        if entry is None:
            continue
        if cutoff is not None and entry["_dt"] < cutoff:
            continue
        if now_dt is not None and within is not None and entry["_dt"] > now_dt + timedelta(seconds=60):
            continue  # a line from the future is a different clock; never count it as "recent"
        entries.append(entry)
    for entry in entries:
        entry.pop("_dt")
    by_kind: dict[str, list[dict[str, Any]]] = {"error": [], "warning": [], "tuning": [], "info": []}
    for entry in entries:
        by_kind[entry["kind"]].append(entry)
    problems = [e for e in entries if e["kind"] in ("error", "warning")]
    return {
        "entries": entries[-keep:],
        "errors": by_kind["error"][-keep:],
        "warnings": by_kind["warning"][-keep:],
        "tuning": by_kind["tuning"][-keep:],
        "problems": problems[-keep:],
        "count": len(entries),
        "error_count": len(by_kind["error"]),
        "warning_count": len(by_kind["warning"]),
        "problem_count": len(problems),
        "last": entries[-1]["time"] if entries else None,
        "now": now_dt.isoformat() if now_dt else None,
        "since": cutoff.isoformat() if cutoff else None,
    }


# -- redis-check-rdb ----------------------------------------------------------------------------

_INFO_COUNT = re.compile(r"^\[info\] (\d+) (keys read|expires|already expired)\s*$")
_AUX = re.compile(r"AUX FIELD ([\w-]+) = '([^']*)'")


def parse_check_rdb(text: str) -> dict[str, Any]:
    """`redis-check-rdb <file>` output -> {ok, key_count, expires, already_expired, loadable_keys, error, ...}.

    `key_count` (not `keys`: templates read `x.keys` as the dict method) counts every key read, across
    databases; `loadable_keys` leaves out the ones already expired, which a master drops while loading:
    that is what DBSIZE (summed over databases) shows after a restore.
    """
    counts: dict[str, int] = {}
    aux: dict[str, str] = {}
    error = doing = file = None
    dbs: list[int] = []
    lines = str(text).splitlines()
    for i, raw in enumerate(lines):
        line = raw.strip()
        match = _INFO_COUNT.match(line)
        if match:
            counts[match.group(2)] = int(match.group(1))
            continue
        aux_match = _AUX.search(line)
        if aux_match:
            aux[aux_match.group(1)] = aux_match.group(2)
        if "Checking RDB file" in line:
            file = line.split("Checking RDB file", 1)[1].strip()
        elif "Selecting DB ID" in line:
            try:
                dbs.append(int(line.rsplit(" ", 1)[1]))
            except ValueError:
                pass
        elif "RDB ERROR DETECTED" in line and i + 1 < len(lines):
            error = re.sub(r"^\[offset \d+\]\s*", "", lines[i + 1].strip())
        elif line.startswith("[additional info] While doing:"):
            doing = line.split(":", 1)[1].strip()
    ok = "RDB looks OK" in text and "RDB ERROR DETECTED" not in text
    if not ok and error is None:
        error = "no 'RDB looks OK' in the output: the file is missing, unreadable or not an RDB file"
    keys = counts.get("keys read")
    expired = counts.get("already expired", 0)
    return {
        "ok": ok,
        "file": file,
        "key_count": keys,
        "expires": counts.get("expires"),
        "already_expired": expired,
        "loadable_keys": keys - expired if keys is not None else None,
        "databases": sorted(set(dbs)),
        "redis_version": aux.get("redis-ver"),
        "created": int(aux["ctime"]) if aux.get("ctime", "").isdigit() else None,
        "aof_base": aux.get("aof-base") == "1",
        "error": None if ok else error,
        "while_doing": doing,
    }


# -- redis-check-aof ----------------------------------------------------------------------------

_ANALYZED = re.compile(
    r"AOF analyzed: filename=(?P<filename>.*?), size=(?P<size>\d+), ok_up_to=(?P<ok>\d+), "
    r"ok_up_to_line=(?P<line>\d+), diff=(?P<diff>\d+)"
)
_PROBLEM = re.compile(
    r"not valid|format error|unexpected|invalid|failed|can'?t|cannot|no such file|error|not exist|missing",
    re.IGNORECASE,
)


def parse_check_aof(text: str) -> dict[str, Any]:
    """`redis-check-aof [--fix] <manifest|file>` output -> {ok, multipart, files, invalid, fixed, problems}.

    Redis 7 checks every file the manifest lists (the base may be RDB-format); only the last INCR file
    can be fixed by truncation, which is what `--fix` does (`fixed`).
    """
    files = []
    for match in _ANALYZED.finditer(str(text)):
        diff = int(match.group("diff"))
        files.append(
            {
                "filename": match.group("filename"),
                "size": int(match.group("size")),
                "ok_up_to": int(match.group("ok")),
                "ok_up_to_line": int(match.group("line")),
                "diff": diff,
                "valid": diff == 0,
            }
        )
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    fixed = any("Successfully truncated AOF" in line for line in lines)
    problems = [
        line
        for line in lines
        if _PROBLEM.search(line) and not line.startswith(("AOF analyzed", "[offset", "[info]", "Start"))
    ]
    invalid = [f["filename"] for f in files if not f["valid"]]
    all_valid = any("are valid" in line or line.endswith(" is valid") for line in lines)
    remaining = [p for p in problems if not (fixed and "not valid" in p)]
    ok = (not invalid or fixed) and all_valid and not remaining
    return {
        "ok": ok,
        "multipart": "Multi Part AOF" in str(text),
        "files": files,
        "invalid": invalid,
        "fixable": any("--fix" in line for line in lines),
        "fixed": fixed,
        "problems": problems,
    }
