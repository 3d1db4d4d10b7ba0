"""redis-py's exceptions as the engine's errors, in one table (as httpx maps httpcore's).

Every Redis call a step kind makes goes through the adapter, and the adapter hands every redis-py
exception to `translate`: the message carries the server's full error text (with the code redis-py
strips), the runbook's Common Errors advice when one matches, and the class that sets the exit code
(TargetError: the target could not be reached or refused us; ActionFailed: it answered with an error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis

from engine.errors import ActionFailed, TargetError

# How a TLS port answers a plain-text client: it drops the connection before any Redis reply.
_CLOSED_AT_ONCE = re.compile(r"Connection reset by peer|Connection closed by server|Error 104\b", re.IGNORECASE)


@dataclass(frozen=True)
class Site:
    """Where the error happened, for the message: the endpoint, its timeout, and what was being done."""

    url: str
    timeout: float
    tls: bool = False
    connecting: bool = False  # opening a connection (a refused one says "cannot connect", not "lost")
    doing: str | None = None  # e.g. "MONITOR": named in the message after the URL


def translate(exc: redis.RedisError, site: Site) -> TargetError:
    """redis-py's exception -> ours, with the runbook's advice matched on the server's full error text."""
    from engine.common_errors import error_text

    text = error_text(exc)
    url = f"{site.url}: {site.doing}" if site.doing else site.url
    if isinstance(exc, redis.BusyLoadingError):  # a ConnectionError subclass, but the server is up
        return TargetError(f"{url}: {text}", advice=explain_text(text))
    if isinstance(exc, redis.AuthenticationError):
        return TargetError(f"{url}: authentication failed: {text}", advice=explain_text(text))
    if isinstance(exc, redis.TimeoutError):
        return TargetError(f"{url}: timed out after {site.timeout:g}s: {text}")
    if isinstance(exc, redis.ConnectionError):
        verb = "cannot connect" if site.connecting else "connection lost"
        if site.connecting and not site.tls and _CLOSED_AT_ONCE.search(text):
            text = f"the server closed before answering a plain-text client ({text})"
        return TargetError(f"{url}: {verb}: {text}", advice=explain_text(text) or explain_text("Connection refused"))
    if site.connecting:
        return TargetError(f"{url}: {text}", advice=explain_text(text))
    shown = f"{site.doing}: {text}" if site.doing else text
    return ActionFailed(shown, advice=explain_text(text))


def is_refused_credential(exc: BaseException) -> bool:
    """The server said no to the user/password (WRONGPASS, invalid password), not to anything else."""
    return isinstance(exc, redis.AuthenticationError)


def explain_text(message: str) -> str | None:
    """The runbook's Common Errors advice for a Redis error message, when there is one."""
    from engine.common_errors import explain

    found = explain(message)
    return f"{found.cause}. {found.solution}" if found else None
