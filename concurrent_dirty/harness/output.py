"""Writing output files (``--json PATH``, ``--token-file PATH``) safely.

The rule, by what the path names (symlinks are followed):

* a **regular file**, or a **path that does not exist yet** in an existing
  writable directory: written atomically. The text goes to a temporary file
  in the same directory, is flushed and fsync'd, then ``os.replace``\\ d over
  the path (a reader never sees half a report). The temporary file is
  removed on any failure, so nothing stray is ever left. The file's mode is
  kept (a new file gets ``0o666`` less the umask).
* a **character device** or a **FIFO** (``/dev/stdout``, ``/dev/null``, a
  named pipe), or the very file this process's stdout or stderr writes to:
  a plain append, never replaced (a device node stays a device node; a
  FIFO with no reader blocks, as a shell redirection does).
* anything else is a usage error (exit 2), raised by
  :func:`check_output_path` *before* any run starts: a directory, a path in
  a missing directory, a file that cannot be opened for append or whose
  directory cannot take a new file (``/proc/version``, even as root), a
  block device or a socket, a dangling symlink.

A write that fails after the check passed (``/dev/full`` says "no space
left" only when written) raises :class:`OutputError`, a one-line usage
error, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys

from ..errors import UsageError
from .credentials import mask_credentials

__all__ = ["OutputError", "check_output_path", "write_text"]

_TEMP_PREFIX = ".concurrent-dirty-"


class OutputError(UsageError):
    """An output file could not be written."""


def _is_std_stream(st: os.stat_result) -> bool:
    for fd in (1, 2):
        try:
            other = os.fstat(fd)
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def _kind(path: str, option: str) -> tuple[str, str]:
    """``("plain", target)`` or ``("atomic", target)``; a UsageError for a
    path that cannot be written as the module docstring says."""
    target = os.path.realpath(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        if os.path.islink(path) and not os.path.lexists(target):
            raise UsageError(f"expected {option} to name a file, got {path!r} (a symlink to "
                             f"{target}, which does not exist)") from None
        return "atomic", target
    except OSError as exc:
        raise UsageError(f"expected {option} to name a writable file, got {path!r} "
                         f"({exc.strerror})") from None
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise UsageError(f"expected {option} to name a file, got the directory {path!r}")
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return "plain", target
    if stat.S_ISREG(mode):
        return ("plain" if _is_std_stream(st) else "atomic"), target
    what = "a block device" if stat.S_ISBLK(mode) else (
        "a socket" if stat.S_ISSOCK(mode) else "neither a file nor a device")
    raise UsageError(f"expected {option} to name a file, a character device or a FIFO, "
                     f"got {path!r} ({what})")


def check_output_path(path: str, option: str) -> None:
    """Raise :class:`UsageError` (one line: the option, what was expected,
    what arrived) unless ``path`` can be written by :func:`write_text`.
    Writes nothing and creates nothing that outlives the call."""
    kind, target = _kind(path, option)
    if kind == "plain":
        if stat.S_ISFIFO(os.stat(target).st_mode):
            # Opening a FIFO would block (or hand a reader an early EOF).
            if not os.access(target, os.W_OK):
                raise UsageError(f"expected {option} to name a writable file, got {path!r} "
                                 f"(a FIFO without write permission)")
            return
        _probe_append(path, target, option)
        return
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        shown = os.path.dirname(os.path.abspath(path))
        raise UsageError(f"expected {option} in an existing directory, got {path!r} "
                         f"({shown} does not exist)")
    if os.path.exists(target):
        _probe_append(path, target, option)
    import tempfile  # here: its imports (shutil, random...) cost every command's start-up

    try:
        fd, probe = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".probe", dir=directory)
    except OSError as exc:
        raise UsageError(f"expected {option} in a writable directory, got {path!r} (cannot "
                         f"create a file in {directory}: {exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def _probe_append(path: str, target: str, option: str) -> None:
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError(f"expected {option} to name a writable file, got {path!r} "
                         f"({exc.strerror})") from None
    os.close(fd)


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` by the module's rule: atomically for a
    regular file or a new path, a plain append for a device or a FIFO.
    Raises :class:`OutputError` (one line) if the write fails; never leaves
    a temporary file behind. A URL's user and password are masked (a
    report may quote a ``--db`` URL or a command line)."""
    text = mask_credentials(text)
    try:
        kind, target = _kind(path, "the output path")
    except UsageError as exc:
        raise OutputError(f"could not write {path!r}: {exc}") from None
    data = text.encode()
    try:
        if kind == "plain":
            for stream in (sys.stdout, sys.stderr):  # keep the order with our own output
                with contextlib.suppress(Exception):
                    stream.flush()
            fd = os.open(target, os.O_WRONLY | os.O_APPEND)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            return
        _write_atomic(target, data)
    except OSError as exc:
        raise OutputError(f"could not write {path!r}: {exc.strerror or exc}") from None


def _write_atomic(target: str, data: bytes) -> None:
    directory = os.path.dirname(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
