"""Alertmanager webhook payloads, alert -> inventory target, group key -> incident id (pure).

Mapping an alert to a target, first that holds:
1. a `runbook_target` label naming an inventory target (NAME or ENVIRONMENT/NAME);
2. a `redis` label, then the `instance` label, whose host:port (any redis:// or rediss:// scheme and
   /db dropped) is the host:port of exactly one inventory target's redis url, or is a target's name.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class BadPayload(ValueError):
    """The body is not an Alertmanager notification: answered 400."""


@dataclass(frozen=True)
class Alert:
    status: str
    labels: dict[str, str]
    starts_at: datetime | None


@dataclass(frozen=True)
class Notification:
    group_key: str
    status: str
    alerts: tuple[Alert, ...]

    @property
    def firing(self) -> tuple[Alert, ...]:
        return tuple(a for a in self.alerts if a.status == "firing")


def parse(body: bytes) -> Notification:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadPayload(f"not JSON: {exc}") from None
    except RecursionError:  # [[[[...]]]] nested deeper than the parser goes, within the size cap
        raise BadPayload("JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise BadPayload("expected a JSON object")
    group_key, alerts = data.get("groupKey"), data.get("alerts")
    if not isinstance(group_key, str) or not group_key:
        raise BadPayload("groupKey: expected a non-empty string")
    if not isinstance(alerts, list) or not alerts:
        raise BadPayload("alerts: expected a non-empty list")
    parsed = []
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
            raise BadPayload(f"alerts[{i}]: expected an object with labels")
        labels = alert["labels"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise BadPayload(f"alerts[{i}].labels: expected string values")
        status = alert.get("status")
        if status not in ("firing", "resolved"):
            raise BadPayload(f"alerts[{i}].status: expected firing or resolved")
        parsed.append(Alert(status, dict(labels), parse_time(alert.get("startsAt"))))
    return Notification(group_key, str(data.get("status", "")), tuple(parsed))


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_time(value: Any) -> datetime | None:
    """Alertmanager's RFC 3339 (nanoseconds, Z or offset); None for absent, zero or unreadable."""
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    try:
        moment = datetime.fromisoformat(_FRACTION.sub(r"\1", value.replace("Z", "+00:00"), count=1))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def incident_id(group_key: str) -> str:
    """`alert-<readable part>-<hash>`: the incident id charset, at most 128 characters, one per group."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", group_key).strip("-._")[:80]
    digest = hashlib.sha256(group_key.encode("utf-8")).hexdigest()[:12]
    return f"alert-{slug}-{digest}" if slug else f"alert-{digest}"


def _address(value: str) -> str:
    text = re.sub(r"^[a-z]+://", "", value.strip())
    text = text.split("@", 1)[-1]
    return text.split("/", 1)[0].lower()


def map_target(labels: Mapping[str, str], inventory: Mapping[str, Any]) -> str | None:
    """The ENVIRONMENT/NAME of the inventory target this alert is about, or None."""
    targets: dict[str, str] = {}  # ENV/NAME -> host:port of its redis
    for env, body in (inventory.get("environments") or {}).items():
        for name, spec in (body.get("targets") or {}).items():
            url = (spec.get("redis") or {}).get("url", "")
            targets[f"{env}/{name}"] = _address(url) if url else ""
    wanted = labels.get("runbook_target")
    if wanted:
        found = [t for t in targets if t == wanted or t.split("/", 1)[1] == wanted]
        return found[0] if len(found) == 1 else None
    for label in ("redis", "instance"):
        value = labels.get(label)
        if not value:
            continue
        address = _address(value)
        found = [t for t, a in targets.items() if a and (a == address or _same_host_port(a, address))]
        found = found or [t for t in targets if t.split("/", 1)[1] == value]
        if len(found) == 1:
            return found[0]
    return None


def _same_host_port(a: str, b: str) -> bool:
    loopback = {"localhost", "127.0.0.1", "::1", "[::1]"}
    ha, _, pa = a.rpartition(":")
    hb, _, pb = b.rpartition(":")
    return pa == pb and ha in loopback and hb in loopback
