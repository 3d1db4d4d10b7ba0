"""The runner's rules, one by one, with a fake step kind and a scripted operator: no server, no terminal, no wait.

Procedures are YAML text read by the real loader, so each test reads like the procedure it runs. The fake
kind (`fake:`) does what its body says: `say` is its command, `changes` its effect, `results` what each
successive run returns, `fail` an error it raises, `interrupt` a signal it takes. The clock is fake: a
retry's interval advances it instead of sleeping.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.errors import (
    ActionFailed,
    ExitCode,
    Interrupted,
    StepAborted,
    StoppedError,
    UsageError,
)
from engine.run import approval
from engine.run import runner as runner_module
from engine.run.context import Connections
from engine.run.gate import Gate
from engine.run.operator import Operator
from engine.run.runner import MAX_CHANGE_VISITS, Runner
from engine.spec.model import Effect, Procedure
from engine.spec.params import resolve
from engine.targets import Target
from engine.transcript.redact import Redactor
from engine.transcript.writer import TranscriptWriter

HEADER = "title: T\nsection: test\ndescription: a procedure of the runner's unit tests\n"


# -- the fake kind: the one place that knows how a kind is registered --------------------------------------
@dataclass
class Sent:
    """What the fake kind really executed, in order (a dry-run or a refusal leaves nothing here)."""

    commands: list[str] = field(default_factory=list)
    runs: dict[str, int] = field(default_factory=dict)  # step id -> executions so far


SENT = Sent()


def register_fake_kind() -> Callable[[], None]:
    """Register `fake:` from this module (no engine code edited); returns how to take it away again."""
    from engine.steps import _REGISTRY, Action, StepKind, kinds, register

    kinds()  # the shipped kinds first, so `fake` joins the full registry

    def plan(body: dict[str, Any], ctx: Any) -> Action:
        say = str(body.get("say", ctx.step.id))
        effect = Effect.parse(str(body.get("changes", "read")))

        def execute() -> Any:
            n = SENT.runs.get(ctx.step.id, 0)
            SENT.runs[ctx.step.id] = n + 1
            if body.get("interrupt"):
                raise Interrupted(signal.Signals[str(body["interrupt"])])
            if n < int(body.get("fail_first", 0)) or body.get("fail"):
                raise ActionFailed(str(body.get("fail") or f"{say} not yet"), advice="wait and try again")
            SENT.commands.append(say)
            results = body.get("results")
            if results is not None:
                return results[min(n, len(results) - 1)]
            return body.get("result", say)

        return Action(
            effect,
            "fake://here",
            f"fake {say}",
            execute,
            measure=(lambda: {"keys": 1, "what": say}) if effect is not Effect.READ else None,
            changes=lambda blast, result: [{"what": say, "result": result}],
            predict=lambda blast: body.get("predict", f"would {say}"),
        )

    register(
        StepKind(
            name="fake",
            schema={"type": "object"},
            plan=plan,
            static_effect=lambda body: Effect.parse(str(body.get("changes", "read"))),
            summary=lambda body: f"fake {body.get('say', '')}",
        )
    )

    def unregister() -> None:
        _REGISTRY.pop("fake", None)

    return unregister


@pytest.fixture(scope="module", autouse=True)
def fake_kind() -> Iterator[None]:
    unregister = register_fake_kind()
    yield
    unregister()


@pytest.fixture(autouse=True)
def nothing_sent() -> None:
    SENT.commands.clear()
    SENT.runs.clear()


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """The transcript's fsyncs are its own tests' business (test_transcript*); here they only cost seconds
    on a busy disk. Every line is still written and read back."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


# -- procedures, operator, clock, run ------------------------------------------------------------------------
@functools.cache
def schema_validator() -> Any:
    """The procedure schema composed from the registry as it is now: with `fake` in it."""
    import jsonschema

    from engine.spec.schema import build_procedure_schema

    return jsonschema.Draft202012Validator(build_procedure_schema())


def load(text: str, procedure_id: str = "test/p") -> Procedure:
    """YAML text -> Procedure through the real loader: the composed schema, the semantic checks, the builder."""
    from engine.spec.loader import build
    from engine.spec.validate import semantic_errors
    from engine.spec.yamlsource import load_yaml

    source = f"id: {procedure_id}\n{HEADER}{text}"
    located = load_yaml(source, f"{procedure_id}.yaml")
    schema_errors = [e.message for e in schema_validator().iter_errors(located.data)]
    assert not schema_errors, schema_errors
    problems = semantic_errors(located, known_procedures=lambda _id: True)
    assert not problems, [str(p) for p in problems]
    return build(located, hashlib.sha256(source.encode()).hexdigest())


@dataclass
class ScriptedOperator(Operator):
    """An operator at a terminal whose answers are given in advance: True/False to y/N, text to type."""

    answers: list[Any] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)
    told: list[str] = field(default_factory=list)

    def tell(self, text: str, *, display_safe: bool = False) -> None:
        self.told.append(text)

    def _answer(self, question: str) -> Any:
        self.asked.append(question)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def confirm(self, question: str) -> bool:
        return bool(self._answer(question))

    def type_exact(self, question: str, expected: str) -> bool:
        return self._answer(question) == expected


