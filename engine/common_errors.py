"""The runbook's Common Errors table, matched against any Redis error a step meets."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownError:
    code: str
    pattern: str
    cause: str
    solution: str


# Runbook "Common Errors" table first, then the other errors an operator meets in the same situations.
KNOWN_ERRORS: tuple[KnownError, ...] = (
    KnownError(
        "NOAUTH",
        r"NOAUTH|Authentication required",
        "Missing/wrong password",
        "Set AUTH: give the password through REDISCLI_AUTH or the inventory's password_env/password_file",
    ),
    KnownError(
        "WRONGPASS",
        r"WRONGPASS|invalid username-password|invalid password",
        "Wrong password or username",
        "Check the credentials in the inventory; they may have been rotated",
    ),
    KnownError(
        "OOM",
        r"OOM command not allowed",
        "Memory limit exceeded",
        "Increase memory or clear cache (redis/emergency-oom)",
    ),
    KnownError(
        "CONNREFUSED",
        r"Connection refused|Error 111|connecting to",
        "Redis service down",
        "Restart service: systemctl restart redis (redis/emergency-service-down)",
    ),
    KnownError("READONLY", r"READONLY", "Connected to replica", "Connect to master instance"),
    KnownError(
        "MOVED",
        r"^MOVED|\bMOVED \d+",
        "Redis cluster topology changed",
        "Update client cluster configuration (connect in cluster mode or to the node named)",
    ),
    KnownError(
        "LOADING",
        r"LOADING",
        "Redis is loading the dataset in memory",
        "Wait until loading finishes (INFO persistence: loading:0), then retry",
    ),
    KnownError(
        "BUSY",
        r"^BUSY\b|BUSY Redis is busy",
        "A script or function is running too long",
        "SCRIPT KILL / FUNCTION KILL, or SHUTDOWN NOSAVE if it already wrote",
    ),
    KnownError(
        "MASTERDOWN",
        r"MASTERDOWN",
        "The replica lost its link with the master",
        "Check the master; replica-serve-stale-data no makes replicas refuse while the link is down",
    ),
    KnownError(
        "CROSSSLOT",
        r"CROSSSLOT",
        "Keys in one command map to different cluster slots",
        "Use hash tags {...} so the keys share a slot, or split the command per key",
    ),
)


def error_text(exc: BaseException) -> str:
    """The error as the server sent it: redis-py strips the code (OOM, READONLY, ...) into `status_code`."""
    text = str(exc)
    code = getattr(exc, "status_code", None)
    if code and not text.startswith(str(code)):
        return f"{code} {text}"
    names = {
        "OutOfMemoryError": "OOM",
        "ReadOnlyError": "READONLY",
        "MovedError": "MOVED",
        "AskError": "ASK",
        "BusyLoadingError": "LOADING",
        "MasterDownError": "MASTERDOWN",
        "ClusterCrossSlotError": "CROSSSLOT",
    }
    prefix = names.get(type(exc).__name__)
    if prefix and not text.startswith(prefix):
        return f"{prefix} {text}"
    return text


def explain(message: str) -> KnownError | None:
    for known in KNOWN_ERRORS:
        if re.search(known.pattern, message, re.IGNORECASE if known.code == "CONNREFUSED" else 0):
            return known
    return None
