"""The runner's step rules (retry/until, foreach, call, on_failure, when, human steps) on a real Redis."""

from __future__ import annotations

import pytest

from engine.adapters.redis import RedisAdapter
from engine.errors import MutationRefused
from engine.targets import RedisEndpoint
from tests.integration.cli_support import events, of_type, runbook, transcript_path

HEADER = "title: T\nsection: test\ndescription: test procedure\nrequires: [redis]\n"


@pytest.fixture
def server(redis_server):
    return redis_server()


def write(directory, name, body):
    path = directory / f"{name}.yaml"
    path.write_text(f"id: test/{name}\n{HEADER}{body}")
    return path


def run(server, tmp_path, *args):
    return runbook(
        "run",
        *args,
        "--redis",
        f"redis://127.0.0.1:{server.port}/0",
        "--procedures",
        str(tmp_path),
        "--transcripts-dir",
        str(tmp_path / "t"),
        "--json",
    )


def test_retry_until_polls_until_the_condition_holds(server, tmp_path):
    write(
        tmp_path,
        "poll",
        """\
steps:
  - id: bump
    name: Count up until 3
    redis: {command: [INCR, counter]}
    confirm: Increment the counter?
    register: n
    retry: {until: "n >= 3", attempts: 10, interval: 10ms}
""",
    )
    result = run(server, tmp_path, "test/poll", "--yes")
    assert result.code == 0, result.output
    assert server.client().get("counter") == "3"
    evts = events(transcript_path(result))
    assert [d["value"] for d in of_type(evts, "decision") if d["kind"] == "until"] == [False, False, True]
    assert len(of_type(evts, "approval.given")) == 3  # every attempt of a write is approved on its own


def test_retry_gives_up_after_attempts(server, tmp_path):
    write(
        tmp_path,
        "never",
        """\
steps:
  - id: wait-for-key
    name: Wait for a key that never comes
    redis: {command: [EXISTS, never]}
    retry: {until: "result == 1", attempts: 3, interval: 10ms}
""",
    )
    result = run(server, tmp_path, "test/never")
    assert result.code == 1, result.output
    step = result.json()["steps"][0]
    assert step["outcome"] == "failed" and "after 3 attempts" in step["message"]


def test_foreach_when_register_and_call(server, tmp_path):
    client = server.client()
    client.set("tenant:a:cache:1", "x")
    client.set("tenant:b:cache:1", "y", ex=100)
    write(
        tmp_path,
        "child",
        """\
params:
  key: {type: string, required: true}
steps:
  - id: ttl
    name: TTL of the key
    redis: {command: [TTL, "{{ key }}"]}
    register: ttl
""",
    )
    write(
        tmp_path,
        "parent",
        """\
steps:
  - id: keys
    name: Find cache keys
    redis: {scan: {match: "tenant:*:cache:*"}}
    register: keys
  - id: each
    name: TTL per key
    foreach: "sorted(keys)"
    redis: {command: [TTL, "{{ item }}"]}
    register: ttls
  - id: fix
    name: Give keys without TTL one
    foreach: "sorted(keys)"
    when: "ttls | length == 2"
    redis: {command: [EXPIRE, "{{ item }}", 60, NX]}
    confirm: Set a TTL?
  - id: nested
    name: Call the child procedure
    call: {procedure: test/child, params: {key: "tenant:a:cache:1"}}
    register: child
    expect:
      - that: child.ttl > 0
        message: child saw no TTL
""",
    )
    result = run(server, tmp_path, "test/parent", "--yes")
    assert result.code == 0, result.output
    steps = result.json()["steps"]
    each = [s for s in steps if s["id"] == "each"]
    assert len(each) == 2 and each[0]["result"] == -1 and 90 < each[1]["result"] <= 100
    assert 0 < client.ttl("tenant:a:cache:1") <= 60
    assert client.ttl("tenant:b:cache:1") > 60  # NX: an existing TTL was left alone
    child_step = next(s for s in steps if s["id"] == "ttl")
    assert child_step["procedure"] == "test/child" and child_step["result"] > 0
    evts = events(transcript_path(result))
    assert {e["step"]["call_depth"] for e in of_type(evts, "step.finished")} == {0, 1}


def test_on_failure_continue_and_goto(server, tmp_path):
    write(
        tmp_path,
        "flow",
        """\
steps:
  - id: broken
    name: A command Redis rejects
    redis: {command: [HGET, onlyonearg]}
    on_failure: continue
  - id: check
    name: Fails on purpose
    redis: {command: [EXISTS, missing]}
    expect:
      - that: result == 1
        message: missing key
    on_failure: {goto: recover}
  - id: skipped-by-goto
    name: Never runs
    redis: {command: [SET, never, "1"]}
    confirm: set?
  - id: recover
    name: Recovery step
    redis: {command: [SET, recovered, "1"]}
    confirm: set?
""",
    )
    result = run(server, tmp_path, "test/flow", "--yes")
    assert result.code == 1, result.output  # the failed expectation is a finding
    outcomes = {s["id"]: s["outcome"] for s in result.json()["steps"]}
    assert outcomes == {"broken": "error", "check": "failed", "recover": "ok"}
    assert server.client().get("recovered") == "1" and server.client().get("never") is None
    broken = next(s for s in result.json()["steps"] if s["id"] == "broken")
    assert "wrong number of arguments" in broken["message"]


