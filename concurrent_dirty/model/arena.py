"""One block of memory holding every piece of shared state, carved into
named, cache-line aligned regions of 64-bit words.

The threads engine backs it with a ``bytearray``; the processes engine with
one ``multiprocessing.shared_memory.SharedMemory`` segment that the parent
creates and unlinks and the children only attach to. Every segment created
here is recorded until it is unlinked, and :func:`unlink_all` (run at exit,
and by the engines on any error or signal) removes whatever is left, so no
segment outlives the run that made it.

Segments are named ``cd-<pid of the creator>-<8 hex digits>`` (at most 20
characters with the leading slash, well inside the 31 that some systems
allow). A run killed with SIGKILL cannot unlink its segment, so every run
that creates one first calls :func:`sweep_dead_segments`: in ``/dev/shm``,
a ``cd-<pid>-...`` segment whose creator no longer exists is removed (one
line on stderr says which). Segments of live processes, and every other
name, are never touched.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .atomic import WORD_BYTES, AtomicWords, buffer_address

if TYPE_CHECKING:  # imported where used: the threads-only paths never load it
    from multiprocessing import shared_memory

__all__ = ["Arena", "Layout", "live_segments", "new_segment_name", "sweep_dead_segments",
           "unlink_all"]

_LINE = 64


class Layout:
    """Named regions and their offsets. Plain data: it pickles to children."""

    def __init__(self) -> None:
        self.regions: dict[str, tuple[int, int]] = {}
        #: Regions whose words are not switch points (see AtomicWords.quiet).
        self.quiet: set[str] = set()
        self.nbytes = 0

    def add(self, name: str, nwords: int, *, quiet: bool = False) -> None:
        if name in self.regions:
            raise UsageError(f"expected a new region name, got {name!r} twice")
        if not isinstance(nwords, int) or nwords <= 0:
            raise UsageError(f"expected a positive word count for region {name!r}, got {nwords!r}")
        offset = -(-self.nbytes // _LINE) * _LINE
        self.regions[name] = (offset, nwords)
        self.nbytes = offset + nwords * WORD_BYTES
        if quiet:
            self.quiet.add(name)

    def __contains__(self, name: object) -> bool:
        return name in self.regions


_LIVE: dict[str, shared_memory.SharedMemory] = {}
_LIVE_LOCK = threading.Lock()


def live_segments() -> list[str]:
    """Names of the segments this process created and has not unlinked."""
    with _LIVE_LOCK:
        return sorted(_LIVE)


def unlink_all() -> None:
    """Unlink every segment this process created and still holds."""
    with _LIVE_LOCK:
        segments = list(_LIVE.values())
        _LIVE.clear()
    for shm in segments:
        try:
            shm.unlink()
        except FileNotFoundError:
            pass


atexit.register(unlink_all)

SHM_DIR = "/dev/shm"
_OWNED = re.compile(r"^cd-([0-9]+)-[0-9a-f]+$")


def new_segment_name() -> str:
    """``cd-<this pid>-<random hex>``: short, and names its creator."""
    import secrets  # here: the controlled engine makes no segment

    return f"cd-{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid we could have written: leave it alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, but not ours to signal (or cannot tell)
    return True


def sweep_dead_segments(directory: str = SHM_DIR, *, report: bool = True) -> list[str]:
    """Remove the ``cd-<pid>-...`` segments in ``directory`` whose creator
    is dead; return their names (and say so on stderr if ``report``)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []  # no /dev/shm on this system: nothing to sweep
    removed = []
    for name in sorted(names):
        match = _OWNED.match(name)
        if match is None or _alive(int(match.group(1))):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            continue
        removed.append(name)
    if removed and report:
        sys.stderr.write(f"concurrent-dirty: removed {len(removed)} shared-memory segment(s) "
                         f"left by dead runs: {', '.join(removed)}\n")
        sys.stderr.flush()
    return removed


def _create_segment(size: int) -> shared_memory.SharedMemory:
    from multiprocessing import shared_memory

    sweep_dead_segments()
    for _ in range(100):
        name = new_segment_name()
        try:
            shm = shared_memory.SharedMemory(name=name, create=True, size=size)
            with _LIVE_LOCK:
                _LIVE[name] = shm
            return shm
        except FileExistsError:
            continue  # another segment's name: not ours to touch
        except BaseException:
            # Interrupted half-way (Ctrl-C while the first segment starts the
            # resource tracker): the segment exists but nobody holds it.
            with _LIVE_LOCK:
                _LIVE.pop(name, None)
            try:
                os.unlink(os.path.join(SHM_DIR, name))
            except OSError:
                pass
            raise
    raise FileExistsError("no free shared-memory name after 100 tries")


