"""engine/steps/redis_auth_step.py, the pure parts: secret values, generated passwords, CLIENT LIST sessions."""

from __future__ import annotations

import json
import string

import pytest

from engine.errors import UsageError
from engine.spec import template
from engine.spec.model import Effect
from engine.steps import get
from engine.steps.redis_auth_step import (
    ALPHABET,
    SecretValue,
    describe_sessions,
    generate_password,
    parse_client_list,
    password_text,
    session_report,
    sessions_of,
)
from engine.transcript.writer import to_jsonable

CLIENT_LIST = (
    "id=3 addr=10.0.0.5:51506 laddr=10.0.0.1:6379 fd=8 name=somabrain age=80 idle=0 flags=N db=0 sub=0 "
    "cmd=get user=default redir=-1 resp=2\n"
    "id=4 addr=10.0.0.9:40000 laddr=10.0.0.1:6379 fd=9 name= age=70 idle=2 flags=O db=0 cmd=monitor user=default\n"
    "id=5 addr=10.0.0.2:6380 laddr=10.0.0.1:6379 fd=10 name= age=60 idle=0 flags=S db=0 cmd=replconf user=default\n"
    "id=6 addr=10.0.0.7:1234 laddr=10.0.0.1:6379 fd=11 name=etl age=10 idle=0 flags=N db=0 cmd=set user=etl\n"
    "id=7 addr=127.0.0.1:5555 laddr=10.0.0.1:6379 fd=12 name= age=0 idle=0 flags=N db=0 cmd=client|list "
    "user=default\n"
)


def test_secret_value_shows_a_placeholder_everywhere_but_value() -> None:
    secret = SecretValue("new_password", "hunter2-very-long-secret")
    assert str(secret) == repr(secret) == "[SECRET:new_password]"
    assert secret.value == "hunter2-very-long-secret" and secret.length == 24
    assert json.dumps({"r": secret}, default=str) == '{"r": "[SECRET:new_password]"}'  # --json
    assert to_jsonable(secret) == "[SECRET:new_password]"  # the transcript
    assert template.render("{{ s }}", {"s": secret}) is secret
    assert template.render("x{{ s }}", {"s": secret}) == "x[SECRET:new_password]"
    assert template.render("{{ s.value }}", {"s": secret}) == "hunter2-very-long-secret"
    with pytest.raises(template.TemplateError):
        template.render("{{ s._value }}", {"s": secret})  # the sandbox keeps private attributes private


def test_generated_passwords_are_long_random_and_safe_to_quote() -> None:
    passwords = {generate_password(32) for _ in range(200)}
    assert len(passwords) == 200
    assert all(len(p) == 32 and set(p) <= set(ALPHABET) for p in passwords)
    assert set(ALPHABET) == set(string.ascii_letters + string.digits + "-_")
    assert len(generate_password(64)) == 64
    for bad in (8, 15, 257):
        with pytest.raises(UsageError):
            generate_password(bad)


def test_password_text_unwraps_secrets_and_refuses_placeholders() -> None:
    assert password_text(SecretValue("p", "abc"), "rotate") == "abc"
    assert password_text("plain-text", "rotate") == "plain-text"
    for bad in (None, "", "[SECRET:new_password]"):
        with pytest.raises(UsageError):
            password_text(bad, "rotate")


def test_parse_client_list_keeps_every_field_as_text() -> None:
    clients = parse_client_list(CLIENT_LIST)
    assert [c["id"] for c in clients] == ["3", "4", "5", "6", "7"]
    assert clients[0]["name"] == "somabrain" and clients[1]["name"] == ""
    assert clients[4]["cmd"] == "client|list"
    assert parse_client_list("") == [] and parse_client_list(None) == []


def test_sessions_are_the_default_users_connections_except_our_own() -> None:
    clients = parse_client_list(CLIENT_LIST)
    assert [c["id"] for c in sessions_of(clients, "default", 7)] == ["3", "4", "5"]
    report = session_report(clients, 7)
    assert report["own_id"] == 7 and report["total"] == 5
    assert report["ids"] == [3, 4, 5] and report["count"] == 3
    assert (report["replicas"], report["monitors"], report["pubsub"]) == (1, 1, 0)
    assert report["clients"][0] == {
        "id": "3",
        "addr": "10.0.0.5:51506",
        "laddr": "10.0.0.1:6379",
        "name": "somabrain",
        "user": "default",
        "age": "80",
        "idle": "0",
        "flags": "N",
        "db": "0",
        "cmd": "get",
    }
    assert [c["id"] for c in report["clients"]] == ["3", "4", "5", "6", "7"]  # the audit: everyone
    assert [c["id"] for c in report["sessions"]] == ["3", "4", "5"]


def test_describe_sessions_is_what_the_gate_shows_before_a_kill() -> None:
    sessions = sessions_of(parse_client_list(CLIENT_LIST), "default", 7)
    shown = describe_sessions(sessions)
    assert shown["count"] == 3 and shown["user"] == "default"
    assert shown["clients"] == ["id=3 10.0.0.5:51506 name=somabrain", "id=4 10.0.0.9:40000", "id=5 10.0.0.2:6380"]


def test_effects_and_schema() -> None:
    kind = get("redis_auth")
    assert kind.static_effect({"add": {"password": "x"}}) is Effect.DESTRUCTIVE
    assert kind.static_effect({"rotate": {"password": "x"}}) is Effect.DESTRUCTIVE
    for body in ({"generate": {}}, {"check": {"initial": True}}, {"use": {"password": "x"}}, {"sessions": {}}):
        assert kind.static_effect(body) is Effect.READ
    check = kind.schema["properties"]["check"]
    assert {"required": ["password"]} in check["oneOf"] and {"required": ["initial"]} in check["oneOf"]


def test_the_runs_own_lease_connection_is_not_a_session_to_kill() -> None:
    """A lease renewal in flight while the blast radius is measured is the run's own, not an intruder's."""
    from engine.adapters.redis import LEASE_CLIENT_NAME

    lease = (
        f"id=9 addr=127.0.0.1:5009 laddr=127.0.0.1:6379 fd=12 name={LEASE_CLIENT_NAME} "
        "age=0 idle=0 flags=N db=15 user=default cmd=evalsha"
    )
    clients = parse_client_list(CLIENT_LIST + "\n" + lease)
    assert "9" not in [c["id"] for c in sessions_of(clients, "default", 7)]
    assert [c["id"] for c in sessions_of(clients, "default", 7)] == ["3", "4", "5"]