def test_human_steps_without_terminal(server, tmp_path):
    write(
        tmp_path,
        "human",
        """\
params:
  backup:
    type: string
    pattern: '^[a-z0-9.-]+$'
steps:
  - id: which
    name: Which backup
    prompt: {message: "Backup file to restore?", param: backup}
    register: chosen
  - id: tell
    name: Tell the operator
    note: "Notify affected tenants before restoring {{ chosen }}"
  - id: tick
    name: Things only a human can do
    checklist: ["Tenants notified", "Writes stopped"]
""",
    )
    stopped = run(server, tmp_path, "test/human")
    assert stopped.code == 3, stopped.output
    assert "--var backup" in stopped.output
    answered = run(server, tmp_path, "test/human", "--var", "backup=dump-1.rdb")
    assert answered.code == 3  # the checklist cannot be ticked without a terminal or --yes
    done = run(server, tmp_path, "test/human", "--var", "backup=dump-1.rdb", "--yes")
    assert done.code == 0, done.output
    steps = {s["id"]: s for s in done.json()["steps"]}
    assert steps["which"]["result"] == "dump-1.rdb"
    assert steps["tell"]["result"] == "Notify affected tenants before restoring dump-1.rdb"
    assert [t["by"] for t in steps["tick"]["result"]] == ["flag", "flag"]
    assert run(server, tmp_path, "test/human", "--var", "backup=../../etc/passwd").code == 2


def test_adapter_refuses_writes_when_mutation_is_off(server):
    client = server.client()
    client.set("precious", "1")
    adapter = RedisAdapter(RedisEndpoint(host="127.0.0.1", port=server.port), allow_mutation=False)
    assert adapter.call(["GET", "precious"]) == "1"  # reads pass
    for argv in (
        ["DEL", "precious"],
        ["SET", "precious", "2"],
        ["FLUSHALL"],
        ["CONFIG", "SET", "maxmemory", "1mb"],
        ["EVAL", "redis.call('del', KEYS[1])", "1", "precious"],
        ["NOSUCHCOMMAND"],
    ):
        with pytest.raises(MutationRefused):
            adapter.call(argv)
    with pytest.raises(MutationRefused):  # a pipeline is checked command by command at the socket
        adapter.pipeline_calls([["GET", "precious"], ["DEL", "precious"]])
    with pytest.raises(MutationRefused):  # even a library helper bypassing our methods
        adapter.client.delete("precious")
    assert client.get("precious") == "1" and client.config_get("maxmemory")["maxmemory"] == "0"
    adapter.close()


def test_a_step_that_claims_read_but_writes_is_stopped_in_dry_run(server, tmp_path):
    """A buggy step kind (it says read, then deletes) cannot change anything in a rehearsal."""
    from engine.spec.model import Effect
    from engine.steps import _REGISTRY, Action, StepKind, register

    def plan(body, ctx):
        adapter = ctx.connections.redis()
        return Action(Effect.READ, adapter.endpoint.url, "looks harmless", lambda: adapter.client.delete(body))

    if "lying" not in _REGISTRY:
        register(StepKind(name="lying", schema={"type": "string"}, plan=plan))
    from engine.run.context import Connections
    from engine.run.gate import Gate
    from engine.run.operator import Operator
    from engine.run.runner import Runner
    from engine.spec.model import Location, Procedure, Step
    from engine.targets import Target
    from engine.transcript.redact import Redactor
    from engine.transcript.writer import TranscriptWriter

    server.client().set("precious", "1")
    target = Target(name="t", redis=RedisEndpoint(host="127.0.0.1", port=server.port))
    step = Step(id="liar", name="Claims read", kind="lying", action="precious", location=Location("x.yaml", 1), index=0)
    procedure = Procedure(
        id="test/liar",
        title="t",
        section="t",
        description="",
        file="x.yaml",
        sha256="0",
        params=(),
        requires=("redis",),
        steps=(step,),
    )
    transcript = TranscriptWriter.create(tmp_path / "t.jsonl", "run-1", Redactor())
    operator = Operator(name="tester", interactive=False, assume_yes=True)
    connections = Connections(target, allow_mutation=False)
    runner = Runner(
        transcript=transcript,
        redactor=Redactor(),
        connections=connections,
        operator=operator,
        gate=Gate(operator),
        dry_run=True,
        target_name="t",
        load_procedure=lambda p: procedure,
        resolve_params=lambda p, v: v,
        target_values={},
    )
    with pytest.raises(MutationRefused):
        runner.run(procedure, {})
    connections.close()
    transcript.close()
    assert server.client().get("precious") == "1"
    _REGISTRY.pop("lying")


def test_inventory_target_by_environment(redis_server, tmp_path):
    from engine.sandbox.sshd import inventory_for, write_inventory

    prod, staging = redis_server(), redis_server()
    data = inventory_for(prod, None, None, name="cache", environment="production")
    data["environments"].update(inventory_for(staging, None, None, name="cache", environment="staging")["environments"])
    inventory = write_inventory(tmp_path / "inv.yaml", data)
    ambiguous = runbook(
        "run",
        "redis/health-check",
        "--inventory",
        str(inventory),
        "--target",
        "cache",
        "--transcripts-dir",
        str(tmp_path / "t"),
    )
    assert ambiguous.code == 2 and "production/cache" in ambiguous.stderr
    chosen = runbook(
        "run",
        "redis/health-check",
        "--inventory",
        str(inventory),
        "--target",
        "staging/cache",
        "--transcripts-dir",
        str(tmp_path / "t"),
        "--json",
    )
    assert chosen.code == 0, chosen.output
    assert events(chosen.json()["transcript"])[0]["target"]["redis"] == staging.url
