"""Who signed a transcript, and how far the signed evidence reaches.

The hash chain proves lines were not changed *after* the next one was written; anyone can recompute
it. A signature over a line (which holds the previous line's hash) proves the holder of a key vouched
for everything up to that line. So: every `approval.*` and `run.ended` line of a signed run carries
an SSHSIG over itself; a rewritten-and-rechained transcript breaks them, a stripped one is missing
what `run.started.signing_key` promised, and a run cut off by kill -9 is trusted up to its last
signed line and no further.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.transcript import sshsig
from engine.transcript.allowed_signers import AllowedSigners
from engine.transcript.signer import NAMESPACE
from engine.transcript.writer import SIGNED_TYPES, serialise


@dataclass(frozen=True)
class SignatureReport:
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, message)
    warnings: list[str] = field(default_factory=list)
    signers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # fingerprint -> principals
    signed_lines: int = 0
    last_signed_line: int | None = None
    unsigned_tail_from: int | None = None

    def summary(self) -> str:
        if not self.signed_lines:
            return "unsigned"
        who = ", ".join(
            f"{'/'.join(principals) if principals else 'unknown key'} ({fp})" for fp, principals in self.signers.items()
        )
        text = f"signed by {who} on {self.signed_lines} line(s), up to line {self.last_signed_line}"
        if self.unsigned_tail_from is not None:
            text += f"; unsigned tail from line {self.unsigned_tail_from}"
        return text


def check_signatures(
    lines: list[int], events: list[dict[str, Any]], allowed: AllowedSigners | None = None
) -> SignatureReport:
    """Verify every signature; with `allowed`, also that each signer is allowed and nothing is unsigned."""
    problems: list[tuple[int, str]] = []
    warnings: list[str] = []
    signers: dict[str, tuple[str, ...]] = {}
    signed = 0
    last_signed: int | None = None
    header = events[0] if events and events[0].get("type") == "run.started" else None
    promised = header.get("signing_key") if header else None
    promised_fp = promised.get("fingerprint") if isinstance(promised, dict) else None
    operator = header.get("operator") if header else None

    for number, event in zip(lines, events, strict=True):
        kind = event.get("type")
        block = event.get("signature")
        if block is None:
            if kind in SIGNED_TYPES and (promised_fp or allowed is not None):
                problems.append(
                    (number, f"{kind} is not signed" + (" (the run promised a signing key)" if promised_fp else ""))
                )
            continue
        if not isinstance(block, dict):
            problems.append((number, "signature: not an object"))
            continue
        if "error" in block and "armored" not in block:
            message = f"{kind} is unsigned: {block.get('error')}"
            (
                problems.append((number, message))
                if allowed is not None
                else warnings.append(f"line {number}: {message}")
            )
            continue
        body = {k: v for k, v in event.items() if k != "signature"}
        try:
            sig = sshsig.verify(block.get("armored"), serialise(body), NAMESPACE)
        except (sshsig.SignatureError, ValueError, TypeError) as exc:
            problems.append((number, f"signature: {exc}"))
            continue
        if promised_fp and sig.fingerprint != promised_fp:
            problems.append((number, f"signed by {sig.fingerprint}, but the run started with key {promised_fp}"))
            continue
        principals: tuple[str, ...] = ()
        if allowed is not None:
            principals = allowed.principals_for(sig.public_key, NAMESPACE, _when(event))
            if not principals:
                problems.append((number, f"signed by {sig.fingerprint}, a key not in the allowed signers"))
                continue
        signers[sig.fingerprint] = principals
        signed += 1
        last_signed = number

    tail = None
    if last_signed is not None and lines and lines[-1] > last_signed:
        tail = next(n for n in lines if n > last_signed)
        warnings.append(f"lines from {tail} on are not covered by a signature (the run was cut off or is running)")
    if allowed is not None and signed == 0 and not problems:
        problems.append((lines[0] if lines else 1, "no line is signed: who approved cannot be proven"))
    if allowed is not None and operator and signers:
        names = {p for principals in signers.values() for p in principals}
        if names and operator not in names:
            warnings.append(f"run.started says operator {operator!r}; the key belongs to {', '.join(sorted(names))}")
    return SignatureReport(problems, warnings, signers, signed, last_signed, tail)


def _when(event: dict[str, Any]) -> datetime | None:
    value = event.get("time")
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None
