"""Issue 16, items 2, 6, 7, 12 against real redis-server processes.

2: a step never changes the connection (SELECT, SWAPDB, MULTI, CLIENT REPLY, ...): refused at validate when
   literal, at the adapter when templated, and at the socket whatever sends it; db 1 is never touched.
6: a credential in a URL, in any spelling, is refused before any connection and never echoed.
7: ACL LIST / GETUSER results carry no password hash to the transcript, the terminal or --json.
12: TLS failures (untrusted CA, wrong name, no client certificate, TLS vs plain ports) get their own advice.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import redis

from engine.adapters.redis import ConnectionStateRefused, RedisAdapter
from engine.errors import TargetError
from engine.sandbox.redis_server import free_port
from engine.targets import TlsSettings, redis_from_url
from tests.integration.cli_support import events, of_type, runbook, transcript_path
from tests.integration.tls_support import CertificateAuthority
from tests.unit.test_redis_hardening import CREDENTIAL_URLS, MALFORMED_URLS, SECRET

HEADER = "title: T\nsection: test\ndescription: test procedure\nrequires: [redis]\n"


def write(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"id: test/{name}\n{HEADER}{body}")
    return path


def everything_written(result, tmp_path: Path) -> str:
    """stdout, stderr and every transcript the run left: where a secret must never be."""
    files = sorted((tmp_path / "t").rglob("*")) if (tmp_path / "t").exists() else []
    return result.output + "".join(f.read_text(errors="replace") for f in files if f.is_file())


# -- item 2: connection state -------------------------------------------------------------------------------

TEMPLATED = """\
params:
  cmd: {type: string, required: true}
  a1: {type: string, default: "1"}
  a2: {type: string, default: "1"}
steps:
  - id: state
    name: a command from params
    redis:
      command: ["{{ cmd }}", "{{ a1 }}", "{{ a2 }}"]
    confirm: send it?
  - id: delete
    name: delete the victim
    redis:
      command: [UNLINK, victim]
    confirm: delete it?