def answering(*answers: Any) -> ScriptedOperator:
    return ScriptedOperator(name="alice", interactive=True, answers=list(answers))


def no_terminal(*, yes: bool = False) -> ScriptedOperator:
    return ScriptedOperator(name="alice", interactive=False, assume_yes=yes)


@dataclass
class FakeClock:
    now: float = 1000.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class Ran:
    runner: Runner
    path: Path
    error: BaseException | None
    clock: FakeClock
    registered: dict[str, Any] | None

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").split("\n") if line.strip()]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def outcomes(self) -> list[tuple[str, str]]:
        """(step id, outcome) of every step.finished and step.skipped, in order."""
        return [
            (e["step"]["id"], e["outcome"] if e["type"] == "step.finished" else "skipped")
            for e in self.events
            if e["type"] in ("step.finished", "step.skipped")
        ]

    def decisions(self, kind: str) -> list[Any]:
        return [e["value"] for e in self.of("decision") if e["kind"] == kind]

    @property
    def records(self) -> dict[str, Any]:
        return {r.id: r for r in self.runner.state.records}


def run(
    tmp_path: Path,
    text: str,
    *,
    operator: Operator | None = None,
    dry_run: bool = False,
    params: dict[str, Any] | None = None,
    catalog: dict[str, str] | None = None,
    resume: Any = None,
) -> Ran:
    """Run the procedure to its end; what stopped it (StepAborted, StoppedError, Interrupted ...) is kept."""
    procedure = load(text)
    operator = operator or no_terminal()
    redactor = Redactor()
    path = tmp_path / f"run-{len(list(tmp_path.glob('run-*.jsonl')))}.jsonl"
    transcript = TranscriptWriter.create(path, "run-1", redactor)
    clock = FakeClock()

    def load_procedure(procedure_id: str) -> Procedure:
        if procedure_id not in (catalog or {}):
            raise UsageError(f"no procedure '{procedure_id}'")
        return load((catalog or {})[procedure_id], procedure_id)

    runner = Runner(
        transcript=transcript,
        redactor=redactor,
        connections=Connections(Target(name="t"), allow_mutation=not dry_run),
        operator=operator,
        gate=Gate(operator),
        dry_run=dry_run,
        target_name="staging/cache",
        load_procedure=load_procedure,
        resolve_params=lambda callee, given: resolve(callee.params, given, procedure=callee.id),
        target_values={},
        resume=resume,
        clock=clock,
        sleep=clock.sleep,
    )
    error: BaseException | None = None
    registered = None
    try:
        registered = runner.run(procedure, resolve(procedure.params, params or {}, procedure=procedure.id))
    except (Exception, Interrupted) as exc:
        error = exc
    finally:
        transcript.close()
    return Ran(runner, path, error, clock, registered)


# -- the transcript of one change, event by event ------------------------------------------------------------
def test_a_change_is_started_requested_given_and_finished_in_that_order(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: look
    name: Look first
    fake: {say: look}
    register: seen
  - id: change
    name: Change it
    fake: {say: "change {{ seen }}", changes: write}
    confirm: Change it?
    expect:
      - that: result == "change look"
        message: "not changed: {{ result }}"
""",
        operator=answering(True),
    )
    assert ran.error is None
    assert [(e["type"], e.get("step", {}).get("id")) for e in ran.events] == [
        ("step.started", "look"),
        ("step.finished", "look"),
        ("step.started", "change"),
        ("approval.requested", "change"),
        ("approval.given", "change"),
        ("step.finished", "change"),
    ]
    requested, finished = ran.of("approval.requested")[0], ran.of("step.finished")[1]
    assert requested["command"] == "fake change look" and requested["effect"] == "write"
    assert requested["blast_radius"] == {"keys": 1, "what": "change look"}
    assert requested["where"] == "fake://here" and requested["confirm"] == "Change it?"
    assert finished["outcome"] == "ok" and finished["changes"] == [{"what": "change look", "result": "change look"}]
    assert finished["expectations"][0]["held"] is True
    assert finished["step"] | {"source": None} == {
        "id": "change",
        "name": "Change it",
        "kind": "fake",
        "source": None,
        "index": 1,
        "iteration": None,
        "call_depth": 0,
        "procedure": "test/p",
    }
    assert ran.of("approval.given")[0]["by"] == "alice" and ran.of("approval.given")[0]["method"] == "yes"
    assert SENT.commands == ["look", "change look"]
    assert ran.runner.state.approvals == 1


# -- when ---------------------------------------------------------------------------------------------------
WHEN = """\
params:
  go: {type: boolean, default: false}
steps:
  - id: maybe
    name: Only when asked
    fake: {say: maybe}
    when: go
  - id: after
    name: Reads how the first ended
    fake: {say: after}
    expect:
      - that: steps.maybe.outcome == ("ok" if go else "skipped")
        message: "maybe: {{ steps.maybe.outcome }}"
"""


def test_when_false_skips_and_records_why(tmp_path: Path) -> None:
    ran = run(tmp_path, WHEN)
    assert ran.error is None
    assert ran.decisions("when") == [False]
    assert ran.outcomes() == [("maybe", "skipped"), ("after", "ok")]
    assert ran.of("step.skipped")[0]["reason"] == "when: go is false"
    assert ran.records["maybe"].outcome == "skipped" and ran.records["maybe"].effect == "-"
    assert ran.of("step.finished")[0]["expectations"][0]["held"] is True  # steps.maybe.outcome == skipped
    assert SENT.commands == ["after"]


def test_when_true_runs_the_step(tmp_path: Path) -> None:
    ran = run(tmp_path, WHEN, params={"go": True})
    assert ran.error is None
    assert ran.decisions("when") == [True]
    assert ran.outcomes() == [("maybe", "ok"), ("after", "ok")]
    assert SENT.commands == ["maybe", "after"]


# -- foreach ------------------------------------------------------------------------------------------------
def test_foreach_runs_per_item_with_item_and_loop_in_scope_and_registers_the_list(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: each
    name: One per tenant
    foreach: '["acme", "globex", "initech"]'
    when: item != "globex"
    fake: {say: "{{ loop.index }}:{{ item }}"}
    register: said
  - id: total
    name: What they said
    fake: {say: "{{ said }}"}
""",
    )
    assert ran.error is None
    assert SENT.commands == ["0:acme", "2:initech", "['0:acme', None, '2:initech']"]
    assert ran.decisions("when") == [True, False, True]
    assert [e["step"]["iteration"] for e in ran.of("step.finished")] == [0, 2, None]
    assert ran.of("step.skipped")[0]["step"]["iteration"] == 1
    assert ran.registered == {"said": ["0:acme", None, "2:initech"]}