@contextmanager
def _untracked() -> Iterator[None]:
    """Attach without registering with the resource tracker: only the
    creator owns (and unlinks) a segment. Python 3.13 has ``track=False``;
    before it, registration is the known cause of spurious 'leaked
    shared_memory' warnings and double unlinks (CPython gh-82300)."""
    from multiprocessing import resource_tracker

    original = resource_tracker.register

    def register(name: Any, rtype: str) -> None:
        if rtype != "shared_memory":
            original(name, rtype)

    resource_tracker.register = register
    try:
        yield
    finally:
        resource_tracker.register = original


class Arena:
    """The memory behind a :class:`Layout`, and the word views over it."""

    def __init__(self, layout: Layout, *, shared: bool, attach: str | None = None) -> None:
        self.layout = layout
        self._views: dict[str, AtomicWords] = {}
        self._views_lock = threading.Lock()  # writer threads open views concurrently
        self._shm: shared_memory.SharedMemory | None = None
        self._owner = attach is None and shared
        self._skew = 0
        if attach is not None or shared:
            from multiprocessing import shared_memory
        if attach is not None:
            if sys.version_info >= (3, 13):
                self._shm = shared_memory.SharedMemory(name=attach, track=False)
            else:
                with _untracked():
                    self._shm = shared_memory.SharedMemory(name=attach)
            if self._shm.size < layout.nbytes:
                self._shm.close()
                raise UsageError(f"shared segment {attach} too small: expected "
                                 f"{layout.nbytes} bytes, got {self._shm.size}")
            self._buf: memoryview | bytearray = self._shm_buf()
        elif shared:
            self._shm = _create_segment(max(layout.nbytes, 1))  # registered in _LIVE
            self._buf = self._shm_buf()
        else:
            self._buf = bytearray(layout.nbytes + _LINE)
        # Start every region on a cache line (a bytearray's data is only
        # 8- or 16-aligned, and mmap'd segments are page-aligned already).
        self._skew = (-buffer_address(self._buf)) % _LINE
        self._closed = False

    def _shm_buf(self) -> memoryview:
        assert self._shm is not None and self._shm.buf is not None
        return self._shm.buf

    @property
    def name(self) -> str | None:
        """The shared segment's name (None for a private bytearray arena)."""
        return self._shm.name if self._shm is not None else None

    def words(self, region: str) -> AtomicWords:
        view = self._views.get(region)
        if view is None:
            with self._views_lock:
                return self._open(region)
        return view

    def _open(self, region: str) -> AtomicWords:
        view = self._views.get(region)
        if view is None:
            if self._closed:
                raise UsageError(f"arena is closed: cannot open region {region!r}")
            try:
                offset, nwords = self.layout.regions[region]
            except KeyError:
                raise UsageError(f"expected one of the regions {sorted(self.layout.regions)}, "
                                 f"got {region!r}") from None
            view = AtomicWords(self._buf, nwords, offset=offset + self._skew, name=region,
                               quiet=region in self.layout.quiet)
            self._views[region] = view
        return view

    def zero(self, region: str) -> None:
        """Zero a region with one bulk write. Only while no one else touches
        it (between executions, with every writer parked)."""
        offset, nwords = self.layout.regions[region]
        offset += self._skew
        end = offset + nwords * WORD_BYTES
        self._buf[offset:end] = bytes(end - offset)

    def close(self) -> None:
        """Close every view, then the segment; the creator also unlinks it."""
        if self._closed:
            return
        self._closed = True
        for view in self._views.values():
            view.close()
        self._views.clear()
        if self._shm is not None:
            self._buf = bytearray()
            try:
                self._shm.close()
            except BufferError:
                # A view cut short while it was being made (Ctrl-C) still
                # exports the mapping; it goes with the process. Unlink anyway.
                pass
            if self._owner:
                with _LIVE_LOCK:
                    _LIVE.pop(self._shm.name, None)
                try:
                    self._shm.unlink()
                except FileNotFoundError:
                    pass

    def __enter__(self) -> Arena:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
