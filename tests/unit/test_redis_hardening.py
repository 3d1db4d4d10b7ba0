"""Issue 16, items 2, 6, 7, 12 without a server: connection-state commands, URL credentials, ACL hashes, TLS texts."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.adapters.redis import pack_commands
from engine.adapters.redis_effects import CONNECTION_STATE, connection_state_command, state_changes_in_packet
from engine.cli.main import _safe_argv, main
from engine.common_errors import explain
from engine.errors import UsageError
from engine.spec.loader import check_file
from engine.targets import redis_from_url, url_problem
from engine.transcript.redact import Redactor, acl_reply, url_credentials

# Every way a step could change the connection under the engine, as a step would write it.
STATE_COMMANDS = [
    (["SELECT", "1"], "SELECT"),
    (["select", "1"], "SELECT"),
    (["SWAPDB", "0", "1"], "SWAPDB"),
    (["MOVE", "k", "1"], "MOVE"),
    (["RESET"], "RESET"),
    (["HELLO", "3"], "HELLO"),
    (["AUTH", "pw"], "AUTH"),
    (["QUIT"], "QUIT"),
    (["CLIENT", "SETNAME", "x"], "CLIENT SETNAME"),
    (["client", "reply", "off"], "CLIENT REPLY"),
    (["CLIENT", "TRACKING", "on"], "CLIENT TRACKING"),
    (["CLIENT", "CACHING", "yes"], "CLIENT CACHING"),
    (["CLIENT", "NO-EVICT", "on"], "CLIENT NO-EVICT"),
    (["CLIENT", "NO-TOUCH", "on"], "CLIENT NO-TOUCH"),
    (["CLIENT", "SETINFO", "lib-name", "x"], "CLIENT SETINFO"),
    (["READONLY"], "READONLY"),
    (["READWRITE"], "READWRITE"),
    (["ASKING"], "ASKING"),
    (["MULTI"], "MULTI"),
    (["EXEC"], "EXEC"),
    (["DISCARD"], "DISCARD"),
    (["WATCH", "k"], "WATCH"),
    (["UNWATCH"], "UNWATCH"),
    (["SUBSCRIBE", "c"], "SUBSCRIBE"),
    (["PSUBSCRIBE", "c*"], "PSUBSCRIBE"),
    (["SSUBSCRIBE", "c"], "SSUBSCRIBE"),
    (["UNSUBSCRIBE"], "UNSUBSCRIBE"),
    (["PUNSUBSCRIBE"], "PUNSUBSCRIBE"),
    (["SUNSUBSCRIBE"], "SUNSUBSCRIBE"),
    (["MONITOR"], "MONITOR"),
    (["PSYNC", "?", "-1"], "PSYNC"),
    (["SYNC"], "SYNC"),
    (["REPLCONF", "listening-port", "1"], "REPLCONF"),
]
HARMLESS = [["GET", "k"], ["CLIENT", "LIST"], ["CLIENT", "ID"], ["CLIENT", "KILL", "ID", "1"], ["UNLINK", "select"]]


def test_every_listed_command_is_covered_by_the_cases() -> None:
    named = {c.lower().replace(" ", "|") for _, c in STATE_COMMANDS}
    assert named == set(CONNECTION_STATE)


@pytest.mark.parametrize(("argv", "name"), STATE_COMMANDS, ids=[n for _, n in STATE_COMMANDS])
def test_connection_state_commands_are_named(argv: list[str], name: str) -> None:
    assert connection_state_command(argv) == name
    assert connection_state_command([a.encode() for a in argv]) == name


@pytest.mark.parametrize("argv", HARMLESS, ids=[" ".join(a) for a in HARMLESS])
def test_data_commands_are_not_connection_state(argv: list[str]) -> None:
    assert connection_state_command(argv) is None
    assert state_changes_in_packet(pack_commands([argv, argv])) is None


@pytest.mark.parametrize(("argv", "name"), STATE_COMMANDS, ids=[n for _, n in STATE_COMMANDS])
def test_socket_guard_finds_them_inside_a_pipeline(argv: list[str], name: str) -> None:
    packet = pack_commands([["GET", "a"], argv, ["UNLINK", "b"]])
    found = state_changes_in_packet(packet)
    if name == "MONITOR":
        assert found is None  # only the monitor step's own connection sends it; `call` refuses it
    elif name == "MULTI":
        assert found == "MULTI (left open)"
    else:
        assert found == name


def test_socket_guard_passes_a_closed_transaction_only() -> None:
    assert state_changes_in_packet(pack_commands([["MULTI"], ["SET", "a", "1"], ["EXEC"]])) is None
    assert state_changes_in_packet(pack_commands([["MULTI"], ["SET", "a", "1"], ["DISCARD"]])) is None
    assert state_changes_in_packet(pack_commands([["MULTI"], ["SET", "a", "1"]])) == "MULTI (left open)"
    assert state_changes_in_packet(pack_commands([["MULTI"], ["MULTI"], ["EXEC"]])) == "MULTI"
    assert state_changes_in_packet(pack_commands([["MULTI"], ["SELECT", "1"], ["EXEC"]])) == "SELECT"


PROCEDURE = """\
id: test/state
title: T
section: test
description: test procedure
requires: [redis]
steps:
  - id: ping
    name: ping
    redis:
      command: [PING]
  - id: state
    name: state
    redis:
      command: {command}
    confirm: change it?