def test_foreach_one_failing_item_with_continue_lets_the_others_run(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: each
    name: One per tenant
    foreach: '["acme", "globex", "initech"]'
    fake: {say: "{{ item }}", fail: '{{ "globex is down" if item == "globex" else "" }}'}
    register: said
    on_failure: continue
  - id: status
    name: How the loop ended
    fake: {say: "{{ steps.each.outcome }} {{ steps.each['items'] | map(attribute='outcome') | join(',') }}"}
""",
    )
    assert ran.error is None
    assert SENT.commands == ["acme", "initech", "error ok,error,ok"]
    assert ran.outcomes() == [("each", "ok"), ("each", "error"), ("each", "ok"), ("status", "ok")]
    failed = ran.of("step.finished")[1]
    assert failed["error"] == {"message": "globex is down", "advice": "wait and try again"}
    assert ran.decisions("on_failure") == ["continue"]
    assert ran.registered == {"said": ["acme", None, "initech"]}


def test_foreach_one_failing_item_aborts_the_remaining_items(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: each
    name: One per tenant
    foreach: '["acme", "globex", "initech"]'
    fake: {say: "{{ item }}", fail: '{{ "globex is down" if item == "globex" else "" }}'}
  - id: never
    name: Not reached
    fake: {say: never}
""",
    )
    assert isinstance(ran.error, StepAborted) and ran.error.exit_code == ExitCode.UNREACHABLE
    assert "step 'each' error: globex is down" in str(ran.error)
    assert SENT.commands == ["acme"]
    assert ran.outcomes() == [("each", "ok"), ("each", "error")]
    assert ran.decisions("on_failure") == ["abort"]


def test_foreach_of_something_not_a_list_is_a_usage_error(tmp_path: Path) -> None:
    ran = run(tmp_path, "steps:\n  - {id: each, name: Each, foreach: '42', fake: {say: x}}\n")
    assert isinstance(ran.error, UsageError) and "foreach gave int, not a list" in str(ran.error)


# -- retry / until ------------------------------------------------------------------------------------------
def test_retry_until_polls_every_interval_until_it_holds(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: poll
    name: Wait for three
    fake: {say: poll, results: [1, 2, 3, 4]}
    register: n
    retry: {until: "n >= 3", attempts: 5, interval: 2s}
""",
    )
    assert ran.error is None
    assert ran.decisions("until") == [False, False, True]
    assert ran.clock.slept == [2.0, 2.0]  # between attempts, never after the last
    assert [e["attempt"] for e in ran.of("step.started")] == [1, 2, 3]
    finished = ran.of("step.finished")[0]
    assert finished["outcome"] == "ok" and finished["result"] == 3 and finished["attempts"] == 3
    assert ran.registered == {"n": 3}


GIVES_UP = """\
steps:
  - id: poll
    name: Wait for ten
    fake: {say: poll, results: [1, 2, 3]}
    retry: {until: "result >= 10", attempts: 3, interval: 1s}
"""
UNTIL_FAILED = "until 'result >= 10' did not hold after 3 attempts (2.0s)"


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        ("", UNTIL_FAILED),
        # the author's message says what the wait was for (and what to read); the count of attempts follows it
        (
            "    expect:\n"
            "      - that: result >= 10\n"
            '        message: "still {{ result }} after the restart: read the log"\n',
            f"still 3 after the restart: read the log ({UNTIL_FAILED})",
        ),
    ],
    ids=["bare", "judged-by-its-expectations"],
)
def test_a_retry_that_gives_up_is_a_failure_that_says_why(tmp_path: Path, expect: str, message: str) -> None:
    ran = run(tmp_path, GIVES_UP + expect)
    assert isinstance(ran.error, StepAborted) and ran.error.exit_code == ExitCode.FINDINGS
    assert ran.decisions("until") == [False, False, False]
    assert ran.clock.slept == [1.0, 1.0]
    finished = ran.of("step.finished")[0]
    assert finished["outcome"] == "failed" and finished["attempts"] == 3
    assert [e["held"] for e in finished.get("expectations", [])] == ([False] if expect else [])
    assert finished["error"]["message"] == message


def test_retry_stops_at_its_timeout_before_its_attempts(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: poll
    name: Wait, but not long
    fake: {say: poll, results: [0]}
    retry: {until: "result == 1", attempts: 100, interval: 10s, timeout: 25s}
""",
    )
    assert isinstance(ran.error, StepAborted)
    assert ran.clock.slept == [10.0, 10.0]  # a third wait would end past the 25 s deadline
    assert ran.of("step.finished")[0]["attempts"] == 3


