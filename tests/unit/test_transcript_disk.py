"""The writer when the disk cannot take a line: no change is asked for without room to record it, and
after a failed write only run.ended may still be tried."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from engine.transcript import Redactor, read_transcript
from engine.transcript import writer as writer_module
from engine.transcript.writer import TranscriptSpaceError, TranscriptWriteError, TranscriptWriter, free_bytes

STEP = {"id": "s", "name": "S", "kind": "redis", "source": "p.yaml:1", "index": 0}


def _writer(tmp_path: Path, **options: object) -> TranscriptWriter:
    writer = TranscriptWriter.create(tmp_path / "t.jsonl", "run-1", Redactor(), **options)
    writer.emit("run.started", procedure={"id": "p"}, operator="bob", mode="live", target={"name": "t"})
    return writer


def test_a_change_is_not_asked_for_without_room_to_record_it(tmp_path: Path) -> None:
    writer = _writer(tmp_path, min_free_before_change=free_bytes(tmp_path) + 2**40)
    size = writer.path.stat().st_size
    with pytest.raises(TranscriptSpaceError) as info:
        writer.emit("approval.requested", step=STEP, effect="write", command="SET a 1", command_sha256="0" * 64)
    assert info.value.errno == errno.ENOSPC and "bytes free" in info.value.strerror
    assert writer.path.stat().st_size == size  # nothing written
    writer.end(outcome="error", exit_code=4, error="no room")
    writer.close()
    assert read_transcript(writer.path).problems == []


def test_reads_need_no_room_for_a_change(tmp_path: Path) -> None:
    writer = _writer(tmp_path, min_free_before_change=free_bytes(tmp_path) + 2**40)
    writer.emit("step.started", step=STEP, effect="read")
    writer.close()


def test_after_a_failed_write_only_run_ended_is_tried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = _writer(tmp_path)

    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(writer_module, "_write_all", full)
        with pytest.raises(TranscriptWriteError) as info:
            writer.emit("step.started", step=STEP, effect="read")
    assert info.value.errno == errno.ENOSPC
    # space is back: still nothing but run.ended may follow a line that was lost
    with pytest.raises(TranscriptWriteError):
        writer.emit("step.finished", step=STEP, outcome="ok")
    assert writer.end(outcome="error", exit_code=4, error="disk full") is not None
    writer.close()
    assert read_transcript(writer.path).problems == []
