"""What changed, in words: a transcript's change objects as one short line each.

The transcript is already redacted, and a `password_rotated` change carries only the setting's
name; still, nothing here prints a value that is not in the change object's known fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from engine.records import ChangeRecord

SAMPLE = 5
"""Keys named per change; the rest are counted."""


def change_text(change: ChangeRecord) -> str:
    """One change object as text, e.g. `config maxmemory: 0 -> 4294967296`."""
    kind = str(change.get("kind", "change"))
    render = _RENDERERS.get(kind)
    return render(change) if render else _generic(kind, change)


def changes_text(changes: Any) -> tuple[str, ...]:
    """Every change object in a list (anything else in the list is ignored)."""
    if not isinstance(changes, list):
        return ()
    # a JSON object from a transcript, trusted to be a change record: every renderer reads it with .get
    return tuple(change_text(cast(ChangeRecord, c)) for c in changes if isinstance(c, Mapping))


def _value(value: Any) -> str:
    return "(unset)" if value is None or value == "" else str(value)


def _keys(change: ChangeRecord) -> str:
    keys = change.get("keys")
    if not isinstance(keys, list) or not keys:
        scope = change.get("scope")
        return f" ({scope})" if scope else ""
    shown = ", ".join(str(k) for k in keys[:SAMPLE])
    count = change.get("count")
    total = count if isinstance(count, int) else len(keys)
    more = total - min(len(keys), SAMPLE)
    return f" ({shown}{f', +{more} more' if more > 0 else ''})"


def _count(change: ChangeRecord) -> str:
    count = change.get("count")
    if isinstance(count, int):
        return str(count)
    keys = change.get("keys")
    return str(len(keys)) if isinstance(keys, list) else "?"


def _config(change: ChangeRecord) -> str:
    return f"config {change.get('name', '?')}: {_value(change.get('before'))} -> {_value(change.get('after'))}"


def _keys_removed(change: ChangeRecord) -> str:
    return f"keys removed: {_count(change)}{_keys(change)}"


def _ttl_set(change: ChangeRecord) -> str:
    count = _count(change)
    noun = "key" if count == "1" else "keys"
    after = change.get("ttl_after")
    to = f" -> {after}s" if isinstance(after, int | float) and not isinstance(after, bool) else ""
    return f"TTL set on {count} {noun}{_keys(change)}{to}"


def _keys_written(change: ChangeRecord) -> str:
    by = f" by {change['command']}" if change.get("command") else ""
    return f"keys written: {_count(change)}{_keys(change)}{by}"


def _password(change: ChangeRecord) -> str:
    name = change.get("name")
    return f"password rotated ({name})" if name else "password rotated"


def _service(change: ChangeRecord) -> str:
    host = f" on {change['host']}" if change.get("host") else ""
    return f"service {change.get('action', 'changed')}{host}"


def _file(change: ChangeRecord) -> str:
    return f"file {change.get('action', 'changed')}: {change.get('path', '?')}"


def _command(change: ChangeRecord) -> str:
    host = f" on {change['host']}" if change.get("host") else ""
    return f"ran {change.get('command', '?')}{host}"


def _generic(kind: str, change: ChangeRecord) -> str:
    parts = [f"{k}={_short(v)}" for k, v in change.items() if k != "kind"]
    return f"{kind}: {', '.join(parts)}" if parts else kind


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_RENDERERS: dict[str, Callable[[ChangeRecord], str]] = {
    "config": _config,
    "keys_removed": _keys_removed,
    "ttl_set": _ttl_set,
    "keys_written": _keys_written,
    "password_rotated": _password,
    "service": _service,
    "file": _file,
    "command": _command,
}


def join(texts: Iterable[str]) -> str:
    """Several changes on one line."""
    return "; ".join(texts)