def test_retry_without_until_retries_only_while_the_step_errors(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: flaky
    name: Fails twice, then works
    fake: {say: flaky, fail_first: 2, result: done}
    retry: {attempts: 5, interval: 3s}
""",
    )
    assert ran.error is None
    assert SENT.runs == {"flaky": 3} and ran.clock.slept == [3.0, 3.0]
    assert ran.decisions("until") == []
    assert ran.of("step.finished")[0]["outcome"] == "ok" and ran.of("step.finished")[0]["attempts"] == 3


def test_a_change_retried_is_approved_at_every_attempt(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: bump
    name: Count up
    fake: {say: bump, changes: write, results: [1, 2]}
    confirm: Bump?
    retry: {until: "result == 2", attempts: 3, interval: 1s}
""",
        operator=answering(True, True),
    )
    assert ran.error is None
    assert len(ran.of("approval.given")) == 2 and SENT.commands == ["bump", "bump"]


# -- on_failure: continue, abort, goto ----------------------------------------------------------------------
def test_on_failure_continue_goes_on_and_keeps_the_error(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: broken
    name: Errors
    fake: {say: broken, fail: no such thing}
    on_failure: continue
  - id: next
    name: Runs anyway
    fake: {say: "{{ steps.broken.outcome }}: {{ steps.broken.error }}"}
""",
    )
    assert ran.error is None
    assert SENT.commands == ["error: no such thing"]
    assert ran.records["broken"].advice == "wait and try again"


def test_on_failure_abort_stops_with_the_exit_code_of_the_failure(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: check
    name: Expects what is not
    fake: {say: check, result: 0}
    expect:
      - that: result == 1
        message: "expected 1, got {{ result }}"
  - id: never
    name: Not reached
    fake: {say: never}
""",
    )
    assert isinstance(ran.error, StepAborted) and ran.error.exit_code == ExitCode.FINDINGS
    assert str(ran.error) == "step 'check' failed: expected 1, got 0"
    assert ran.outcomes() == [("check", "failed")] and ran.runner.state.findings == 1


def test_on_failure_goto_jumps_over_the_steps_between(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: check
    name: Fails
    fake: {say: check, fail: broken}
    on_failure: {goto: recover}
  - id: skipped
    name: Jumped over
    fake: {say: skipped}
  - id: recover
    name: Recovery
    fake: {say: recover}
""",
    )
    assert ran.error is None
    assert SENT.commands == ["recover"]
    assert ran.decisions("on_failure") == ["recover"]
    assert ran.outcomes() == [("check", "error"), ("recover", "ok")]


def test_a_goto_loop_ends_at_the_execution_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "MAX_STEP_EXECUTIONS", 7)
    ran = run(
        tmp_path,
        """\
steps:
  - id: again
    name: Fails forever
    fake: {say: again, fail: still broken}
    on_failure: {goto: again}
""",
    )
    assert isinstance(ran.error, UsageError) and "more than 7 step executions" in str(ran.error)
    assert SENT.runs == {"again": 7}


def test_yes_covers_a_few_visits_of_a_changing_step_not_a_goto_loop(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: change
    name: Change
    fake: {say: change, changes: write}
    confirm: Change?
  - id: check
    name: Never satisfied
    fake: {say: check, result: 0}
    expect:
      - {that: result == 1, message: not yet}
    on_failure: {goto: change}
""",
        operator=no_terminal(yes=True),
    )
    assert isinstance(ran.error, StoppedError) and ran.error.exit_code == ExitCode.STOPPED
    assert SENT.commands.count("change") == MAX_CHANGE_VISITS
    refused = ran.of("approval.refused")[0]
    assert "4th time in this run" in refused["reason"] and refused["reason"].endswith("no terminal to ask on")
    assert [e["method"] for e in ran.of("approval.given")] == ["flag"] * MAX_CHANGE_VISITS
    assert ran.records["change"].outcome == "refused"


