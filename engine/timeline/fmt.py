"""Times and durations as people read them in a post-mortem, in one place so every format agrees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 string as an aware UTC datetime; None if it is missing or not a time.

    A time without an offset is taken as UTC: transcripts only ever hold UTC.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: 0001-01-01T00:00:00+01:00
        return None


def iso(moment: datetime | None) -> str | None:
    """RFC 3339 UTC with microseconds (the transcript's own spelling), for JSON."""
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def clock(moment: datetime) -> str:
    """HH:MM:SS in UTC: the time column inside a day section."""
    return moment.astimezone(UTC).strftime("%H:%M:%S")


def stamp(moment: datetime | None) -> str:
    """Date and time in UTC, for facts that stand outside a day section."""
    if moment is None:
        return "unknown"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def local(moment: datetime, zone: ZoneInfo | None) -> str:
    """The same moment in `zone` (with the date when it is not the UTC date); '' without a zone."""
    if zone is None:
        return ""
    there = moment.astimezone(zone)
    prefix = "" if there.date() == moment.astimezone(UTC).date() else there.strftime("%m-%d ")
    return prefix + there.strftime("%H:%M:%S %Z")


def offset(delta: timedelta | None) -> str:
    """T+HH:MM:SS from the incident start (T-... before it, +Nd for days)."""
    if delta is None:
        return ""
    sign = "-" if delta < timedelta(0) else "+"
    seconds = int(abs(delta).total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"T{sign}{days}d {text}" if days else f"T{sign}{text}"


def duration(delta: timedelta | None) -> str:
    """A human duration: '1h 02m 03s', '4m 10s', '12s', '350 ms'."""
    if delta is None:
        return "unknown"
    seconds = delta.total_seconds()
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:.0f} ms"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{sign}{minutes}m {secs:02d}s"
    return f"{sign}{secs}s"


def millis_delta(value: Any) -> timedelta | None:
    """A duration_ms as a timedelta; None when absent or beyond what a timedelta holds (a damaged line)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return timedelta(milliseconds=value)
    except (OverflowError, ValueError):
        return None


def millis(value: Any) -> str:
    """A step's duration_ms as text; '' when absent."""
    delta = millis_delta(value)
    return "" if delta is None else duration(delta)
