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
    # TLS before CONNREFUSED: redis-py words every failed connect "Error N connecting to ...", and a TLS
    # failure is a healthy server we cannot trust (or that cannot trust us): never "restart it".
    KnownError(
        "TLS_HOSTNAME",
        r"Hostname mismatch|IP address mismatch|CERTIFICATE_VERIFY_FAILED.*not valid for",
        "The server's TLS certificate is for another name (the server is up: do not restart it)",
        "Connect by a name the certificate carries, or set the inventory's redis.tls.server_name to it",
    ),
    KnownError(
        "TLS_UNTRUSTED",
        r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|self.signed certificate|unable to get local issuer"
        r"|certificate has expired",
        "The server's TLS certificate is not trusted: unknown or self-signed CA, or expired (the server is up: do not "
        "restart it)",
        "Name the CA that signed it in the inventory's redis.tls.ca_file, or renew an expired certificate",
    ),
    KnownError(
        "TLS_NOT_TLS",
        r"WRONG_VERSION_NUMBER|wrong version number|record layer failure|packet length too long"
        r"|TLS handshake timed out|connecting to.*(?:EOF occurred in violation of protocol|UNEXPECTED_EOF)",
        "This port does not speak TLS: a rediss:// URL points at a plain Redis port (the server is up: do not "
        "restart it)",
        "Use redis:// for a plain port, or the port the server's tls-port names",
    ),
    KnownError(
        "TLS_REQUIRED",
        r"closed before answering a plain-text client",
        "The server closed the connection at once: most likely a TLS port (tls-port) reached with a plain "
        "redis:// URL (the server is up: do not restart it)",
        "Use a rediss:// URL (and the inventory's redis.tls block for its CA)",
    ),
    KnownError(
        "TLS_CLIENT_CERT",
        r"certificate required|CERTIFICATE_REQUIRED|alert bad certificate|BAD_CERTIFICATE|alert unknown ca"
        r"|UNKNOWN_CA|(?:writing|reading).*EOF occurred in violation of protocol",
        "The server ended the TLS session: it requires a client certificate (tls-auth-clients) or refused ours "
        "(the server is up: do not restart it)",
        "Set the inventory's redis.tls.cert_file and key_file to a certificate signed by a CA the server trusts",
    ),
    KnownError(
        "TLS_HANDSHAKE",
        r"\[SSL[:\]]|SSLError|handshake failure|HANDSHAKE_FAILURE|TLSV1_ALERT|no protocols available"
        r"|EOF occurred in violation of protocol",
        "The TLS handshake failed: no protocol or cipher in common, or a certificate refused (the server is up: "
        "do not restart it)",
        "Compare the server's tls-protocols / tls-ciphers with this client, and the inventory's redis.tls settings",
    ),
    KnownError(
        "CONNREFUSED",
        r"Connection refused|Error 111|connecting to",
        "Redis service down",
        "Restart service: systemctl restart redis (redis/emergency-service-down). Behind Sentinel, the primary "
        "may be down because Sentinel already promoted a replica: clients must ask Sentinel for the primary; "
        "redis/emergency-service-down and redis/troubleshoot-connection say so and restart nothing",
    ),
    KnownError(
        "READONLY",
        r"READONLY",
        "Connected to replica",
        "Connect to master instance. A runbook run does this itself: it discovers the deployment at start, sends "
        "writes aimed at a replica to the primary it found (recorded: 'target resolved to a replica; used primary "
        "X') and asks again after a failover; this error reaches you only when no primary could be found",
    ),
    KnownError(
        "MOVED",
        r"^MOVED|\bMOVED \d+",
        "Redis cluster topology changed",
        "Update client cluster configuration (connect in cluster mode or to the node named). A runbook run does "
        "this itself: key commands go to their slot's owner, MOVED and ASK are followed (ASKING for ASK) and the "
        "refreshed topology is recorded (topology.changed)",
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
        flags = re.IGNORECASE if known.code == "CONNREFUSED" or known.code.startswith("TLS_") else 0
        if re.search(known.pattern, message, flags):
            return known
    return None