def test_yes_covers_a_limited_number_of_changes_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(approval, "MAX_CHANGES_BY_FLAG", 2)
    ran = run(
        tmp_path,
        """\
steps:
  - id: each
    name: Change each
    foreach: "[1, 2, 3]"
    fake: {say: "change {{ item }}", changes: write}
    confirm: Change?
""",
        operator=no_terminal(yes=True),
    )
    assert isinstance(ran.error, StoppedError)
    assert SENT.commands == ["change 1", "change 2"]
    assert "already made 2 approved changes" in ran.of("approval.refused")[0]["reason"]


# -- call ---------------------------------------------------------------------------------------------------
CHILD = """\
params:
  name: {type: string, required: true}
steps:
  - id: greet
    name: Greet
    fake: {say: "hello {{ name }}"}
    register: greeting
"""


def test_call_runs_the_called_procedure_one_level_deeper_and_returns_its_registers(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: nested
    name: Call the child
    call: {procedure: test/child, params: {name: acme}}
    register: child
  - id: after
    name: Use what it registered
    fake: {say: "{{ child.greeting }} from {{ child.procedure }}"}
""",
        catalog={"test/child": CHILD},
    )
    assert ran.error is None
    assert SENT.commands == ["hello acme", "hello acme from test/child"]
    assert [(e["step"]["id"], e["step"]["call_depth"], e["step"]["procedure"]) for e in ran.of("step.finished")] == [
        ("greet", 1, "test/child"),
        ("nested", 0, "test/p"),
        ("after", 0, "test/p"),
    ]
    assert ran.records["greet"].depth == 1


def test_calls_nest_at_most_eight_deep(tmp_path: Path) -> None:
    itself = """\
steps:
  - id: deeper
    name: Call myself
    call: {procedure: test/loop}
"""
    ran = run(tmp_path, itself, catalog={"test/loop": itself})
    assert isinstance(ran.error, StepAborted)
    assert "call test/loop: calls nested more than 8 deep" in str(ran.error)
    assert max(e["step"]["call_depth"] for e in ran.of("step.started")) == 8


def test_a_call_to_an_unknown_procedure_is_an_error_of_the_step(tmp_path: Path) -> None:
    ran = run(tmp_path, "steps:\n  - {id: nested, name: Call, call: {procedure: test/none}}\n")
    assert isinstance(ran.error, StepAborted) and ran.error.exit_code == ExitCode.USAGE
    assert ran.of("step.finished")[0]["error"]["message"] == "no procedure 'test/none'"


# -- verifies -----------------------------------------------------------------------------------------------
VERIFY = """\
params:
  fix: {type: boolean, default: true}
steps:
  - id: change
    name: Fix it
    fake: {say: fix, changes: write}
    when: fix
    confirm: Fix?
  - id: check
    name: Is it fixed?
    fake: {say: check, result: 0}
    verifies: change
    retry: {until: "result == 1", attempts: 3, interval: 1s}
    expect:
      - {that: result == 1, message: not fixed}
"""


def test_a_verification_of_a_change_that_did_not_run_is_not_checked(tmp_path: Path) -> None:
    ran = run(tmp_path, VERIFY, params={"fix": False})
    assert ran.error is None
    assert SENT.commands == ["check"] and ran.clock.slept == []  # read once, no wait for a change never sent
    assert ran.decisions("until") == ["not polled"]
    finished = ran.of("step.finished")[0]
    assert finished["outcome"] == "ok" and "'change' was not sent (it did not run)" in finished["note"]
    assert finished["expectations"][0]["held"] is None
    assert finished["expectations"][0]["reason"] == "not checked: 'change', the change it verifies, did not run"


def test_a_verification_of_a_change_that_ran_is_checked(tmp_path: Path) -> None:
    ran = run(tmp_path, VERIFY, operator=answering(True))
    assert isinstance(ran.error, StepAborted) and ran.error.exit_code == ExitCode.FINDINGS
    assert SENT.commands == ["fix", "check", "check", "check"]
    assert ran.of("step.finished")[1]["outcome"] == "failed"


# -- the gate -----------------------------------------------------------------------------------------------
CHANGE = """\
steps:
  - id: change
    name: Change it
    fake: {say: change, changes: CHANGES}
    confirm: Really?
  - id: after
    name: After
    fake: {say: after}
"""


def test_the_operator_says_no_and_the_run_stops_refused(tmp_path: Path) -> None:
    operator = answering(False)
    ran = run(tmp_path, CHANGE.replace("CHANGES", "write"), operator=operator)
    assert isinstance(ran.error, StoppedError) and ran.error.exit_code == ExitCode.STOPPED
    assert str(ran.error) == "not approved: declined"
    assert SENT.commands == [] and operator.asked == ["  Proceed?"]
    assert "why    : Really?" in operator.told[0]
    refused = ran.of("approval.refused")[0]
    assert (refused["by"], refused["method"], refused["reason"]) == ("alice", "yes", "declined")
    assert ran.outcomes() == [("change", "refused")]
    assert ran.runner.state.refusals == 1 and ran.runner.state.approvals == 0


def test_a_destructive_change_wants_the_target_name_typed(tmp_path: Path) -> None:
    wrong = run(tmp_path, CHANGE.replace("CHANGES", "destructive"), operator=answering("production/cache"))
    assert isinstance(wrong.error, StoppedError) and SENT.commands == []
    assert wrong.of("approval.refused")[0]["reason"] == "wrong target name typed"
    right = run(tmp_path, CHANGE.replace("CHANGES", "destructive"), operator=answering("staging/cache"))
    assert right.error is None and SENT.commands == ["change", "after"]
    assert right.of("approval.given")[0]["method"] == "typed-target"


def test_no_terminal_and_no_yes_refuses_before_anything_is_sent(tmp_path: Path) -> None:
    ran = run(tmp_path, CHANGE.replace("CHANGES", "write"), operator=no_terminal())
    assert isinstance(ran.error, StoppedError) and SENT.commands == []
    assert ran.of("approval.refused")[0]["reason"] == "no terminal and no --yes"
    yes = run(tmp_path, CHANGE.replace("CHANGES", "write"), operator=no_terminal(yes=True))
    assert yes.error is None and yes.of("approval.given")[0]["method"] == "flag"


def test_a_signal_while_asking_is_a_refusal_then_the_interruption(tmp_path: Path) -> None:
    ran = run(tmp_path, CHANGE.replace("CHANGES", "write"), operator=answering(Interrupted(signal.SIGHUP)))
    assert isinstance(ran.error, Interrupted) and ran.error.exit_code == 129
    refused = ran.of("approval.refused")[0]
    assert refused["reason"] == "interrupted by SIGHUP" and refused["method"] == "none"
    assert SENT.commands == [] and ran.of("step.finished") == []


# -- dry-run ------------------------------------------------------------------------------------------------
def test_dry_run_predicts_a_change_and_sends_nothing(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: change
    name: Set it
    fake: {say: set, changes: write, predict: 42}
    confirm: Set?
    register: value
  - id: check
    name: Read it back
    fake: {say: "read {{ value }}", result: 42}
    expect:
      - {that: value == 42, message: not set}
""",
        operator=answering(),  # never asked
        dry_run=True,
    )
    assert ran.error is None
    assert SENT.commands == ["read 42"]  # the read runs; the change is only predicted
    assert ran.of("approval.requested") == [] and ran.of("approval.given") == []
    change, check = ran.of("step.finished")
    assert change["outcome"] == "predicted" and change["result"] == 42
    assert change["blast_radius"] == {"keys": 1, "what": "set"}
    assert change["predicted_changes"] == [{"what": "set", "result": None}]
    assert check["expectations"][0]["held"] is None  # it reads a prediction: predicted, not checked
    assert ran.registered == {"value": 42}
    assert ran.records["change"].outcome == "predicted"


