"""The Redis adapter's doors for step kinds, against a real redis-server: key batches (adaptive SCAN),
credential checks on a fresh connection, secrets, transactions, and the dry-run refusing each change."""

from __future__ import annotations

import pytest

from engine.adapters.redis import RedisAdapter
from engine.errors import MutationRefused, TargetError
from engine.targets import RedisEndpoint

PASSWORD = "door-test-password"


@pytest.fixture
def server(redis_server):  # type: ignore[no-untyped-def]
    server = redis_server(password=PASSWORD)
    with server.client() as client:
        client.execute_command("DEBUG", "POPULATE", 20_000, "other", 10)
        client.mset({f"t:{i}": i for i in range(300)})
        client.set(b"t:\xff\xfe", b"not utf-8")
    return server


def _adapter(server, *, allow_mutation: bool, password: str | None = PASSWORD) -> RedisAdapter:  # type: ignore[no-untyped-def]
    return RedisAdapter(RedisEndpoint("127.0.0.1", server.port, password=password), allow_mutation=allow_mutation)


def test_key_batches_return_every_key_once_in_bytes_for_a_rare_and_a_dense_pattern(server) -> None:  # type: ignore[no-untyped-def]
    adapter = _adapter(server, allow_mutation=False)
    try:
        rare = [k for batch in adapter.key_batches("t:*", count=1000) for k in batch]
        assert sorted(rare) == sorted([f"t:{i}".encode() for i in range(300)] + [b"t:\xff\xfe"])
        batches = list(adapter.key_batches("*", count=1000, batch=1000))
        every = [k for b in batches for k in b]
        assert len(every) == len(set(every)) == 20_301
        assert all(len(b) < 3000 for b in batches)  # a dense pattern keeps COUNT (and replies) small
        replies = adapter.pipeline_calls([("DUMP", b"t:\xff\xfe"), ("PTTL", b"t:\xff\xfe")], binary=True)
        assert isinstance(replies[0], bytes) and replies[1] == -1
    finally:
        adapter.close()


def test_a_credential_is_checked_on_a_fresh_connection(server) -> None:  # type: ignore[no-untyped-def]
    adapter = _adapter(server, allow_mutation=False)
    try:
        assert adapter.check_credential(None, PASSWORD).as_data() == {
            "accepted": True,
            "error": None,
            "username": "default",
        }
        refused = adapter.check_credential(None, "wrong")
        assert refused.accepted is False and refused.error and "WRONGPASS" in refused.error
        closed = _adapter(server, allow_mutation=False)
        closed.endpoint = RedisEndpoint("127.0.0.1", 9)
        with pytest.raises(TargetError, match=r"redis://127\.0\.0\.1:9/0: cannot connect"):
            closed.check_credential(None, PASSWORD)
    finally:
        adapter.close()


def test_secrets_and_transactions_go_through_the_adapter_and_are_refused_in_a_dry_run(server) -> None:  # type: ignore[no-untyped-def]
    dry = _adapter(server, allow_mutation=False)
    real = _adapter(server, allow_mutation=True)
    try:
        assert dry.password_count("default") == 1
        with pytest.raises(MutationRefused):
            dry.send_secret(["ACL", "SETUSER", "default", ">another-password"])
        with pytest.raises(MutationRefused):
            dry.transaction(
                [["CONFIG", "SET", "requirepass", "x"], ["CLIENT", "KILL", "USER", "default", "SKIPME", "yes"]]
            )
        with pytest.raises(MutationRefused):
            dry.pipeline_calls([("RESTORE", b"new", 0, b"payload")], binary=True)
        assert dry.password_count("default") == 1
        real.send_secret(["ACL", "SETUSER", "default", ">another-password"])
        assert real.password_count("default") == 2
        assert real.check_credential(None, "another-password").accepted
        replies = real.transaction([["SET", "a", "1"], ["INCR", "a"]])
        assert replies == [True, 2]
    finally:
        dry.close()
        real.close()


def test_a_held_connection_answers_each_call_survives_an_error_reply_and_refuses_writes_in_a_dry_run(server) -> None:  # type: ignore[no-untyped-def]
    """`direct_caller`: a scan's thousands of script calls on one connection. An error reply (the script
    flushed) is raised and the stream stays in step for the next call; in a dry-run the socket guard still
    refuses a write; a connection the server drops ends the block with the engine's error, not a traceback."""
    from engine.errors import ActionFailed

    adapter = _adapter(server, allow_mutation=False).connect()
    with adapter.direct_caller() as call:
        assert call(["GET", "t:7"]) == "7"
        with pytest.raises(ActionFailed, match="NOSCRIPT"):
            call(["EVALSHA_RO", "0" * 40, "0"])
        assert call(["EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "t:8"]) == "8"  # still in step
        with pytest.raises(MutationRefused):
            call(["SET", "t:7", "changed"])
        assert call(["GET", "t:7"]) == "7"
        with server.client() as admin:
            admin.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(TargetError):
            call(["GET", "t:7"])
    assert adapter.call(["GET", "t:7"]) == "7"  # the pool gave the dropped connection up: a new one answers
    adapter.close()
    with server.client() as admin:
        assert admin.get("t:7") == "7"  # the refused SET never reached it
