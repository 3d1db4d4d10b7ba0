"""Redaction: known secrets anywhere, Redis credential arguments always."""

from __future__ import annotations

import json

import pytest

from engine.transcript.redact import Redactor

MASK = "[SECRET:redis-credential]"


@pytest.fixture
def r() -> Redactor:
    red = Redactor()
    red.add("redis_password", "hunter2-very-secret")
    return red


def test_text_replaces_every_occurrence(r: Redactor) -> None:
    s = "a hunter2-very-secret b hunter2-very-secret"
    assert r.text(s) == "a [SECRET:redis_password] b [SECRET:redis_password]"


def test_ignores_none_and_empty() -> None:
    red = Redactor()
    red.add("a", None)
    red.add("b", "")
    red.add("c", b"")
    assert len(red) == 0
    assert red.text("anything at all") == "anything at all"


def test_short_secrets_are_redacted() -> None:
    red = Redactor()
    red.add("pin", "42x")
    assert red.text("code 42x ok") == "code [SECRET:pin] ok"


def test_bytes_secret_registers_its_str_form() -> None:
    red = Redactor()
    red.add("t", b"tok-\xff-en")
    assert red.text(str(b"tok-\xff-en")) == "b'[SECRET:t]'"
    assert red.text(b"tok-\xff-en".decode("utf-8", "replace")) == "[SECRET:t]"
    red.add("plain", b"bytes-pass")
    assert red.text("x bytes-pass y") == "x [SECRET:plain] y"
    assert red.known_values() >= {"bytes-pass"}


def test_longest_first_when_one_secret_contains_another() -> None:
    red = Redactor()
    red.add("short", "pass")
    red.add("long", "password123")
    assert red.text("password123 and pass") == "[SECRET:long] and [SECRET:short]"


def test_overlapping_secrets_leave_nothing_behind() -> None:
    red = Redactor()
    red.add("a", "abcdef-long-enough")
    red.add("b", "long-enough-ghi")
    out = red.text("xx abcdef-long-enough-ghi yy")
    assert "ghi" not in out and "abc" not in out
    assert out.startswith("xx [SECRET:") and out.endswith("] yy")
    assert "a" in out.split("SECRET:")[1] and "b" in out.split("SECRET:")[1]


def test_adjacent_occurrences_are_labelled_separately() -> None:
    red = Redactor()
    red.add("k", "abcdefghijkl")
    assert red.text("abcdefghijklabcdefghijkl") == "[SECRET:k][SECRET:k]"


@pytest.mark.parametrize("password", ["WRONG", "a", "PASS", "pass", "user", "invalid", "or", "-", "password"])
def test_a_short_secret_never_mangles_a_message_nor_tells_what_it_is(password: str) -> None:
    """Only whole values are replaced: a server message that merely contains the letters stays as it was."""
    red = Redactor()
    red.add("REDISCLI_AUTH", password)
    message = "WRONGPASS invalid username-password pair or user is disabled."
    out = red.text(message)
    if password in message.replace(".", " ").split():  # the password really is a word of the message
        assert "[SECRET:REDISCLI_AUTH]" in out
    else:
        assert out == message
    for prefix, suffix in (("", ""), ("requirepass ", ""), ("--pass=", ""), ("auth:", "@host")):
        assert red.text(f"{prefix}{password}{suffix}") == f"{prefix}[SECRET:REDISCLI_AUTH]{suffix}"


def test_text_is_idempotent_even_when_a_secret_is_in_the_label() -> None:
    red = Redactor()
    red.add("secret", "SECRET")
    once = red.text("the SECRET is out")
    assert once == "the [SECRET:secret] is out"
    assert red.text(once) == once


def test_secret_inside_json_strings(r: Redactor) -> None:
    doc = json.dumps({"config": {"requirepass": "hunter2-very-secret"}})
    assert "hunter2" not in r.text(doc)
    quoted = Redactor()
    quoted.add("q", 'pa"ss\\word')
    assert "pa" not in quoted.text(json.dumps({"pw": 'pa"ss\\word'}))


def test_url_encoded_secret() -> None:
    red = Redactor()
    red.add("pw", "p@ss/w:rd")
    assert "p%40ss" not in red.text("redis://:p%40ss%2Fw%3Ard@host:6379/0")


def test_data_nested_and_keys_and_copy(r: Redactor) -> None:
    original = {
        "hunter2-very-secret": ["x", {"deep": ("hunter2-very-secret", 3, None, True)}],
        "raw": b"pw=hunter2-very-secret",
        "n": 1.5,
    }
    out = r.data(original)
    assert "hunter2" not in json.dumps(out)
    assert out["[SECRET:redis_password]"][1]["deep"][0] == "[SECRET:redis_password]"
    assert out["raw"] == "pw=[SECRET:redis_password]"
    assert out["n"] == 1.5
    assert "hunter2-very-secret" in original  # the input is untouched


# -- argv ---------------------------------------------------------------------------------------