"""
TEMPLATED_CASES = [
    ("SELECT", "1", "x", "SELECT"),
    ("SWAPDB", "0", "1", "SWAPDB"),
    ("MOVE", "victim", "1", "MOVE"),
    ("RESET", "", "", "RESET"),
    ("HELLO", "3", "", "HELLO"),
    ("CLIENT", "REPLY", "OFF", "CLIENT REPLY"),
    ("CLIENT", "SETNAME", "x", "CLIENT SETNAME"),
    ("MULTI", "", "", "MULTI"),
    ("WATCH", "victim", "", "WATCH"),
    ("SUBSCRIBE", "chan", "", "SUBSCRIBE"),
    ("READONLY", "", "", "READONLY"),
    ("QUIT", "", "", "QUIT"),
    ("MONITOR", "", "", "MONITOR"),
]


@pytest.fixture
def two_dbs(redis_server):
    server = redis_server()
    client = server.client()
    client.set("victim", "db0")
    client.set("other0", "db0")
    db1 = server.client(db=1)
    db1.set("victim", "db1")
    db1.set("other1", "db1")
    return server


def _dbs(server) -> tuple[dict[str, str], dict[str, str]]:
    out = []
    for db in (0, 1):
        client = server.client(db=db)
        out.append({k: client.get(k) for k in client.keys("*")})
    return out[0], out[1]


@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry-run"])
@pytest.mark.parametrize(("cmd", "a1", "a2", "name"), TEMPLATED_CASES, ids=[c[3] for c in TEMPLATED_CASES])
def test_a_templated_connection_state_command_is_refused_and_no_db_changes(
    two_dbs, tmp_path, cmd, a1, a2, name, dry_run
):
    write(tmp_path, "state", TEMPLATED)
    before = _dbs(two_dbs)
    args = ["--var", f"cmd={cmd}", "--var", f"a1={a1}", "--var", f"a2={a2}", "--yes"]
    result = runbook(
        "run",
        "test/state",
        "--redis",
        f"redis://127.0.0.1:{two_dbs.port}/0",
        "--procedures",
        str(tmp_path),
        "--transcripts-dir",
        str(tmp_path / "t"),
        "--json",
        *args,
        *(["--dry-run"] if dry_run else []),
    )
    assert result.code == 2, result.output
    assert f"{name} is not a step command" in result.json()["error"]
    assert _dbs(two_dbs) == before  # db 1 untouched, and the later UNLINK never ran in any db
    evts = events(transcript_path(result))
    assert not of_type(evts, "approval.requested")  # refused while planning, before the gate
    assert evts[-1]["type"] == "run.ended" and evts[-1]["exit_code"] == 2


def test_a_literal_select_fails_validate_and_run_before_connecting(two_dbs, tmp_path):
    path = write(tmp_path, "literal", TEMPLATED.replace('["{{ cmd }}", "{{ a1 }}", "{{ a2 }}"]', "[SELECT, 1]"))
    result = runbook("validate", str(path))
    assert result.code == 2
    assert "literal.yaml:14" in result.output and "SELECT is not a step command" in result.output
    clients = two_dbs.client().info("stats")["total_connections_received"]
    result = runbook(
        "run", "test/literal", "--redis", f"redis://127.0.0.1:{two_dbs.port}/0", "--procedures", str(tmp_path),
        "--transcripts-dir", str(tmp_path / "t"), "--var", "cmd=x", "--yes",
    )  # fmt: skip
    assert result.code == 2 and "SELECT is not a step command" in result.output
    # only our own INFO connection since: the run never connected
    assert two_dbs.client().info("stats")["total_connections_received"] == clients + 1


@pytest.mark.parametrize("allow_mutation", [True, False], ids=["real", "dry-run"])
def test_the_socket_guard_refuses_state_changes_whatever_sends_them(two_dbs, allow_mutation):
    adapter = RedisAdapter(redis_from_url(f"redis://127.0.0.1:{two_dbs.port}/0", environ={}), allow_mutation=True)
    adapter.allow_mutation = allow_mutation
    before = _dbs(two_dbs)
    # past `call`: the client itself, a raw pipeline, a transaction left open, a lone MULTI
    with pytest.raises(ConnectionStateRefused, match="SELECT is not a step command"):
        adapter.client.execute_command("SELECT", 1)
    with pytest.raises(ConnectionStateRefused, match="SELECT"):
        adapter.pipeline_calls([["SELECT", "1"], ["UNLINK", "victim"]])
    with pytest.raises(ConnectionStateRefused, match="MULTI"):
        adapter.client.execute_command("MULTI")
    with pytest.raises(ConnectionStateRefused, match="SWAPDB"):
        adapter.raw_client().execute_command("SWAPDB", 0, 1)
    with pytest.raises(ConnectionStateRefused, match="CLIENT REPLY"):
        adapter.client.execute_command("CLIENT", "REPLY", "OFF")
    with pytest.raises(ConnectionStateRefused, match="MONITOR"):
        adapter.call(["MONITOR"])
    assert _dbs(two_dbs) == before
    if allow_mutation:  # the connection still answers in db 0, in step
        assert adapter.call(["UNLINK", "victim"]) == 1
        assert _dbs(two_dbs) == ({"other0": "db0"}, before[1])
        pipe = adapter.client.pipeline(transaction=True)  # the engine's own transactions still work
        pipe.set("t", "1").incr("t")
        assert pipe.execute() == [True, 2]
    adapter.close()


def test_a_target_in_db_1_works_in_db_1_only(two_dbs):
    adapter = RedisAdapter(redis_from_url(f"redis://127.0.0.1:{two_dbs.port}/1", environ={}), allow_mutation=True)
    assert adapter.call(["UNLINK", "victim"]) == 1
    assert _dbs(two_dbs) == ({"victim": "db0", "other0": "db0"}, {"other1": "db1"})
    adapter.close()


# -- item 6: credentials in URLs ----------------------------------------------------------------------------

HEALTH = "steps:\n  - id: ping\n    name: ping\n    redis:\n      command: [PING]\n"


@pytest.fixture
def locked(redis_server):
    return redis_server(password=SECRET)


def _urls_for(server) -> list[str]:
    return [u.replace("6390", str(server.port)) for u in CREDENTIAL_URLS + MALFORMED_URLS]


def test_every_url_credential_form_is_refused_on_the_command_line_without_echo(locked, tmp_path):
    write(tmp_path, "ping", HEALTH)
    connections = locked.client().info("stats")["total_connections_received"]
    for url in _urls_for(locked):
        for form in (["--redis", url], [f"--redis={url}"]):
            result = runbook(
                "run", "test/ping", *form, "--procedures", str(tmp_path), "--transcripts-dir", str(tmp_path / "t"),
                "--json",
            )  # fmt: skip
            assert result.code == 2, (url, result.output)
            assert SECRET not in everything_written(result, tmp_path), url
            assert result.json()["exit_code"] == 2 and SECRET not in json.dumps(result.json())
            if url.replace(str(locked.port), "6390") in CREDENTIAL_URLS:
                assert "REDISCLI_AUTH" in result.stderr and "password_file" in result.stderr, url
    assert not (tmp_path / "t").exists()  # refused before a transcript exists
    # the server never saw any of these runs (one connection: this INFO)
    assert locked.client().info("stats")["total_connections_received"] == connections + 1


def test_every_url_credential_form_is_refused_in_an_inventory_without_echo(locked, tmp_path):
    write(tmp_path, "ping", HEALTH)
    for url in _urls_for(locked):
        inventory = tmp_path / "inv.yaml"
        inventory.write_text(
            f"environments:\n  prod:\n    targets:\n      cache:\n        redis:\n          url: '{url}'\n"
        )
        result = runbook(
            "run", "test/ping", "--inventory", str(inventory), "--target", "cache", "--procedures", str(tmp_path),
            "--transcripts-dir", str(tmp_path / "t"), "--json",
        )  # fmt: skip
        assert result.code == 2, (url, result.output)
        assert SECRET not in everything_written(result, tmp_path), url
        assert "inv.yaml:6" in result.stderr and "redis.url" in result.stderr, result.stderr


def test_a_url_without_credentials_runs_with_rediscli_auth_and_argv_is_clean(locked, tmp_path):
    write(tmp_path, "ping", HEALTH)
    result = runbook(
        "run", "test/ping", "--redis", f"redis://default@127.0.0.1:{locked.port}/0", "--procedures", str(tmp_path),
        "--transcripts-dir", str(tmp_path / "t"), "--json", env={"REDISCLI_AUTH": SECRET},
    )  # fmt: skip
    assert result.code == 0, result.output
    started = of_type(events(transcript_path(result)), "run.started")[0]
    assert f"redis://default@127.0.0.1:{locked.port}/0" in started["argv"]
    assert SECRET not in everything_written(result, tmp_path)


# -- item 7: ACL password hashes ----------------------------------------------------------------------------

ACL = """\
steps:
  - id: list
    name: ACL LIST
    redis:
      command: [ACL, LIST]
    register: rules
    show: "{{ rules | join(' | ') }}"
  - id: getuser
    name: ACL GETUSER
    redis:
      command: [ACL, GETUSER, alice]
    register: alice
    show: "{{ alice }}"
  - id: log
    name: ACL LOG
    redis:
      command: [ACL, LOG]
    show: "{{ result }}"