"""


@pytest.mark.parametrize(("argv", "name"), STATE_COMMANDS, ids=[n for _, n in STATE_COMMANDS])
def test_validate_names_a_literal_connection_state_command_with_its_line(
    tmp_path: Path, argv: list[str], name: str
) -> None:
    path = tmp_path / "state.yaml"
    path.write_text(PROCEDURE.format(command="[" + ", ".join(f'"{a}"' for a in argv) + "]"))
    _, errors, _ = check_file(path)
    assert any(name in e.message and "not a step command" in e.message for e in errors), errors
    found = next(e for e in errors if "not a step command" in e.message)
    assert found.line == 14 and found.path == "steps[1].redis.command[0]"
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert "state.yaml:14" in result.output and name in result.output


def test_validate_leaves_a_templated_command_to_the_adapter(tmp_path: Path) -> None:
    path = tmp_path / "state.yaml"
    body = PROCEDURE.format(command='["{{ cmd }}", "1"]').replace(
        "steps:", "params:\n  cmd:\n    type: string\n    default: GET\nsteps:"
    )
    path.write_text(body)
    _, errors, _ = check_file(path)
    assert not [e for e in errors if "not a step command" in e.message]


# -- item 6: credentials in URLs ----------------------------------------------------------------------------

SECRET = "Sup3rS3cretValue"
CREDENTIAL_URLS = [
    f"redis://:{SECRET}@127.0.0.1:6390/0",
    f"redis://default:{SECRET}@127.0.0.1:6390/0",
    f"redis://127.0.0.1:6390/0?password={SECRET}",
    f"redis://127.0.0.1:6390?password={SECRET}",
    f"redis://127.0.0.1:6390/?user=default&password={SECRET}",
    f"rediss://default:{SECRET}@127.0.0.1:6390/0",
    f"rediss://127.0.0.1:6390/0?password={SECRET}",
    f"unix://:{SECRET}@/tmp/redis.sock",
    f"unix:///tmp/redis.sock?password={SECRET}",
    f"redis://%3A{SECRET}@127.0.0.1:6390/0",
    f"redis://default%3a{SECRET}@127.0.0.1:6390/0",
    f"redis://127.0.0.1:6390/0?pass%77ord={SECRET}",
    f"redis://127.0.0.1:6390/0#{SECRET}",
    f"redis://127.0.0.1:6390/0;password={SECRET}",
    f"REDIS://:{SECRET}@127.0.0.1:6390/0",
]
# Not recognisable as a credential, but still never quoted back.
MALFORMED_URLS = [
    f"redis://127.0.0.1:6390/0%3Fpassword%3D{SECRET}",
    f"redis://127.0.0.1:6390/{SECRET}",
    f"redis://{SECRET}%40127.0.0.1:6390/0",
    f"http://{SECRET}.example/",
    f"redis://127.0.0.1:{SECRET}/0",
]


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
def test_a_credential_in_a_url_is_refused_with_advice_and_without_echo(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        redis_from_url(url, environ={})
    message = str(caught.value)
    assert SECRET not in message and url not in message
    assert "REDISCLI_AUTH" in message and "password_env" in message and "password_file" in message


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_a_malformed_url_is_refused_without_echo(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        redis_from_url(url, environ={})
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6390/3", "rediss://cache.internal/0", "redis://alice@[::1]:6390/1", "redis://h"]
)
def test_plain_urls_still_work(url: str) -> None:
    assert url_problem(url) is None
    redis_from_url(url, environ={})


def test_argv_for_the_transcript_never_holds_a_url_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["runbook", "run", "x", "--redis", CREDENTIAL_URLS[1], f"--redis={CREDENTIAL_URLS[2]}", "--var", "a=b"]
    monkeypatch.setattr(sys, "argv", argv)
    safe = _safe_argv()
    assert SECRET not in " ".join(safe)
    assert safe[-2:] == ["--var", "a=b"] and "127.0.0.1:6390" in safe[4]
    for url in CREDENTIAL_URLS:
        assert SECRET not in url_credentials(url), url


# -- item 7: ACL password hashes -----------------------------------------------------------------------------

HASH = hashlib.sha256(SECRET.encode()).hexdigest()


def test_acl_list_lines_lose_every_password_rule() -> None:
    line = f"user alice on #{HASH} !{HASH} >{SECRET} <{SECRET} ~tenant:* resetchannels -@all +get"
    masked = acl_reply(["user default on nopass ~* &* +@all", line])
    assert masked[0] == "user default on nopass ~* &* +@all"
    assert HASH not in masked[1] and SECRET not in masked[1]
    assert masked[1].startswith("user alice on #[SECRET:acl-password-hash] !")
    assert masked[1].endswith("~tenant:* resetchannels -@all +get")


def test_acl_getuser_passwords_are_masked_in_both_reply_shapes() -> None:
    parsed = {"flags": ["on"], "passwords": [HASH, HASH], "commands": "+@all", "keys": "~*"}
    raw = ["flags", ["on"], "passwords", [HASH], "commands", "+@all"]
    assert HASH not in str(acl_reply(parsed)) and acl_reply(parsed)["commands"] == "+@all"
    assert HASH not in str(acl_reply(raw)) and acl_reply(raw)[0] == "flags"
    assert HASH not in str(acl_reply([x.encode() if isinstance(x, str) else x for x in raw]))


def test_redactor_masks_a_hash_rule_in_any_text() -> None:
    text = Redactor().text(f"ACL SETUSER bob on #{HASH} ~*")
    assert HASH not in text and "#[SECRET:acl-password-hash]" in text
    sha_of_a_file = {"sha256": HASH}  # a bare digest (a backup's checksum) is not an ACL rule
    assert Redactor().data(sha_of_a_file) == sha_of_a_file


# -- item 12: TLS errors ---------------------------------------------------------------------------------

TLS_TEXTS = [
    (
        "TLS_UNTRUSTED",
        "Error 1 connecting to 127.0.0.1:6390. [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
        "self-signed certificate in certificate chain (_ssl.c:1006).",
    ),
    (
        "TLS_UNTRUSTED",
        "Error 1 connecting to h:6390. [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
        "unable to get local issuer certificate (_ssl.c:1006).",
    ),
    (
        "TLS_UNTRUSTED",
        "Error 1 connecting to h:6390. [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
        "certificate has expired (_ssl.c:1006).",
    ),
    (
        "TLS_HOSTNAME",
        "Error 1 connecting to 127.0.0.1:6390. [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
        "Hostname mismatch, certificate is not valid for 'wrong.test'. (_ssl.c:1006).",
    ),
    (
        "TLS_HOSTNAME",
        "Error 1 connecting to 127.0.0.1:6390. [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
        "IP address mismatch, certificate is not valid for '127.0.0.1'. (_ssl.c:1006).",
    ),
    ("TLS_NOT_TLS", "Error 1 connecting to h:6390. [SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)."),
    ("TLS_NOT_TLS", "Error 1 connecting to h:6390. [SSL] record layer failure (_ssl.c:1006)."),
    ("TLS_NOT_TLS", "TLS handshake timed out with h:6390: no TLS answer to our hello"),
    ("TLS_NOT_TLS", "Error 8 connecting to h:6390. EOF occurred in violation of protocol (_ssl.c:1006)."),
    (
        "TLS_CLIENT_CERT",
        "Error while reading from h:6390 : (1, '[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert "
        "certificate required (_ssl.c:2580)')",
    ),
    ("TLS_CLIENT_CERT", "Error 8 while writing to socket. EOF occurred in violation of protocol (_ssl.c:2427)."),
    (
        "TLS_HANDSHAKE",
        "Error 1 connecting to h:6390. [SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure.",
    ),
    ("TLS_REQUIRED", "the server closed before answering a plain-text client (Connection reset by peer)"),
]


@pytest.mark.parametrize(("code", "text"), TLS_TEXTS, ids=[f"{c}-{i}" for i, (c, _) in enumerate(TLS_TEXTS)])
def test_tls_errors_have_their_own_advice_never_restart(code: str, text: str) -> None:
    found = explain(text)
    assert found is not None and found.code == code
    advice = f"{found.cause}. {found.solution}"
    assert "do not restart" in advice and "systemctl restart" not in advice


def test_a_refused_connection_is_still_service_down() -> None:
    found = explain("Error 111 connecting to 127.0.0.1:6390. Connection refused.")
    assert found is not None and found.code == "CONNREFUSED"


def _inventory(tmp_path: Path, redis_block: str, http_block: str = "") -> Path:
    path = tmp_path / "inv.yaml"
    path.write_text("environments:\n  prod:\n    targets:\n      cache:\n        redis:\n" + redis_block + http_block)
    return path


@pytest.mark.parametrize(
    "base_url",
    [f"https://ops:{SECRET}@api.internal", f"https://api.internal/?token={SECRET}", f"ftp://u%3A{SECRET}@x"],
)
def test_an_http_base_url_with_a_credential_is_refused_without_echo(tmp_path: Path, base_url: str) -> None:
    from engine.targets import load_inventory

    path = _inventory(
        tmp_path, "          url: redis://h:6379/0\n", f"        http:\n          base_url: '{base_url}'\n"
    )
    with pytest.raises(UsageError) as caught:
        load_inventory(path)
    assert (
        SECRET not in str(caught.value) and "inv.yaml:8" in str(caught.value) and "http.base_url" in str(caught.value)
    )


def test_tls_settings_need_a_rediss_url_and_loadable_files(tmp_path: Path) -> None:
    from engine.targets import load_inventory, target_from_inventory

    plain = _inventory(tmp_path, "          url: redis://h:6379/0\n          tls:\n            server_name: x\n")
    with pytest.raises(UsageError, match="rediss://"):
        target_from_inventory(load_inventory(plain), "cache", environ={})
    missing = _inventory(tmp_path, "          url: rediss://h:6379/0\n          tls:\n            ca_file: nope.pem\n")
    with pytest.raises(UsageError, match=r"redis\.tls: cannot load"):
        target_from_inventory(load_inventory(missing), "cache", environ={})
    key_alone = _inventory(tmp_path, "          url: rediss://h:6379/0\n          tls:\n            key_file: k.pem\n")
    with pytest.raises(UsageError, match="cert_file"):
        target_from_inventory(load_inventory(key_alone), "cache", environ={})


def _generated_credential_urls() -> list[str]:
    """Every scheme x host form x place a credential hides in a URL, with percent-encoded spellings."""
    schemes = ["redis", "rediss", "unix", "REDIS", "Rediss"]
    hosts = ["127.0.0.1:6390", "[::1]:6390", "cache.internal", "cache.internal:6390"]
    userinfos = [f":{SECRET}@", f"default:{SECRET}@", f"%3A{SECRET}@", f"default%3a{SECRET}@", f"u:{SECRET}%40x@"]
    tails = [f"?password={SECRET}", f"?auth={SECRET}", f"?db=0&pass%77ord={SECRET}", f"?{SECRET}", f"#{SECRET}"]
    tails += [f";password={SECRET}", f"/0?password={SECRET}", f"/?password={SECRET}"]
    urls = [f"{s}://{u}{h}/0" for s in schemes for u in userinfos for h in hosts]
    urls += [f"{s}://{h}{t}" for s in schemes for h in hosts for t in tails]
    return urls


def test_every_generated_credential_url_is_refused_without_echo() -> None:
    urls = _generated_credential_urls()
    assert len(urls) > 150
    for url in urls:
        with pytest.raises(UsageError) as caught:
            redis_from_url(url, environ={})
        message = str(caught.value)
        assert SECRET not in message and "REDISCLI_AUTH" in message, url
        assert SECRET not in url_credentials(f"--redis={url}"), url