def test_auth_password_only() -> None:
    assert Redactor().argv(["AUTH", "pw"]) == ["AUTH", MASK]


def test_auth_user_and_password() -> None:
    assert Redactor().argv(["auth", "default", "pw"]) == ["auth", "default", MASK]


def test_auth_with_known_secret_uses_its_name(r: Redactor) -> None:
    assert r.argv(["AUTH", "hunter2-very-secret"]) == ["AUTH", "[SECRET:redis_password]"]


def test_hello_auth() -> None:
    args = ["hello", "3", "auth", "alice", "pw", "setname", "auth"]
    assert Redactor().argv(args) == ["hello", "3", "auth", "alice", MASK, "setname", "auth"]


def test_hello_without_auth_is_untouched() -> None:
    assert Redactor().argv(["HELLO", "3"]) == ["HELLO", "3"]


@pytest.mark.parametrize("param", ["requirepass", "MASTERAUTH", "tls-key-file-pass", "tls-client-key-file-pass"])
def test_config_set_credentials(param: str) -> None:
    assert Redactor().argv(["CONFIG", "SET", param, "pw"]) == ["CONFIG", "SET", param, MASK]


def test_config_set_several_pairs() -> None:
    args = ["config", "set", "maxmemory", "2gb", "requirepass", "a", "masterauth", "b", "save", ""]
    assert Redactor().argv(args) == [
        "config",
        "set",
        "maxmemory",
        "2gb",
        "requirepass",
        MASK,
        "masterauth",
        MASK,
        "save",
        "",
    ]


def test_config_set_maxmemory_is_not_masked() -> None:
    assert Redactor().argv(["CONFIG", "SET", "maxmemory", "2gb"]) == ["CONFIG", "SET", "maxmemory", "2gb"]


def test_config_get_requirepass_is_not_masked() -> None:
    assert Redactor().argv(["CONFIG", "GET", "requirepass"]) == ["CONFIG", "GET", "requirepass"]


def test_config_set_masteruser_is_not_masked() -> None:
    assert Redactor().argv(["CONFIG", "SET", "masteruser", "repl"]) == ["CONFIG", "SET", "masteruser", "repl"]


def test_acl_setuser_password_rules() -> None:
    hashes = ["#" + "a" * 64, "!" + "b" * 64]
    args = ["ACL", "SETUSER", "bob", "on", ">pw1", "<pw2", *hashes, "~tenant:*", "+@read"]
    assert Redactor().argv(args) == [
        "ACL",
        "SETUSER",
        "bob",
        "on",
        ">" + MASK,
        "<" + MASK,
        "#" + MASK,
        "!" + MASK,
        "~tenant:*",
        "+@read",
    ]


def test_acl_setuser_keeps_user_name_and_flags() -> None:
    args = ["acl", "setuser", ">odd-name", "nopass", "resetpass", "allkeys"]
    assert Redactor().argv(args) == args


def test_acl_setuser_known_secret(r: Redactor) -> None:
    out = r.argv(["ACL", "SETUSER", "app", ">hunter2-very-secret"])
    assert out[-1] == ">[SECRET:redis_password]"


def test_migrate_auth_and_auth2() -> None:
    base = ["MIGRATE", "10.0.0.2", "6379", "", "0", "5000", "COPY", "REPLACE"]
    assert Redactor().argv([*base, "AUTH", "pw", "KEYS", "a"]) == [*base, "AUTH", MASK, "KEYS", "a"]
    assert Redactor().argv([*base, "auth2", "u", "pw"]) == [*base, "auth2", "u", MASK]


def test_migrate_keys_named_auth_are_not_masked() -> None:
    args = ["MIGRATE", "h", "6379", "", "0", "5000", "KEYS", "auth", "key2"]
    assert Redactor().argv(args) == args


def test_migrate_key_named_auth_in_key_position() -> None:
    args = ["migrate", "h", "6379", "auth", "0", "5000"]
    assert Redactor().argv(args) == args


def test_sentinel_auth_pass() -> None:
    assert Redactor().argv(["SENTINEL", "SET", "mymaster", "auth-pass", "pw"])[-1] == MASK


@pytest.mark.parametrize("cmd", ["auth", "Auth", "AUTH"])
def test_command_names_case_insensitive(cmd: str) -> None:
    assert Redactor().argv([cmd, "pw"]) == [cmd, MASK]
    assert Redactor().argv(["Config", "Set", "RequirePass", "pw"])[-1] == MASK
    assert Redactor().argv(["acl", "SetUser", "u", ">pw"])[-1] == ">" + MASK


def test_argv_also_replaces_known_secrets_anywhere(r: Redactor) -> None:
    out = r.argv(["SET", "k", "value-hunter2-very-secret", b"hunter2-very-secret", 7])
    assert out == ["SET", "k", "value-[SECRET:redis_password]", "[SECRET:redis_password]", "7"]


def test_argv_of_empty_command() -> None:
    assert Redactor().argv([]) == []
    assert Redactor().argv(["AUTH"]) == ["AUTH"]