"""


def test_acl_results_never_carry_a_password_hash(redis_server, tmp_path):
    server = redis_server()
    hashed = hashlib.sha256(SECRET.encode()).hexdigest()
    other = hashlib.sha256(b"second-password").hexdigest()
    server.client().execute_command("ACL", "SETUSER", "alice", "on", f">{SECRET}", f"#{other}", "~*", "+@all")
    with pytest.raises(redis.AuthenticationError):
        server.client(username="alice", password="wrong").ping()  # an ACL LOG entry
    write(tmp_path, "acl", ACL)
    for extra in ([], ["--json"]):
        result = runbook(
            "run", "test/acl", "--redis", f"redis://127.0.0.1:{server.port}/0", "--procedures", str(tmp_path),
            "--transcripts-dir", str(tmp_path / "t"), *extra,
        )  # fmt: skip
        assert result.code == 0, result.output
        written = everything_written(result, tmp_path)
        for secret in (SECRET, hashed, other):
            assert secret not in written
        assert "#[SECRET:acl-password-hash]" in written and "user alice on" in written
    steps = {s["id"]: s for s in result.json()["steps"]}
    assert steps["getuser"]["result"]["passwords"] == ["[SECRET:acl-password-hash]"] * 2
    assert any(entry.get("username") == "alice" for entry in steps["log"]["result"])


# -- item 12: TLS -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory)
    return {
        "ca": ca,
        "server": ca.issue("server", dns=("redis.test",)),  # no IP: 127.0.0.1 needs server_name
        "client": ca.issue("client", client=True),
        "other_ca": CertificateAuthority(directory, "other CA"),
    }


@pytest.fixture
def tls_server(redis_server, pki):
    def start(auth_clients: str = "no"):
        port = free_port()
        server = redis_server(
            config={
                "tls-port": str(port),
                "tls-cert-file": str(pki["server"].cert),
                "tls-key-file": str(pki["server"].key),
                "tls-ca-cert-file": str(pki["ca"].pair.cert),
                "tls-auth-clients": auth_clients,
            }
        )
        server.tls_port = port
        return server

    return start


def _connect(url: str, settings: TlsSettings | None = None) -> RedisAdapter:
    return RedisAdapter(redis_from_url(url, environ={}, tls_settings=settings, timeout=2), allow_mutation=False)


def _failure(url: str, settings: TlsSettings | None = None) -> TargetError:
    with pytest.raises(TargetError) as caught:
        _connect(url, settings).connect()
    assert "Restart service" not in (caught.value.advice or "")
    assert "do not restart" in (caught.value.advice or ""), caught.value.advice
    return caught.value


def test_tls_with_the_named_ca_and_server_name_connects(tls_server, pki):
    server = tls_server()
    settings = TlsSettings(ca_file=str(pki["ca"].pair.cert), server_name="redis.test")
    adapter = _connect(f"rediss://127.0.0.1:{server.tls_port}/0", settings).connect()
    assert adapter.call(["PING"]) is True
    adapter.close()


def test_tls_errors_are_classified_not_service_down(tls_server, pki):
    server = tls_server()
    tls_url = f"rediss://127.0.0.1:{server.tls_port}/0"
    ca = str(pki["ca"].pair.cert)
    untrusted = _failure(tls_url, TlsSettings(server_name="redis.test"))
    assert "not trusted" in untrusted.advice and "ca_file" in untrusted.advice
    other_ca = _failure(tls_url, TlsSettings(ca_file=str(pki["other_ca"].pair.cert), server_name="redis.test"))
    assert "not trusted" in other_ca.advice
    for settings in (TlsSettings(ca_file=ca), TlsSettings(ca_file=ca, server_name="wrong.test")):
        mismatch = _failure(tls_url, settings)
        assert "another name" in mismatch.advice and "server_name" in mismatch.advice
    plain_to_tls = _failure(f"redis://127.0.0.1:{server.tls_port}/0")
    assert "TLS port" in plain_to_tls.advice and "rediss://" in plain_to_tls.advice
    tls_to_plain = _failure(f"rediss://127.0.0.1:{server.port}/0", TlsSettings(ca_file=ca, server_name="redis.test"))
    assert "does not speak TLS" in tls_to_plain.advice
    assert server.client().ping()  # and the server was healthy all along


def test_a_server_that_wants_a_client_certificate(tls_server, pki):
    server = tls_server(auth_clients="yes")
    tls_url = f"rediss://127.0.0.1:{server.tls_port}/0"
    base = {"ca_file": str(pki["ca"].pair.cert), "server_name": "redis.test"}
    missing = _failure(tls_url, TlsSettings(**base))
    assert "client certificate" in missing.advice and "cert_file" in missing.advice
    client = pki["client"]
    adapter = _connect(tls_url, TlsSettings(**base, cert_file=str(client.cert), key_file=str(client.key))).connect()
    assert adapter.call(["PING"]) is True
    adapter.close()


def test_inventory_tls_block_end_to_end(tls_server, pki, tmp_path):
    server = tls_server(auth_clients="yes")
    write(tmp_path, "ping", HEALTH)
    client = pki["client"]

    def run(tls_lines: str):
        inventory = tmp_path / "inv.yaml"
        inventory.write_text(
            "environments:\n  prod:\n    targets:\n      cache:\n        redis:\n"
            f"          url: rediss://127.0.0.1:{server.tls_port}/0\n          timeout: 2s\n{tls_lines}"
        )
        return runbook(
            "run", "test/ping", "--inventory", str(inventory), "--target", "cache", "--procedures", str(tmp_path),
            "--transcripts-dir", str(tmp_path / "t"), "--json",
        )  # fmt: skip

    good = (
        f"          tls:\n            ca_file: {pki['ca'].pair.cert}\n            server_name: redis.test\n"
        f"            cert_file: {client.cert}\n            key_file: {client.key}\n"
    )
    assert run(good).code == 0
    untrusted = run("          tls:\n            server_name: redis.test\n")
    assert untrusted.code == 4 and "not trusted" in untrusted.stderr and "Restart service" not in untrusted.output
    missing_file = run(f"          tls:\n            ca_file: {tmp_path / 'nope.pem'}\n")
    assert missing_file.code == 2 and "redis.tls" in missing_file.stderr