# -- interruption and finally -------------------------------------------------------------------------------
FINALLY = """\
steps:
  - id: first
    name: First
    fake: {say: first}
  - id: work
    name: The work
    fake: WORK
  - id: never
    name: Never after a stop
    fake: {say: never}
finally:
  - id: cleanup
    name: Clean up
    fake: {say: cleanup}
  - id: cleanup-2
    name: Clean up more
    fake: {say: cleanup 2}
"""


def test_an_interruption_inside_a_step_still_runs_the_finally_steps(tmp_path: Path) -> None:
    ran = run(tmp_path, FINALLY.replace("WORK", "{say: work, interrupt: SIGTERM}"))
    assert isinstance(ran.error, Interrupted) and ran.error.exit_code == 143
    assert SENT.commands == ["first", "cleanup", "cleanup 2"]
    assert ran.decisions("finally") == ["interrupted"]
    assert [e["step"]["id"] for e in ran.of("step.finished")] == ["first", "cleanup", "cleanup-2"]
    assert all(e.get("cleanup") for e in ran.of("step.finished")[1:])
    assert ran.runner.cleaning == 0


@pytest.mark.parametrize(
    ("work", "ending", "error"),
    [
        ("{say: work}", "ok", None),
        ("{say: work, fail: broken}", "aborted", StepAborted),
        ("{say: work, result: 0}\n    expect: [{that: result == 1, message: zero}]", "failed", StepAborted),
        ("{say: work, changes: write}\n    confirm: Go?", "refused", StoppedError),
    ],
)
def test_finally_steps_run_however_the_steps_ended(
    tmp_path: Path, work: str, ending: str, error: type[BaseException] | None
) -> None:
    ran = run(tmp_path, FINALLY.replace("WORK", work))
    assert (type(ran.error) if ran.error else None) is error
    assert ran.decisions("finally") == [ending]
    assert SENT.commands[-2:] == ["cleanup", "cleanup 2"]


