"""The one writer of a run's transcript: append-only JSON Lines, redacted, hash-chained, fsynced.

Each line is written with a single `os.write` on an `O_APPEND` descriptor, so a crash leaves at
worst one half-written last line (which the reader recognises). Lines that record a decision or a
change are fsynced before `emit` returns, so what the operator saw happen is on disk. Every line
carries the sha256 of the previous line's bytes: editing or removing a line breaks the chain.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import hashlib
import json
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path, PurePath
from types import TracebackType
from typing import Any

from engine.fsutil import fsync_dir
from engine.transcript.redact import Redactor

EVENT_TYPES = (
    "run.started",
    "step.started",
    "approval.requested",
    "approval.given",
    "approval.refused",
    "step.output",
    "step.finished",
    "step.skipped",
    "decision",
    "operator.input",
    "host_key.accepted",
    "note",
    "lease.acquired",
    "lease.refused",
    "lease.stolen",
    "lease.lost",
    "lease.released",
    "target.identified",
    "step.resumed",
    "fleet.planned",
    "fleet.child.started",
    "fleet.child.finished",
    "fleet.approval",
    "fleet.halted",
    "topology.discovered",
    "topology.changed",
    "run.ended",
)

DURABLE_TYPES = frozenset(
    {
        "run.started",
        "approval.requested",
        "approval.given",
        "approval.refused",
        "step.finished",
        "run.ended",
        "note",
    }
)
"""Fsynced whatever the caller asks; `step.started` is fsynced when the caller passes durable=True."""

RESERVED_FIELDS = frozenset({"seq", "time", "mono_ns", "type", "run_id", "prev_sha256", "signature"})

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # a transcript or notes file is never written through a symlink

SIGNED_TYPES = frozenset({"approval.given", "approval.refused", "run.ended"})
"""With a signer, these lines carry an SSH signature over the line itself (and so the chain before it)."""

OUTPUT_LIMIT = 64_000
"""Default byte budget for a step.output line's `output`."""

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

_HEX64 = re.compile(r"[0-9a-f]{64}")

MIN_FREE_BEFORE_CHANGE = 8 * 1024 * 1024
"""Free bytes the transcript's filesystem must have before a change is put to the gate (docs/cli.md):
room for the approval, the step's output (64 KB a line) and run.ended. Below it the change is refused."""


class TranscriptWriteError(OSError):
    """A line could not be written (disk full, I/O error). After it only run.ended may still be tried."""


class TranscriptSpaceError(TranscriptWriteError):
    """Too little free space to record a change: refused before it is asked for, nothing written."""


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on `directory`'s filesystem."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. 2026-11-26T01:53:33.123456Z."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(TIME_FORMAT)


def sha256_text(text: str | bytes) -> str:
    """Lowercase hex sha256 of a string's UTF-8 bytes (command_sha256, output_sha256)."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", errors="surrogatepass")
    return hashlib.sha256(data).hexdigest()


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id: 20261126T015333Z-a1b2c3."""
    now = now or datetime.now(UTC)
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def default_transcript_path(run_id: str, root: Path = Path("transcripts"), now: datetime | None = None) -> Path:
    """Where a run's transcript goes unless --transcript says otherwise: <root>/<UTC date>/<run id>.jsonl."""
    now = now or datetime.now(UTC)
    return root / f"{now.astimezone(UTC):%Y-%m-%d}" / f"{run_id}.jsonl"


def truncate_output(text: str | bytes, limit: int = OUTPUT_LIMIT) -> tuple[str, bool, str, int]:
    """(kept text, truncated?, sha256 of the whole, full byte length) for a step.output line.

    `limit` is in UTF-8 bytes; the cut never splits a character. Redact before truncating (or use
    `TranscriptWriter.output`): a secret cut in half at the limit would no longer be recognised.
    """
    raw = text.encode("utf-8", errors="surrogatepass") if isinstance(text, str) else bytes(text)
    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) <= limit:
        kept = text if isinstance(text, str) else raw.decode("utf-8", errors="replace")
        return kept, False, digest, len(raw)
    kept = raw[: max(limit, 0)].decode("utf-8", errors="ignore")
    return kept, True, digest, len(raw)


