"""Files on the operator's machine, handled as if someone hostile shared it.

Reading a file a user named (a restore input, a baseline, a password_file, an RDB to verify): it must
be a regular file (a FIFO would block for ever, /dev/zero never ends, a directory is a mistake), opened
without blocking and checked on the open descriptor, and read up to a cap. Symlinks are followed on
read: a secret mounted as a link is normal, and what is checked is what was opened.

Creating a file: in a directory opened once and checked, every name resolved against that descriptor,
with O_CREAT | O_EXCL | O_NOFOLLOW (a planted symlink or file makes the create fail, it is never
followed or truncated), under an unpredictable temporary name, fsynced, then renamed into place. A new
file never replaces an existing one; a replacing write (a rotated password file) renames over a regular
file only, never through or over a symlink.

The caps are here, in one place (docs/cli.md, Limits › Files).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

PASSWORD_FILE_MAX_BYTES = 64 * KIB  # an inventory's password_file
LOCAL_READ_MAX_BYTES = 16 * MIB  # `local: read`: baselines, redis.conf, JSON/YAML files
KEY_EXPORT_MAX_BYTES = 64 * GIB  # a tenant export given to `tenant_data` inspect / import
KEY_RECORD_MAX_BYTES = 1 * GIB  # one line of an export (a 512 MB value is 683 MB of base64)
# An RDB given to `rdb verify` has no cap: it is streamed in 1 MiB chunks, and only a regular file is read.

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class UnsafeFileError(OSError):
    """A named file is not something the engine may read or write; `strerror` says why."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(errno.EINVAL, reason, str(path))


def describe_mode(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def human_size(size: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"


# -- reading ----------------------------------------------------------------------------------------
def open_regular(path: str | Path, *, max_bytes: int | None, what: str = "file") -> BinaryIO:
    """Open a user-named file for reading, or raise UnsafeFileError (an OSError) saying why not.

    O_NONBLOCK makes opening a FIFO return at once; the descriptor's fstat decides (no race with a
    swap after a check by name). `max_bytes` caps the size fstat reports; `read_regular` also stops
    reading there, for files that grow.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a UNIX socket (or a FIFO opened for writing elsewhere)
            raise UnsafeFileError(path, f"{what} is a socket or device, not a regular file") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(path, f"{what} is {describe_mode(info.st_mode)}, not a regular file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise UnsafeFileError(
                path, f"{what} is {human_size(info.st_size)}, more than the {human_size(max_bytes)} allowed"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, *, max_bytes: int, what: str = "file") -> bytes:
    """The whole content of a regular file of at most `max_bytes` (checked at open and while reading)."""
    with open_regular(path, max_bytes=max_bytes, what=what) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeFileError(path, f"{what} grew past the {human_size(max_bytes)} allowed while being read")
    return data


def read_text(path: str | Path, *, max_bytes: int, what: str = "file") -> str:
    data = read_regular(path, max_bytes=max_bytes, what=what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeFileError(path, f"{what} is not UTF-8 text (byte {exc.start})") from None


def open_to_others(path: str | Path) -> int | None:
    """The permission bits of `path` when its group or others may use it (as ssh checks key files), else None."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    return mode if mode & 0o077 else None


# -- writing ----------------------------------------------------------------------------------------
class Directory:
    """A directory opened once and checked; names inside it are resolved against its descriptor."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: str | Path, *, create: bool = False) -> Directory:
        """The directory at `path` (a symlink to a directory is followed: the operator named it).

        Refused: not a directory, or writable by every user without the sticky bit (anyone could
        swap our files there). `create` makes missing directories with mode 0700 first.
        """
        path = Path(path)
        if create:
            os.makedirs(path, mode=0o700, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        except NotADirectoryError:
            raise UnsafeFileError(path, "is not a directory") from None
        info = os.fstat(fd)
        if not stat.S_ISDIR(info.st_mode):
            os.close(fd)
            raise UnsafeFileError(path, f"is {describe_mode(info.st_mode)}, not a directory")
        if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
            os.close(fd)
            raise UnsafeFileError(
                path, "is writable by every user and not sticky: another user could replace files in it"
            )
        return cls(path, fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def create(self, name: str, mode: int = 0o600) -> BinaryIO:
        """A new file `name` (read-write), never one that exists, never through a symlink."""
        _plain_name(name)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        fd = os.open(name, flags, mode, dir_fd=self.fd)
        try:
            os.fchmod(fd, mode)  # whatever the umask
            return os.fdopen(fd, "w+b")
        except BaseException:
            os.close(fd)
            raise

    def create_temp(self, final: str, tag: str, mode: int = 0o600) -> tuple[str, BinaryIO]:
        """A new hidden file beside `final` under a name nobody can predict: (name, file)."""
        name = f".{final}.{tag}-{secrets.token_hex(8)}"
        return name, self.create(name, mode)

    def unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def publish_new(self, tmp: str, final: str) -> None:
        """Give `tmp` the name `final` only if nothing has that name (atomically: a hard link), then drop `tmp`."""
        _plain_name(final)
        try:
            os.link(tmp, final, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)
        except FileExistsError:
            raise _exists(self.path / final) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV):
                raise
            # no hard links on this filesystem: check, then rename (a narrow race, the best it allows)
            if self.lstat(final) is not None:
                raise _exists(self.path / final) from None
            os.rename(tmp, final, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            self.fsync()
            return
        self.unlink(tmp)
        self.fsync()

    def replace_regular(self, tmp: str, final: str) -> None:
        """Rename `tmp` over `final`, which must be absent or a regular file (never a symlink)."""
        _plain_name(final)
        existing = self.lstat(final)
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            raise UnsafeFileError(
                self.path / final, f"is {describe_mode(existing.st_mode)}: refusing to write through or replace it"
            )
        os.replace(tmp, final, src_dir_fd=self.fd, dst_dir_fd=self.fd)  # a rename never follows the target
        self.fsync()

    def fsync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError:
            pass


def _exists(path: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, "exists already: it is never overwritten", str(path))


def _plain_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise UnsafeFileError(name, "is not a plain file name")


def write_file(path: str | Path, data: bytes, *, mode: int = 0o600, replace: bool = False) -> None:
    """Write `data` to `path` through a temp file beside it, fsynced, renamed into place.

    replace=False: `path` must not exist (FileExistsError). replace=True: it may be a regular file,
    which is swapped atomically (never truncated); a symlink or anything else there is refused.
    """
    path = Path(path)
    with Directory.open(path.parent) as directory:
        if not replace and directory.lstat(path.name) is not None:
            raise _exists(path)
        tmp, fh = directory.create_temp(path.name, "tmp", mode)
        try:
            with fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if replace:
                directory.replace_regular(tmp, path.name)
            else:
                directory.publish_new(tmp, path.name)
        except BaseException:
            directory.unlink(tmp)
            raise


def fsync_dir(directory: Path) -> None:
    """Make a new or renamed directory entry survive a crash; best effort where the OS cannot."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