def test_a_failing_cleanup_step_does_not_stop_the_others_and_is_raised_after(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: work
    name: Work
    fake: {say: work}
finally:
  - id: cleanup
    name: Breaks
    fake: {say: cleanup, fail: cannot clean}
  - id: cleanup-2
    name: Still runs
    fake: {say: cleanup 2}
""",
    )
    assert isinstance(ran.error, StepAborted) and "cannot clean" in str(ran.error)
    assert SENT.commands == ["work", "cleanup 2"]


# -- block --------------------------------------------------------------------------------------------------
def test_a_block_retries_its_steps_as_one_until_it_holds(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: group
    name: Two steps as one
    block:
      - id: a
        name: A
        fake: {say: a, results: [1, 2, 3]}
        register: a
      - id: b
        name: B
        fake: {say: "b {{ a }}"}
        register: b
    register: both
    retry: {until: "result.a >= 2", attempts: 3, interval: 5s}
""",
    )
    assert ran.error is None
    assert SENT.commands == ["a", "b 1", "a", "b 2"]
    assert ran.decisions("until") == [False, True] and ran.clock.slept == [5.0]
    assert ran.registered is not None and ran.registered["both"] == {"a": 2, "b": "b 2"}
    assert [e["command"] for e in ran.of("step.started") if e["step"]["id"] == "group"] == ["block group"] * 2


# -- sampling, secrets, a body that does not render ---------------------------------------------------------
def test_a_sampled_read_runs_every_interval_and_keeps_the_series(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: watch
    name: Watch the counter
    fake: {say: watch, results: [5, 6, 7]}
    sample: {every: 2s, count: 3}
    register: series
""",
    )
    assert ran.error is None
    assert SENT.commands == ["watch"] * 3 and ran.clock.slept == [2.0, 2.0]
    series = ran.registered["series"] if ran.registered else None
    assert series is not None and series["readings"] == [5, 6, 7] and series["count"] == 3
    assert [s["t"] for s in series["samples"]] == [0.0, 2.0, 4.0] and series["interrupted"] is False


def test_a_secret_result_never_reaches_the_transcript(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: password
    name: Make a password
    fake: {say: generate, result: hunter2-very-secret}
    register: password
    secret: true
  - id: use
    name: Use it
    fake: {say: "login {{ password }}"}
""",
    )
    assert ran.error is None
    assert SENT.commands == ["generate", "login hunter2-very-secret"]  # the kind sees the real value
    text = ran.path.read_text(encoding="utf-8")
    assert "hunter2" not in text and "[SECRET:password]" in text


def test_a_body_that_does_not_render_is_a_usage_error_that_is_not_retried(tmp_path: Path) -> None:
    ran = run(
        tmp_path,
        """\
steps:
  - id: broken
    name: Renders nothing
    fake: {say: "{{ params.nothing.deeper }}"}
    retry: {attempts: 5, interval: 1s}
""",
    )
    assert isinstance(ran.error, StepAborted) and ran.error.exit_code == ExitCode.USAGE
    assert SENT.runs == {} and ran.clock.slept == []
    finished = ran.of("step.finished")[0]
    assert finished["outcome"] == "error" and finished["error"]["message"].startswith("test/p.yaml:")


def test_advice_is_carried_by_every_runbook_error() -> None:
    assert UsageError("bad input", advice="read the docs").advice == "read the docs"
    assert StoppedError("no").advice is None
    assert ActionFailed("refused", advice="try later").advice == "try later"


# -- continue: steps inside a call and foreach items are reused by their path, their in-doubt change asked again --
COUNTER = """\
steps:
  - id: nested
    name: Call the counter
    call: {procedure: test/count}
    register: counter
  - id: after
    name: Use what it counted
    fake: {say: "after {{ counter.counted | join(',') }} {{ counter.seen }}"}
"""
COUNT = """\
steps:
  - id: look
    name: Look first
    fake: {say: look}
    register: seen
  - id: each
    name: Count one key
    fake: {say: "count {{ item }}", changes: write, interrupt: "INTERRUPT"}
    confirm: Count it?
    foreach: ITEMS
    register: counted
"""


def _count(items: str = '["a", "b", "c"]', interrupt_at: str = "") -> dict[str, str]:
    """The callee, its foreach over `items`; a signal takes the change in flight at `interrupt_at` (after approval)."""
    at = "{{ 'SIGINT' if item == 'AT' else '' }}".replace("AT", interrupt_at) if interrupt_at else ""
    return {"test/count": COUNT.replace("ITEMS", f"'{items}'").replace("INTERRUPT", at)}


def _continue(ran: Ran) -> Any:
    from engine.run.resume import plan_from_events

    head = {"type": "run.started", "run_id": "run-1", "procedure": {"id": "test/p"}}  # the runner writes no header
    return plan_from_events([head, *ran.events], str(ran.path))


