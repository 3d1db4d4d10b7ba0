"""SSHSIG encoding and the allowed_signers parser: pure, no servers; hostile input never raises oddly."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime

import pytest

from engine.transcript import sshsig
from engine.transcript.allowed_signers import parse_allowed_signers

KEY = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))).decode()


def _sample() -> str:
    return sshsig.encode(sshsig.Signature(base64.b64decode(KEY), "runbook-transcript", "sha512", b"\x00" * 83))


def test_encode_then_decode_round_trips_and_wraps_like_ssh_keygen():
    text = _sample()
    lines = text.splitlines()
    assert lines[0] == sshsig.BEGIN and lines[-1] == sshsig.END
    assert all(len(line) <= 70 for line in lines[1:-1])
    sig = sshsig.decode(text)
    assert sig.namespace == "runbook-transcript" and sig.key_type == "ssh-ed25519"
    assert sig.fingerprint.startswith("SHA256:") and "=" not in sig.fingerprint


def test_signed_data_binds_the_namespace_and_refuses_unknown_hashes():
    assert sshsig.signed_data("a", b"m") != sshsig.signed_data("b", b"m")
    assert sshsig.signed_data("a", b"m").startswith(b"SSHSIG")
    with pytest.raises(sshsig.SignatureError):
        sshsig.signed_data("a", b"m", "md5")


@pytest.mark.parametrize(
    "text",
    [
        None,
        42,
        "",
        "garbage",
        sshsig.BEGIN + "\n!!!\n" + sshsig.END,
        sshsig.BEGIN + "\nAAAA\n" + sshsig.END,
        "x" * (sshsig.MAX_ARMOURED + 1),
    ],
)
def test_garbage_is_a_signature_error(text):
    with pytest.raises(sshsig.SignatureError):
        sshsig.decode(text)


def test_random_mutations_of_a_signature_raise_only_signature_error():
    rng = random.Random(1729)
    blob = bytearray(base64.b64decode("".join(_sample().splitlines()[1:-1])))
    for _ in range(2000):
        mutated = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            if not mutated:
                break
            at = rng.randrange(len(mutated))
            choice = rng.random()
            if choice < 0.5:
                mutated[at] = rng.randrange(256)
            elif choice < 0.75:
                del mutated[at:]
            else:
                mutated[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        text = "\n".join([sshsig.BEGIN, base64.b64encode(bytes(mutated)).decode(), sshsig.END])
        try:
            sshsig.decode(text)
        except sshsig.SignatureError:
            pass


def test_allowed_signers_lines_options_and_problems():
    text = f"""
# team
alice@example.org,alice ssh-ed25519 {KEY} alice's laptop
"bob@example.org" namespaces="runbook-transcript,git" valid-after=20260101 valid-before=20270101Z ssh-ed25519 {KEY}
ca@example.org cert-authority ssh-ed25519 {KEY}
broken
eve@example.org ssh-ed25519 not!base64
"""
    allowed = parse_allowed_signers(text, "signers")
    blob = base64.b64decode(KEY)
    inside = datetime(2026, 11, 29, tzinfo=UTC)
    assert allowed.principals_for(blob, "runbook-transcript", inside) == (
        "alice@example.org",
        "alice",
        "bob@example.org",
    )
    assert allowed.principals_for(blob, "file", inside) == ("alice@example.org", "alice")
    assert "bob@example.org" not in allowed.principals_for(blob, "runbook-transcript", datetime(2027, 2, 1, tzinfo=UTC))
    assert len(allowed.problems) == 3
    assert any("cert-authority" in p for p in allowed.problems)
    assert all(p.startswith("signers:") for p in allowed.problems)
