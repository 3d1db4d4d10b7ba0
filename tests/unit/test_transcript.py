"""The transcript writer, reader and verifier, on temporary files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.transcript import (
    DURABLE_TYPES,
    Redactor,
    TranscriptWriter,
    read_transcript,
    sha256_text,
    truncate_output,
    verify_transcript,
)

TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
SECRET = "s3cr3t-Pa55word"
STEP = {
    "id": "flush",
    "name": "Flush cache",
    "kind": "redis",
    "source": "p.yaml:12",
    "index": 1,
    "iteration": None,
    "call_depth": 0,
}


@pytest.fixture
def redactor() -> Redactor:
    r = Redactor()
    r.add("redis_password", SECRET)
    return r


def header(**extra: Any) -> dict[str, Any]:
    return {
        "procedure": {"id": "redis.flush", "title": "Flush", "section": "4.2", "file": "p.yaml", "sha256": "a" * 64},
        "engine_version": "0.1.0",
        "operator": "alice",
        "host": "ops-1",
        "mode": "live",
        **extra,
    }


def write_run(path: Path, redactor: Redactor, *, end: bool = True) -> list[dict[str, Any]]:
    """A small realistic run: header, a write step with approval and output, a note, run.ended."""
    events = []
    with TranscriptWriter.create(path, "run-1", redactor) as w:
        events.append(w.emit("run.started", **header(incident="INC-7", target={"name": "cache-1"})))
        command = "CONFIG SET maxmemory 2gb"
        events.append(w.emit("step.started", durable=True, step=STEP, effect="write", command=command))
        events.append(
            w.emit(
                "approval.requested", step=STEP, effect="write", command=command, command_sha256=sha256_text(command)
            )
        )
        events.append(
            w.emit("approval.given", step=STEP, by="alice", method="yes", command_sha256=sha256_text(command))
        )
        events.append(w.output(STEP, "OK"))
        change = {"kind": "config", "name": "maxmemory", "before": "1gb", "after": "2gb"}
        events.append(w.emit("step.finished", step=STEP, outcome="ok", duration_ms=1.25, changes=[change]))
        if end:
            events.append(
                w.emit("run.ended", outcome="ok", exit_code=0, duration_ms=3.5, summary={"steps": 1, "ok": 1})
            )
    return events


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


# -- writer ---------------------------------------------------------------------------------------


def test_lines_are_compact_ordered_and_chained(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "t.jsonl"
    write_run(path, redactor)
    data = path.read_bytes()
    assert data.endswith(b"\n") and b"\r" not in data
    raw = lines_of(path)
    events = [json.loads(line) for line in raw]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert all(TIME_RE.match(e["time"]) for e in events)
    monos = [e["mono_ns"] for e in events]
    assert monos == sorted(monos) and all(isinstance(m, int) for m in monos)
    assert {e["run_id"] for e in events} == {"run-1"}
    assert events[0]["prev_sha256"] is None
    for prev, event in zip(raw, events[1:], strict=False):
        assert event["prev_sha256"] == hashlib.sha256(prev).hexdigest()
    for line, event in zip(raw, events, strict=True):
        assert line == json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        keys = list(event)
        assert keys[:5] == ["seq", "time", "mono_ns", "type", "run_id"] and keys[-1] == "prev_sha256"
    assert list(events[1])[5:7] == ["step", "effect"]


def test_file_mode_and_o_excl(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "deep" / "dir" / "t.jsonl"
    write_run(path, redactor)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="never overwritten"):
        TranscriptWriter.create(path, "run-2", redactor)
    assert path.read_bytes() == before


def test_fsync_for_durable_types(tmp_path: Path, redactor: Redactor, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    w = TranscriptWriter.create(tmp_path / "t.jsonl", "run-1", redactor)
    current: list[str] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(current[-1]))

    def emit(kind: str, **fields: Any) -> None:
        current.append(kind)
        w.emit(kind, **fields)

    emit("run.started", **header())
    emit("step.started", step=STEP, effect="read")
    emit("step.started", step=STEP, effect="write", durable=True)
    emit("approval.requested", step=STEP, effect="write", command="x", command_sha256=sha256_text("x"))
    emit("approval.given", step=STEP, by="flag", method="flag", command_sha256=sha256_text("x"))
    emit("approval.refused", step=STEP, by="bob", reason="declined")
    emit("step.output", step=STEP, output="x", output_sha256=sha256_text("x"), truncated=False)
    emit("step.skipped", step=STEP, reason="when: false")
    emit("decision", step=STEP, expression="x", value=True)
    emit("step.finished", step=STEP, outcome="ok", duration_ms=1)
    emit("note", text="declared")
    emit("run.ended", outcome="ok", exit_code=0, duration_ms=2)
    assert synced == [
        "run.started",
        "step.started",
        "approval.requested",
        "approval.given",
        "approval.refused",
        "step.finished",
        "note",
        "run.ended",
    ]
    assert set(synced) - {"step.started"} == DURABLE_TYPES
    w.close()


def test_secrets_never_reach_the_file(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.create(path, "run-1", redactor) as w:
        w.emit(
            "run.started",
            **header(params={"password": SECRET, SECRET: "as a key"}, argv=["runbook", "run", "--var", f"pw={SECRET}"]),
        )
        w.emit("step.started", step=STEP, effect="destructive", command=f"CONFIG SET requirepass {SECRET}")
        w.output(STEP, f"line with {SECRET}\n" * 5, limit=20)
        w.emit(
            "step.finished",
            step=STEP,
            outcome="ok",
            duration_ms=1,
            result={"nested": [{"deep": {SECRET: [SECRET.encode(), (SECRET,)]}}]},
            error={"type": "X", "message": f"auth failed for {SECRET}"},
        )
    data = path.read_bytes()
    assert SECRET.encode() not in data
    assert b"s3cr3t" not in data  # not even a truncated prefix
    assert b"[SECRET:redis_password]" in data
    assert verify_transcript(path).ok


def test_digests_survive_short_secrets(tmp_path: Path) -> None:
    r = Redactor()
    r.add("pin", "ab")
    path = tmp_path / "t.jsonl"
    digest = next(d for d in (sha256_text(str(i)) for i in range(1000)) if "ab" in d)
    with TranscriptWriter.create(path, "run-1", r) as w:
        event = w.emit("step.output", step=STEP, output="ab", output_sha256=digest, truncated=False)
    assert event["output_sha256"] == digest and event["output"] == "[SECRET:pin]"


def test_non_json_values_are_converted(tmp_path: Path, redactor: Redactor) -> None:
    @dataclasses.dataclass(frozen=True)
    class Change:
        kind: str
        path: Path

    path = tmp_path / "t.jsonl"
    with TranscriptWriter.create(path, "run-1", redactor) as w:
        event = w.emit(
            "step.finished",
            step=STEP,
            outcome="ok",
            duration_ms=1,
            result={
                "p": Path("/etc/redis.conf"),
                "b": b"\xffraw",
                "s": {3, 1, 2},
                "t": (1, "x"),
                "when": datetime(2026, 11, 26, 1, 2, 3, tzinfo=UTC),
                "nan": float("nan"),
                7: object,
            },
            changes=[Change("file", Path("/etc/redis.conf"))],
        )
    assert event["result"]["p"] == "/etc/redis.conf"
    assert event["result"]["s"] == [1, 2, 3]
    assert event["result"]["when"] == "2026-11-26T01:02:03+00:00"
    assert event["result"]["nan"] == "nan"
    assert event["changes"] == [{"kind": "file", "path": "/etc/redis.conf"}]
    assert json.loads(lines_of(path)[0]) == event


def test_none_fields_are_omitted(tmp_path: Path, redactor: Redactor) -> None:
    with TranscriptWriter.create(tmp_path / "t.jsonl", "run-1", redactor) as w:
        event = w.emit("note", text="x", milestone=None, operator="alice")
    assert "milestone" not in event and event["operator"] == "alice"


def test_bad_usage_is_refused(tmp_path: Path, redactor: Redactor) -> None:
    w = TranscriptWriter.create(tmp_path / "t.jsonl", "run-1", redactor)
    with pytest.raises(ValueError, match="unknown"):
        w.emit("step.exploded", step=STEP)
    with pytest.raises(ValueError, match="set by the writer"):
        w.emit("note", text="x", seq=9)
    w.emit("note", text="first")
    with pytest.raises(ValueError, match="first event"):
        w.emit("run.started", **header())
    assert w.end(outcome="ok", exit_code=0, duration_ms=1) is not None
    assert w.end(outcome="interrupted", exit_code=130, duration_ms=1) is None  # already ended
    with pytest.raises(ValueError, match="nothing may follow"):
        w.emit("note", text="late")
    w.close()
    w.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        w.emit("note", text="after close")
    assert w.seq == 2 and w.last_event is not None and w.last_event["type"] == "run.ended"


def test_concurrent_emits_stay_gap_free(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.create(path, "run-1", redactor) as w:

        def worker(n: int) -> None:
            for i in range(50):
                w.emit("note", text=f"{n}-{i}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    t = read_transcript(path)
    assert [e["seq"] for e in t.events] == list(range(200)) and t.chain_ok and not t.problems


def test_truncate_output() -> None:
    kept, truncated, digest, size = truncate_output("héllo", limit=100)
    assert (kept, truncated, size) == ("héllo", False, 6)
    assert digest == hashlib.sha256("héllo".encode()).hexdigest()
    kept, truncated, digest, size = truncate_output("é" * 10, limit=5)
    assert kept == "éé" and truncated and size == 20
    assert digest == hashlib.sha256(("é" * 10).encode()).hexdigest()
    assert truncate_output(b"\xff\xfeab", limit=2)[1:] == (True, hashlib.sha256(b"\xff\xfeab").hexdigest(), 4)


def test_append_to_continues_seq_and_chain(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "notes.jsonl"
    with TranscriptWriter.append_to(path, redactor, run_id="INC-7") as w:
        assert w.seq == 0
        w.emit("note", text="paged", milestone="detected")
        w.emit("note", text="declared", milestone="declared")
    with TranscriptWriter.append_to(path, redactor, run_id="ignored") as w:
        assert w.seq == 2 and w.run_id == "INC-7"
        w.emit("note", text=f"mitigated, password {SECRET} rotated", milestone="mitigated")
    t = read_transcript(path)
    assert [e["seq"] for e in t.events] == [0, 1, 2]
    assert t.chain_ok and not t.problems and t.run_id == "INC-7"
    monos = [e["mono_ns"] for e in t.events]
    assert monos == sorted(monos)
    report = verify_transcript(path)
    assert report.ok and report.warnings == []  # a notes file has no run.ended by design
    assert SECRET.encode() not in path.read_bytes()


def test_append_to_after_a_torn_line_keeps_it_visible(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "notes.jsonl"
    with TranscriptWriter.append_to(path, redactor, run_id="INC-7") as w:
        w.emit("note", text="one")
    with path.open("ab") as f:
        f.write(b'{"seq":1,"ti')
    with TranscriptWriter.append_to(path, redactor) as w:
        assert w.seq == 1
        w.emit("note", text="two")
    t = read_transcript(path)
    assert [e["text"] for e in t.events] == ["one", "two"]
    assert [p.line for p in t.problems] == [2] and t.chain_ok


def test_append_to_after_a_line_nested_too_deep_for_json_skips_it(tmp_path: Path, redactor: Redactor) -> None:
    """A notes file is anyone's to damage: a last line of 100,000 '[' made the JSON parser raise
    RecursionError, a traceback instead of a note. It is a bad line like any other."""
    path = tmp_path / "notes.jsonl"
    with TranscriptWriter.append_to(path, redactor, run_id="INC-7") as w:
        w.emit("note", text="one")
    with path.open("ab") as f:
        f.write(b"[" * 100_000 + b"\n")
    with TranscriptWriter.append_to(path, redactor) as w:
        assert w.seq == 1 and w.run_id == "INC-7"
        w.emit("note", text="two")
    t = read_transcript(path)
    assert [e["text"] for e in t.events] == ["one", "two"]
    assert [p.line for p in t.problems] == [2]


# -- reader ---------------------------------------------------------------------------------------


def test_reader_on_a_clean_run(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "t.jsonl"
    written = write_run(path, redactor)
    t = read_transcript(path)
    assert t.events == written
    assert t.ended and not t.cut_off and t.chain_ok and not t.problems
    assert t.run_id == "run-1" and t.header == written[0]
    assert t.lines == list(range(1, len(written) + 1))


def test_reader_half_written_last_line(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "t.jsonl"
    written = write_run(path, redactor, end=False)
    with path.open("ab") as f:
        f.write(b'{"seq":6,"time":"2026-11-26T01:5')
    t = read_transcript(path)
    assert t.cut_off and not t.ended
    assert t.events == written and t.chain_ok and not t.problems
    assert t.tail is not None and t.tail.line == len(written) + 1
    report = verify_transcript(path)
    assert report.ok
    assert any("half-written" in w for w in report.warnings)
    assert any("no run.ended" in w for w in report.warnings)


def test_reader_never_raises_on_garbage(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'\xff\xfe\n[1,2]\n\n{not json}\n{"seq": "zero"}\n')
    t = read_transcript(path)
    assert [p.line for p in t.problems][:4] == [1, 2, 3, 4]
    assert not t.cut_off  # the last line parsed: the damage is in the middle, not a crash
    assert not verify_transcript(path).ok


def test_reader_unparsable_last_line_is_cut_off(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "t.jsonl"
    write_run(path, redactor, end=False)
    with path.open("ab") as f:
        f.write(b"\x00\x00\x00\n")
    t = read_transcript(path)
    assert t.cut_off and t.problems[-1].line == 7


def test_reader_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_transcript(tmp_path / "nope.jsonl")


# -- verify ---------------------------------------------------------------------------------------


def test_verify_clean(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "t.jsonl"
    write_run(path, redactor)
    report = verify_transcript(path)
    assert report.ok and report.problems == [] and report.warnings == [] and report.events == 7
    assert "ok" in report.render()


def test_verify_edited_byte_names_the_next_line(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "t.jsonl"
    write_run(path, redactor)
    raw = lines_of(path)
    raw[2] = raw[2].replace(b'"effect":"write"', b'"effect":"read" ')  # a byte changed on line 3
    path.write_bytes(b"\n".join(raw) + b"\n")
    report = verify_transcript(path)
    assert not report.ok
    first = report.problems[0]
    assert (first.line, first.seq) == (4, 3)
    assert str(first) == "line 4 (seq 3): prev_sha256 does not match line 3: line 3 was changed or removed"
    assert "first bad line: 4" in report.render()


def test_verify_removed_line(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "t.jsonl"
    write_run(path, redactor)
    raw = lines_of(path)
    del raw[3]  # seq 3, approval.given
    path.write_bytes(b"\n".join(raw) + b"\n")
    report = verify_transcript(path)
    assert not report.ok
    messages = [str(p) for p in report.problems]
    assert any(m.startswith("line 4 (seq 4): seq gap: seq jumps from 2 to 4") for m in messages)
    assert any(m.startswith("line 4 (seq 4): prev_sha256 does not match line 3") for m in messages)
    assert all(p.line == 4 for p in report.problems)


def test_verify_removed_first_line(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "t.jsonl"
    write_run(path, redactor)
    raw = lines_of(path)[1:]
    path.write_bytes(b"\n".join(raw) + b"\n")
    report = verify_transcript(path)
    assert not report.ok and report.problems[0].line == 1
    assert any("prev_sha256 should be null" in p.message for p in report.problems)
    assert any("no run.started" in w for w in report.warnings)


def test_verify_schema_violation_is_named(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.create(path, "run-1", redactor) as w:
        w.emit("run.started", **header())
        w.emit("step.started", step=STEP, command="FLUSHALL")  # no effect
        w.emit("run.ended", outcome="ok", exit_code=0, duration_ms=1)
    report = verify_transcript(path)
    assert not report.ok
    assert [str(p) for p in report.problems] == [
        "line 2 (seq 1): schema: step.started: 'effect' is a required property"
    ]


def test_verify_nested_schema_violation(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.create(path, "run-1", redactor) as w:
        w.emit("run.started", **header(mode="yolo"))
        w.emit(
            "step.finished",
            step=STEP,
            outcome="ok",
            duration_ms=1,
            expectations=[{"that": "x", "severity": "critical", "held": "yes"}],
            changes=[{"kind": "keys_removed"}, {"kind": "custom", "anything": 1}],
        )
        w.emit("run.ended", outcome="ok", exit_code=0, duration_ms=1)
    messages = [str(p) for p in verify_transcript(path).problems]
    assert any(m.startswith("line 1 (seq 0): schema: run.started: $.mode:") for m in messages)
    assert any("$.expectations[0].held" in m for m in messages)
    assert any("$.changes[0]: 'count' is a required property" in m for m in messages)
    assert not any("changes[1]" in m for m in messages)  # other kinds are allowed


def test_verify_missing_run_ended_is_a_warning(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "t.jsonl"
    write_run(path, redactor, end=False)
    report = verify_transcript(path)
    assert report.ok and report.problems == []
    assert len(report.warnings) == 1 and report.warnings[0].startswith("no run.ended: the run was cut off")


def test_verify_run_id_change_and_empty_file(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "t.jsonl"
    write_run(path, redactor)
    raw = lines_of(path)
    raw[-1] = raw[-1].replace(b'"run_id":"run-1"', b'"run_id":"run-2"')
    path.write_bytes(b"\n".join(raw) + b"\n")
    assert any("run_id changes" in p.message for p in verify_transcript(path).problems)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert not verify_transcript(empty).ok


# -- interrupts -------------------------------------------------------------------------------------


def test_end_from_a_signal_handler_mid_write(
    tmp_path: Path, redactor: Redactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.transcript.writer as writer_module

    path = tmp_path / "t.jsonl"
    w = TranscriptWriter.create(path, "run-1", redactor)
    w.emit("run.started", **header())
    real = writer_module._write_all
    calls: list[int] = []

    def interrupted(fd: int, data: bytes) -> None:
        if not calls:  # the "signal" lands just before the first write
            calls.append(1)
            assert w.end(outcome="interrupted", exit_code=130, duration_ms=5) is None  # deferred
            w.close()  # deferred too
            with pytest.raises(RuntimeError, match="re-entered"):
                w.emit("note", text="from the handler")
        real(fd, data)

    monkeypatch.setattr(writer_module, "_write_all", interrupted)
    w.emit("step.started", step=STEP, effect="write", durable=True)
    assert w.ended and w.closed
    t = read_transcript(path)
    assert [e["type"] for e in t.events] == ["run.started", "step.started", "run.ended"]
    assert t.chain_ok and not t.problems and t.ended


@pytest.mark.parametrize("written", [False, True])
def test_keyboard_interrupt_around_a_write_keeps_the_chain(
    tmp_path: Path, redactor: Redactor, monkeypatch: pytest.MonkeyPatch, written: bool
) -> None:
    import engine.transcript.writer as writer_module

    path = tmp_path / "t.jsonl"
    w = TranscriptWriter.create(path, "run-1", redactor)
    w.emit("run.started", **header())
    real = writer_module._write_all

    def interrupted(fd: int, data: bytes) -> None:
        if written:
            real(fd, data)
        raise KeyboardInterrupt

    monkeypatch.setattr(writer_module, "_write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        w.emit("step.started", step=STEP, effect="read")
    monkeypatch.setattr(writer_module, "_write_all", real)
    assert w.seq == (2 if written else 1)
    w.end(outcome="interrupted", exit_code=130, duration_ms=5)
    w.close()
    t = read_transcript(path)
    assert t.chain_ok and not t.problems and t.ended
    assert len(t.events) == (3 if written else 2)


def test_partial_write_makes_the_writer_refuse_more(
    tmp_path: Path, redactor: Redactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.transcript.writer as writer_module

    path = tmp_path / "t.jsonl"
    w = TranscriptWriter.create(path, "run-1", redactor)
    w.emit("run.started", **header())

    def disk_full(fd: int, data: bytes) -> None:
        os.write(fd, data[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer_module, "_write_all", disk_full)
    with pytest.raises(OSError, match="No space"):
        w.emit("note", text="x")
    with pytest.raises(OSError, match="unusable"):
        w.emit("note", text="y")
    w.close()
    t = read_transcript(path)
    assert t.cut_off and len(t.events) == 1 and t.tail is not None


# -- the documentation ------------------------------------------------------------------------------


def test_the_documented_example_verifies(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "transcript.md").read_text(encoding="utf-8")
    example = re.search(r"```jsonl\n(.*?)\n```", doc, re.S)
    snippet = re.search(r"```python\n(.*?)\n```", doc, re.S)
    assert example and snippet
    path = tmp_path / "example.jsonl"
    path.write_text(example.group(1) + "\n", encoding="utf-8")
    report = verify_transcript(path)
    assert report.ok and report.warnings == [] and 5 <= report.events <= 8
    script = tmp_path / "chain.py"
    script.write_text(snippet.group(1), encoding="utf-8")

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, script, path], capture_output=True, text=True, check=False)

    done = run()
    assert done.returncode == 0 and "chain ok" in done.stdout
    lines = path.read_bytes().split(b"\n")
    original = lines[2]
    lines[2] = lines[2].replace(b'"write"', b'"read"', 1)  # someone downgrades what was approved
    assert lines[2] != original
    path.write_bytes(b"\n".join(lines))
    done = run()
    assert done.returncode == 1 and "line 4" in done.stderr


def test_append_to_takes_turns(tmp_path: Path, redactor: Redactor) -> None:
    path = tmp_path / "notes.jsonl"
    with TranscriptWriter.append_to(path, redactor, run_id="INC-7") as w:
        w.emit("note", text="zero")
    first = TranscriptWriter.append_to(path, redactor)
    got: list[int] = []

    def second() -> None:
        with TranscriptWriter.append_to(path, redactor) as w2:  # waits for `first` to close
            got.append(w2.emit("note", text="two")["seq"])

    thread = threading.Thread(target=second)
    thread.start()
    first.emit("note", text="one")
    first.close()
    thread.join(timeout=60)  # bounds a hang only
    assert got == [2]
    t = read_transcript(path)
    assert [e["text"] for e in t.events] == ["zero", "one", "two"] and t.chain_ok and not t.problems