def to_jsonable(value: Any, _stack: frozenset[int] = frozenset()) -> Any:
    """`value` as plain JSON data; anything unknown becomes its str(). Never raises."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, _stack)
    if id(value) in _stack:
        return "<cycle>"
    stack = _stack | {id(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name, None), stack) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {_key(k): to_jsonable(v, stack) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, stack) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [to_jsonable(v, stack) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    try:
        return str(value)
    except Exception:  # a broken __str__ must not lose the event
        return f"<{type(value).__name__}>"


def _key(key: object) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).decode("utf-8", errors="replace")
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    return str(to_jsonable(key))


def serialise(event: Mapping[str, Any]) -> bytes:
    """One transcript line without its newline: compact JSON, UTF-8, non-ASCII kept as is."""
    text = json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # A lone surrogate (undecodable input) becomes a \\udcxx escape: still valid JSON, valid UTF-8.
    return text.encode("utf-8", errors="backslashreplace")


@dataclasses.dataclass(frozen=True)
class _State:
    """What the next line needs; replaced as a whole so an interrupt never leaves it half-updated."""

    seq: int
    prev: str | None
    last: dict[str, Any] | None
    ended: bool
    size: int


class TranscriptWriter:
    """Appends events to one transcript file. Thread-safe; use `create` or `append_to`."""

    def __init__(
        self,
        fd: int,
        path: Path,
        run_id: str,
        redactor: Redactor,
        *,
        seq: int = 0,
        prev_sha256: str | None = None,
        mono_offset_ns: int = 0,
        last_event: dict[str, Any] | None = None,
        clock: Callable[[], datetime] | None = None,
        monotonic_ns: Callable[[], int] | None = None,
        min_free_before_change: int = MIN_FREE_BEFORE_CHANGE,
        signer: Any = None,
    ) -> None:
        self._fd: int | None = fd
        self.signer = signer  # engine.transcript.signer.Signer or None
        self.min_free_before_change = min_free_before_change
        self._failed: OSError | None = None  # a write failed cleanly: only run.ended may be tried
        self.path = path
        self.run_id = run_id
        self.redactor = redactor
        ended = last_event is not None and last_event.get("type") == "run.ended"
        self._state = _State(seq, prev_sha256, last_event, ended, os.fstat(fd).st_size)
        self._broken: BaseException | None = None
        self._lock = threading.RLock()  # re-entrant: a signal handler may call end() mid-write
        self._writing = False
        self._pending_end: dict[str, Any] | None = None
        self._close_pending = False
        self._clock = clock or (lambda: datetime.now(UTC))
        self._mono = monotonic_ns or time.monotonic_ns
        self._mono0 = self._mono() - mono_offset_ns

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, run_id: str, redactor: Redactor, **options: Any) -> TranscriptWriter:
        """A new transcript at `path`; never overwrites one (FileExistsError)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError as exc:
            raise FileExistsError(
                exc.errno,
                f"transcript {path} already exists: a transcript is never overwritten; "
                "choose another --transcript path",
                str(path),
            ) from None
        fsync_dir(path.parent)  # the new directory entry survives a crash too
        return cls(fd, path, run_id, redactor, **options)

    @classmethod
    def append_to(cls, path: Path, redactor: Redactor, run_id: str | None = None, **options: Any) -> TranscriptWriter:
        """Continue an existing transcript (seq and hash chain), or create it if it does not exist.

        Used for the incident notes file. `run_id` names a new file; an existing file keeps its own.
        An existing file is locked (flock) until `close`, so concurrent appenders take turns.
        A half-written last line is closed with a newline (never rewritten) so it stays a visible,
        separate bad line, and the chain continues from its bytes.
        """
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            try:
                writer = cls.create(path, run_id or new_run_id(), redactor, **options)
                if writer._fd is not None:
                    _lock_exclusive(writer._fd)
                return writer
            except FileExistsError:  # created by someone else meanwhile: append to theirs
                fd = os.open(path, os.O_RDWR | os.O_APPEND | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        try:
            _lock_exclusive(fd)  # two `runbook note`s at once must not both take the same seq
            data = _read_all(fd)
            if data and not data.endswith(b"\n"):
                _write_all(fd, b"\n")
                os.fsync(fd)
                data += b"\n"
            lines = data.split(b"\n")[:-1] if data else []
            last_event: dict[str, Any] | None = None
            for raw in reversed(lines):
                try:
                    parsed = json.loads(raw)
                except (ValueError, RecursionError):  # a line nested too deep is not one of ours either
                    continue
                if isinstance(parsed, dict) and isinstance(parsed.get("seq"), int):
                    last_event = parsed
                    break
        except BaseException:
            os.close(fd)
            raise
        prev = hashlib.sha256(lines[-1]).hexdigest() if lines else None
        seq = last_event["seq"] + 1 if last_event else 0
        file_run_id = last_event.get("run_id") if last_event else None
        offset = 0
        if last_event is not None:
            offset = _mono_offset(last_event, options.get("clock"))
        return cls(
            fd,
            path,
            file_run_id if isinstance(file_run_id, str) else (run_id or new_run_id()),
            redactor,
            seq=seq,
            prev_sha256=prev,
            mono_offset_ns=offset,
            last_event=last_event,
            **options,
        )

    # -- state -----------------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The seq the next event will get."""
        return self._state.seq

    @property
    def last_event(self) -> dict[str, Any] | None:
        return self._state.last

    @property
    def ended(self) -> bool:
        """True once run.ended is written: nothing may follow it."""
        return self._state.ended

    @property
    def closed(self) -> bool:
        return self._fd is None

    # -- writing ---------------------------------------------------------------------------------

    def emit(self, type: str, *, durable: bool = False, **fields: Any) -> dict[str, Any]:
        """Write one event and return it as written (redacted). Fields passed as None are omitted."""
        body = self._body(type, fields)
        with self._lock:
            if self._writing:
                raise RuntimeError("emit() re-entered mid-write (from a signal handler?): use end() there")
            return self._write(type, body, durable)

    def _body(self, type: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown transcript event type {type!r}")
        reserved = RESERVED_FIELDS.intersection(fields)
        if reserved:
            raise ValueError(f"{type}: fields {sorted(reserved)} are set by the writer")
        return _redact(self.redactor, to_jsonable({k: v for k, v in fields.items() if v is not None}))

    def _write(self, type: str, body: dict[str, Any], durable: bool) -> dict[str, Any]:
        """Build, write and (maybe) fsync one line. The lock is held."""
        state = self._state
        if self._fd is None:
            raise ValueError(f"transcript {self.path} is closed")
        if self._broken is not None:
            raise TranscriptWriteError(
                getattr(self._broken, "errno", None) or errno.EIO,
                f"unusable after a failed write ({_reason(self._broken)})",
                str(self.path),
            )
        if self._failed is not None and type != "run.ended":
            raise TranscriptWriteError(self._failed.errno or errno.EIO, _reason(self._failed), str(self.path))
        if type == "approval.requested":
            self._check_room_for_a_change()
        if state.ended:
            raise ValueError(f"transcript {self.path}: run.ended was written; nothing may follow it")
        if type == "run.started" and state.seq != 0:
            raise ValueError("run.started must be the first event (seq 0)")
        event: dict[str, Any] = {
            "seq": state.seq,
            "time": format_time(self._clock()),
            "mono_ns": max(0, self._mono() - self._mono0),
            "type": type,
            "run_id": self.run_id,
        }
        event.update(body)
        event["prev_sha256"] = state.prev
        if self.signer is not None and type in SIGNED_TYPES:
            event["signature"] = _signature(self.signer, serialise(event))
        line = serialise(event)
        data = line + b"\n"
        after = _State(
            state.seq + 1, hashlib.sha256(line).hexdigest(), event, type == "run.ended", state.size + len(data)
        )
        self._writing = True
        try:
            try:
                _write_all(self._fd, data)
                self._state = after  # one assignment: the state is either before or after
            except BaseException as exc:
                # An interrupt (or a full disk) may land anywhere: the file size tells what happened.
                if self._state is state:
                    self._reconcile(state, after, exc)
                if isinstance(exc, OSError):
                    self._failed = exc
                    raise TranscriptWriteError(exc.errno or errno.EIO, _reason(exc), str(self.path)) from None
                raise
            if durable or type in DURABLE_TYPES:
                try:
                    os.fsync(self._fd)
                except OSError as exc:
                    self._broken = exc
                    raise TranscriptWriteError(exc.errno or errno.EIO, _reason(exc), str(self.path)) from None
        finally:
            self._writing = False
            self._after_write()
        return event

    def _check_room_for_a_change(self) -> None:
        try:
            free = free_bytes(self.path.parent)
        except OSError:
            return  # cannot tell (an exotic filesystem): the write itself will say
        if free < self.min_free_before_change:
            raise TranscriptSpaceError(
                errno.ENOSPC,
                f"only {free:,} bytes free on the transcript's filesystem, below the "
                f"{self.min_free_before_change:,} needed to record a change; free space and run again",
                str(self.path),
            )

    def _reconcile(self, before: _State, after: _State, exc: BaseException) -> None:
        try:
            size = os.fstat(self._fd).st_size if self._fd is not None else -1
        except OSError:
            size = -1
        if size == after.size:
            self._state = after  # the whole line is in the file
        elif size != before.size:
            self._broken = exc  # a partial line: anything appended now would be glued to it

    def _after_write(self) -> None:
        """Carry out what a signal handler asked for while a line was being written."""
        pending, self._pending_end = self._pending_end, None
        if pending is not None and not self._state.ended and self._broken is None and self._fd is not None:
            self._write("run.ended", pending, True)
        if self._close_pending:
            self._close_pending = False
            self.close()

    def output(
        self,
        step: Any,
        text: str | bytes,
        *,
        stream: str = "stdout",
        limit: int = OUTPUT_LIMIT,
        **fields: Any,
    ) -> dict[str, Any]:
        """Emit step.output: redacts first, then truncates, so the hash and the cut never see a secret."""
        clean = self.redactor.text(text if isinstance(text, str) else bytes(text).decode("utf-8", "replace"))
        kept, truncated, digest, size = truncate_output(clean, limit)
        return self.emit(
            "step.output",
            step=step,
            stream=stream,
            output=kept,
            output_sha256=digest,
            truncated=truncated,
            bytes=size,
            **fields,
        )

    def end(self, **fields: Any) -> dict[str, Any] | None:
        """Emit run.ended unless it was already written; None if it was (or if the file is closed).

        Safe from a signal handler: if the handler interrupted a write in this thread, run.ended is
        written right after that line completes (and None is returned).
        """
        body = self._body("run.ended", fields)
        with self._lock:
            if self._state.ended or self._fd is None:
                return None
            if self._writing:
                self._pending_end = body
                return None
            return self._write("run.ended", body, True)

    # -- closing ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Fsync and close; idempotent. From a signal handler mid-write, closes after that line."""
        with self._lock:
            if self._fd is None:
                return
            if self._writing:
                self._close_pending = True
                return
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            except OSError:
                pass
            finally:
                os.close(fd)

    def __enter__(self) -> TranscriptWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TranscriptWriter({str(self.path)!r}, run_id={self.run_id!r}, seq={self.seq})"


def _signature(signer: Any, payload: bytes) -> dict[str, Any]:
    """The `signature` field: the line as it would be without this field, signed. Never raises.

    A key that cannot sign (the agent went away mid-incident) must not stop the incident: the line is
    written with the reason instead, and `transcript verify --allowed-signers` reports it unsigned.
    """
    described = signer.describe()
    try:
        return {"format": "sshsig", **described, "armored": signer.sign(payload)}
    except Exception as exc:  # agent and key errors vary; the reason is recorded, the key never is
        return {"format": "sshsig", **described, "error": f"could not sign: {type(exc).__name__}"}


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _redact(redactor: Redactor, value: Any) -> Any:
    """`redactor.data`, except that sha256 digests (keys ending in sha256) are kept intact.

    A digest reveals no secret, and a short secret such as "ab" would otherwise mangle every hash.
    """
    if isinstance(value, dict):
        return {redactor.text(k): v if _is_digest(k, v) else _redact(redactor, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(redactor, v) for v in value]
    return redactor.data(value)


def _is_digest(key: str, value: Any) -> bool:
    return key.endswith("sha256") and isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _lock_exclusive(fd: int) -> None:
    """Hold an exclusive advisory lock until the descriptor is closed (POSIX; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def _mono_offset(last_event: Mapping[str, Any], clock: Callable[[], datetime] | None) -> int:
    """mono_ns to continue from when reopening: the last value plus the wall time since it (>= 0)."""
    last_mono = last_event.get("mono_ns")
    if not isinstance(last_mono, int):
        return 0
    try:
        then = datetime.strptime(str(last_event.get("time")), TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return last_mono
    now = (clock or (lambda: datetime.now(UTC)))()
    gap_ns = int((now - then).total_seconds() * 1_000_000) * 1000
    return last_mono + max(gap_ns, 0)