def test_continue_reuses_steps_inside_a_call_and_the_loop_items_done(tmp_path: Path) -> None:
    first = run(tmp_path, COUNTER, operator=answering(True, False), catalog=_count())
    assert isinstance(first.error, StoppedError)  # item b refused: a done, c never reached
    assert SENT.commands == ["look", "count a"]
    SENT.commands.clear()
    again = run(tmp_path, COUNTER, operator=answering(True, True), catalog=_count(), resume=_continue(first))
    assert again.error is None, again.error
    assert SENT.commands == ["count b", "count c", "after count a,count b,count c look"]  # look and a not again
    resumed = [(e["step"]["id"], e["step"]["iteration"], e["step"]["call_path"]) for e in again.of("step.resumed")]
    path = [{"procedure": "test/p", "step": "nested", "iteration": None}]
    assert resumed == [("look", None, path), ("each", 0, path)]
    started = [(e["step"]["id"], e["step"]["iteration"]) for e in again.of("step.started")]
    assert ("each", 0) not in started and ("look", None) not in started
    assert again.of("step.resumed")[1]["command"] == "fake count a"
    # a third run continues the second: what the second reused is reused again, with its command
    SENT.commands.clear()
    third = run(tmp_path, COUNTER, catalog=_count(), resume=_continue(again))
    assert third.error is None and SENT.commands == []  # every step done, `after` at the top level included


def test_continue_asks_again_about_a_change_in_flight_inside_a_call_never_on_yes(tmp_path: Path) -> None:
    first = run(tmp_path, COUNTER, operator=answering(True, True), catalog=_count(interrupt_at="b"))
    assert isinstance(first.error, Interrupted)
    assert SENT.commands == ["look", "count a"] and SENT.runs["each"] == 2  # b was approved and in flight
    plan = _continue(first)
    assert plan.in_doubt is not None and str(plan.in_doubt.key) == "nested > each[1]" and plan.in_doubt.approved
    SENT.commands.clear()
    refused = run(tmp_path, COUNTER, operator=no_terminal(yes=True), catalog=_count(), resume=plan)
    assert isinstance(refused.error, StoppedError) and SENT.commands == []  # --yes does not cover it
    (asked,) = refused.of("approval.requested")
    assert asked["step"]["iteration"] == 1 and asked["in_doubt"]["was_approved"] is True
    assert asked["blast_radius"] == {"keys": 1, "what": "count b"}  # measured again, now
    operator = answering(True, True)
    again = run(tmp_path, COUNTER, operator=operator, catalog=_count(), resume=plan)
    assert again.error is None, again.error
    assert SENT.commands == ["count b", "count c", "after count a,count b,count c look"]
    assert "IN DOUBT" in operator.told[0] and "IN DOUBT" not in operator.told[1]  # item c is asked as usual
    requests = again.of("approval.requested")
    assert [bool(r.get("in_doubt")) for r in requests] == [True, False]


def test_a_loop_item_whose_list_changed_runs_again(tmp_path: Path) -> None:
    first = run(tmp_path, COUNTER, operator=answering(True, False), catalog=_count('["a", "b"]'))
    assert SENT.commands == ["look", "count a"]
    SENT.commands.clear()
    plan = _continue(first)
    again = run(tmp_path, COUNTER, operator=answering(True, True), catalog=_count('["z", "b"]'), resume=plan)
    assert again.error is None, again.error
    assert SENT.commands == ["count z", "count b", "after count z,count b look"]  # item 0 is another key now
    assert [e["step"]["id"] for e in again.of("step.resumed")] == ["look"]


def test_a_block_run_as_a_loop_item_tells_its_steps_apart_by_item(tmp_path: Path) -> None:
    text = """\
steps:
  - id: each
    name: Per key
    foreach: '["a", "b"]'
    block:
      - id: inner
        name: Count it
        fake: {say: "count {{ item }}", changes: write}
        confirm: Count it?
"""
    first = run(tmp_path, text, operator=answering(True, False))
    assert isinstance(first.error, StoppedError) and SENT.commands == ["count a"]
    inner = [e["step"] for e in first.of("step.finished") if e["step"]["id"] == "inner"]
    assert inner[0]["call_path"] == [{"procedure": "test/p", "step": "each", "iteration": 0}]
    SENT.commands.clear()
    again = run(tmp_path, text, operator=answering(True), resume=_continue(first))
    assert again.error is None, again.error
    assert SENT.commands == ["count b"]  # item 0's block reused whole; item 1's inner step is not item 0's


def test_continue_runs_a_secret_read_inside_a_call_again(tmp_path: Path) -> None:
    """Its value is not in the transcript: it is read again, not taken from a redacted record."""
    callee = """\
steps:
  - id: token
    name: Read the token
    fake: {say: token, result: s3cr3t-value}
    secret: true
    register: token
  - id: use
    name: Use it
    fake: {say: "use {{ token }}", changes: write}
    confirm: Use it?
"""
    text = "steps:\n  - {id: nested, name: Call, call: {procedure: test/secret}}\n"
    first = run(tmp_path, text, operator=answering(False), catalog={"test/secret": callee})
    assert isinstance(first.error, StoppedError) and SENT.commands == ["token"]
    assert "s3cr3t-value" not in first.path.read_text()
    SENT.commands.clear()
    again = run(tmp_path, text, operator=answering(True), catalog={"test/secret": callee}, resume=_continue(first))
    assert again.error is None, again.error
    assert SENT.commands == ["token", "use s3cr3t-value"] and again.of("step.resumed") == []
