"""Which keys a restore may write: the export's own pattern and the tenant asked for, both, always.

An export's header says what it holds (`match: tenant:acme:*`), but its body is only checksummed,
not signed: anyone who can edit the file can recompute the checksum. So every record is checked
against the header's pattern and against the tenant the operator asked to restore, before anything
is sent, and the keys are counted by tenant for the gate. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.keyspace.aggregate import tenant_of

SAMPLE = 5


def redis_glob(pattern: str) -> re.Pattern[bytes]:
    """A Redis MATCH glob as a regex over bytes, with Redis's rules (stringmatchlen).

    `*` any run, `?` one byte, `[abc]`, `[^abc]`, `[a-z]` a class (an unclosed class ends with the
    pattern), `\\x` the literal x (also inside a class).
    """
    raw = pattern.encode("utf-8")
    out = []
    i = 0
    while i < len(raw):
        char = raw[i : i + 1]
        if char == b"\\" and i + 1 < len(raw):
            out.append(re.escape(raw[i + 1 : i + 2]))
            i += 2
        elif char == b"*":
            out.append(b".*")
            i += 1
        elif char == b"?":
            out.append(b".")
            i += 1
        elif char == b"[":
            i += 1
            negate = raw[i : i + 1] == b"^"
            if negate:
                i += 1
            members = []
            while i < len(raw) and raw[i : i + 1] != b"]":
                if raw[i : i + 1] == b"\\" and i + 1 < len(raw):
                    members.append(re.escape(raw[i + 1 : i + 2]))
                    i += 2
                elif i + 2 < len(raw) and raw[i + 1 : i + 2] == b"-" and raw[i + 2 : i + 3] != b"]":
                    low, high = sorted((raw[i], raw[i + 2]))
                    members.append(re.escape(bytes([low])) + b"-" + re.escape(bytes([high])))
                    i += 3
                else:
                    members.append(re.escape(raw[i : i + 1]))
                    i += 1
            i += 1  # the closing ]
            if members:
                out.append(b"[" + (b"^" if negate else b"") + b"".join(members) + b"]")
            else:
                out.append(b"." if negate else b"(?!)")  # [^] matches any byte, [] none
        else:
            out.append(re.escape(char))
            i += 1
    return re.compile(b"".join(out), re.DOTALL)


def tenant_pattern(tenant: str) -> str:
    """tenant:<name>:* with every glob character of the name escaped."""
    return "tenant:" + re.sub(r"([*?\[\]\\])", r"\\\1", tenant) + ":*"


@dataclass
class ScopeReport:
    """Every key of a file counted by tenant, and those outside the allowed patterns (`add` each key)."""

    patterns: tuple[str, ...]
    keys: int = 0
    by_tenant: dict[str, int] = field(default_factory=dict)
    outside: int = 0
    outside_by_tenant: dict[str, int] = field(default_factory=dict)
    outside_sample: list[str] = field(default_factory=list)
    compiled: list[re.Pattern[bytes]] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.compiled = [redis_glob(p) for p in self.patterns]

    def add(self, key: bytes) -> None:
        text = key.decode("utf-8", "backslashreplace")
        tenant = tenant_of(text)
        self.keys += 1
        self.by_tenant[tenant] = self.by_tenant.get(tenant, 0) + 1
        if not all(regex.fullmatch(key) for regex in self.compiled):
            self.outside += 1
            self.outside_by_tenant[tenant] = self.outside_by_tenant.get(tenant, 0) + 1
            if len(self.outside_sample) < SAMPLE:
                self.outside_sample.append(text)

    def describe_outside(self) -> str:
        tenants = ", ".join(f"{name}: {n}" for name, n in sorted(self.outside_by_tenant.items()))
        return (
            f"{self.outside} of its {self.keys} keys lie outside {' and '.join(self.patterns)} "
            f"(by tenant: {tenants}; e.g. {', '.join(self.outside_sample)})"
        )


def check(keys: Iterable[bytes], patterns: Iterable[str]) -> ScopeReport:
    """Count `keys` by tenant and find those not matching every one of `patterns`."""
    report = ScopeReport(tuple(dict.fromkeys(patterns)))
    for key in keys:
        report.add(key)
    return report
