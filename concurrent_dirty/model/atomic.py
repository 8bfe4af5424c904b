"""Arrays of 64-bit words over any writable buffer, every operation one
hardware atomic.

The operations are patomic's, the C library that the ``atomics`` package
ships and calls. ``atomics``' public API wraps each call in several Python
layers and converts values through ``bytes``; that costs 4-16 us a call here,
more than everything else in a writer's step. :class:`AtomicWords` instead
resolves each operation's function pointer once per process, from the same
op table ``atomics`` itself uses for 8-byte objects, and calls it through
cffi with per-thread scratch cells, so a call costs one foreign call plus a
few attribute loads (``tools/bench_atomics.py`` measures all three).

Nothing is emulated: ``exchange`` is one ``xchg``, ``fetch_and`` one
``lock and``/``cmpxchg`` loop inside patomic, ``test_and_set_bit`` one
``lock bts``. All orders are sequentially consistent.

A view holds a buffer export until :meth:`AtomicWords.close` (or the end of a
``with`` block), so a ``SharedMemory`` segment can always be closed and
unlinked afterwards: no ``BufferError: cannot close exported pointers exist``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading
from types import TracebackType
from typing import Any

import _cffi_backend as _cffi  # cffi's own backend: the types below, built directly

from .._core import switch as _switch
from .._core.switch import Op
from ..errors import UsageError

__all__ = ["WORD_BITS", "WORD_BYTES", "AtomicWords"]

# Enum members are slow to look up on Python 3.11 (about 0.15 us each):
# the hot paths use these.
_OP_CLEAR_BIT = Op.CLEAR_BIT
_OP_CMPXCHG = Op.CMPXCHG
_OP_FETCH_ADD = Op.FETCH_ADD
_OP_FETCH_AND = Op.FETCH_AND
_OP_FETCH_ANDNOT = Op.FETCH_ANDNOT
_OP_FETCH_OR = Op.FETCH_OR
_OP_LOAD = Op.LOAD
_OP_SET_BIT = Op.SET_BIT
_OP_STORE = Op.STORE
_OP_TEST_AND_CLEAR_BIT = Op.TEST_AND_CLEAR_BIT
_OP_TEST_AND_SET_BIT = Op.TEST_AND_SET_BIT
_OP_XCHG = Op.XCHG

WORD_BYTES = 8
WORD_BITS = 64
_MASK64 = (1 << 64) - 1
#: ``atomics.MemoryOrder.SEQ_CST`` (patomic's ``patomic_SEQ_CST``).
_SEQ_CST = 5


def _patomic() -> Any:
    """atomics' ``Patomic`` (the op table ``atomics`` itself uses, from
    ``atomics/_impl/patomic.py``, plain ctypes). Loaded from its file, not
    through ``import atomics``: the package's ``__init__`` builds a cffi
    parser for its own buffer handling (pycparser's lexer and grammar), about
    a third of a command line's imports, for nothing used here."""
    loaded = sys.modules.get("atomics._impl.patomic")
    if loaded is not None:
        return loaded.Patomic
    spec = importlib.util.find_spec("atomics")  # finds the package, runs nothing
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'atomics'", name="atomics")
    path = os.path.join(list(spec.submodule_search_locations)[0], "_impl", "patomic.py")
    file_spec = importlib.util.spec_from_file_location("_concurrent_dirty_patomic", path)
    if file_spec is None or file_spec.loader is None:
        raise ModuleNotFoundError(f"atomics' patomic module not found at {path}",
                                  name="atomics._impl.patomic")
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module.Patomic


Patomic = _patomic()

# The C types, as cffi's FFI would build them from the strings in the
# comments (without parsing a string: cffi's parser is pycparser).
_U64 = _cffi.new_primitive_type("uint64_t")
_UPTR = _cffi.new_primitive_type("uintptr_t")
_INT = _cffi.new_primitive_type("int")
_VOID = _cffi.new_void_type()
_U64P = _cffi.new_pointer_type(_U64)  # "uint64_t *"
_CHARS = _cffi.new_array_type(_cffi.new_pointer_type(_cffi.new_primitive_type("char")),
                              None)  # "char[]"


def _fn(result: Any, *args: Any) -> Any:
    """A C function pointer type: ``result(*)(args)``."""
    return _cffi.new_function_type(args, result, False)


def _fp(ctype_fp: Any, signature: Any) -> Any:
    address = ctypes.cast(ctype_fp, ctypes.c_void_p).value
    if not address:
        raise RuntimeError(f"patomic has no 64-bit {signature!r} on this platform")
    return _cffi.cast(signature, address)


class _Ops:
    """patomic's 64-bit operations as cffi function pointers. The object
    argument is declared ``uintptr_t`` so that an address computed with
    Python ints needs no cdata conversion (same register, same ABI)."""

    def __init__(self) -> None:
        ops = Patomic.ops(WORD_BYTES)
        u = ops.unsigned_ops
        # void(*)(uintptr_t, int, uint64_t *)
        self.load = _fp(ops.fp_load, _fn(_VOID, _UPTR, _INT, _U64P))
        # void(*)(uintptr_t, uint64_t *, int)
        self.store = _fp(ops.fp_store, _fn(_VOID, _UPTR, _U64P, _INT))
        # void(*)(uintptr_t, uint64_t *, int, uint64_t *)
        self.exchange = _fp(ops.xchg_ops.fp_exchange, _fn(_VOID, _UPTR, _U64P, _INT, _U64P))
        # int(*)(uintptr_t, uint64_t *, uint64_t *, int, int)
        self.cmpxchg = _fp(ops.xchg_ops.fp_cmpxchg_strong,
                           _fn(_INT, _UPTR, _U64P, _U64P, _INT, _INT))
        # int(*)(uintptr_t, int, int)
        self.test_set = _fp(ops.bitwise_ops.fp_test_set, _fn(_INT, _UPTR, _INT, _INT))
        self.test_reset = _fp(ops.bitwise_ops.fp_test_reset, _fn(_INT, _UPTR, _INT, _INT))
        # void(*)(uintptr_t, uint64_t *, int, uint64_t *)
        fetch = _fn(_VOID, _UPTR, _U64P, _INT, _U64P)
        self.fetch_or = _fp(ops.binary_ops.fp_fetch_or, fetch)
        self.fetch_and = _fp(ops.binary_ops.fp_fetch_and, fetch)
        self.fetch_add = _fp(u.fp_fetch_add, fetch)


_OPS: _Ops | None = None


def _ops() -> _Ops:
    global _OPS
    if _OPS is None:
        _OPS = _Ops()
    return _OPS


class _Scratch(threading.local):
    """Two uint64 cells per thread for arguments and results; cffi releases
    the GIL during the call, so cells cannot be shared between threads."""

    def __init__(self) -> None:
        self.a = _cffi.newp(_U64P, None)
        self.b = _cffi.newp(_U64P, None)


def buffer_address(buffer: Any) -> int:
    """The address of a writable buffer's first byte (no export is kept)."""
    cdata = _cffi.from_buffer(_CHARS, buffer, True)
    try:
        return int(_cffi.cast(_UPTR, cdata))
    finally:
        _cffi.release(cdata)


_ALIGN = Patomic.alignment(WORD_BYTES).recommended  # atomics.Alignment(8).recommended


class AtomicWords:
    """``nwords`` 64-bit words at ``offset`` in ``buffer``.

    ``buffer`` is anything writable that exports the buffer protocol:
    ``bytearray``, ``mmap.mmap``, ``SharedMemory.buf``. The region must be
    8-byte aligned and fit in the buffer. ``name`` labels the words at switch
    points and in reports (``"bitmap[slot 0]"``).

    Word indexes run from 0 to ``nwords - 1``; bit numbers from 0 to
    ``64 * nwords - 1``, bit ``n`` being bit ``n % 64`` of word ``n // 64``
    (the kernel's little-endian bitmap layout).
    """

    __slots__ = ("__weakref__", "_base", "_cdata", "_n", "_ops", "_scratch", "name", "quiet")

    def __init__(self, buffer: Any, nwords: int | None = None, *, offset: int = 0,
                 name: str = "words", quiet: bool = False) -> None:
        self.name = name
        #: Not a switch point: words private to a facade that announces its
        #: own effects (a lock's word), or the harness's bookkeeping.
        self.quiet = quiet
        self._n = 0
        self._cdata: Any = None
        try:
            view = memoryview(buffer)
        except TypeError:
            raise UsageError(
                f"expected a writable buffer (bytearray, mmap, SharedMemory.buf) for "
                f"{name}, got {type(buffer).__name__}") from None
        with view:
            if view.readonly:
                raise UsageError(f"expected a writable buffer for {name}, got a read-only one")
            size = view.nbytes
        if not isinstance(offset, int) or offset < 0:
            raise UsageError(f"expected a non-negative int offset for {name}, got {offset!r}")
        if nwords is None:
            nwords = (size - offset) // WORD_BYTES
        if not isinstance(nwords, int) or nwords <= 0:
            raise UsageError(f"expected a positive number of words for {name}, got {nwords!r}")
        need = offset + nwords * WORD_BYTES
        if need > size:
            raise UsageError(
                f"buffer too small for {name}: expected at least {need} bytes "
                f"({nwords} words at offset {offset}), got {size}")
        cdata = _cffi.from_buffer(_CHARS, buffer, True)
        base = int(_cffi.cast(_UPTR, cdata)) + offset
        if base % _ALIGN:
            _cffi.release(cdata)
            raise UsageError(
                f"misaligned buffer for {name}: expected an address that is a multiple "
                f"of {_ALIGN}, got {base:#x} (offset {offset})")
        self._cdata = cdata
        self._base = base
        self._n = nwords
        self._ops = _ops()
        self._scratch = _Scratch()

    # -- life cycle -----------------------------------------------------
    def close(self) -> None:
        """Release the buffer export. Idempotent; later operations raise."""
        cdata, self._cdata = self._cdata, None
        self._n = 0
        if cdata is not None:
            _cffi.release(cdata)

    @property
    def closed(self) -> bool:
        return self._cdata is None

    def __enter__(self) -> AtomicWords:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __len__(self) -> int:
        return self._n

    @property
    def nwords(self) -> int:
        return self._n

    @property
    def nbits(self) -> int:
        return self._n * WORD_BITS

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._n} words"
        return f"AtomicWords({self.name!r}, {state})"

    def _bad_index(self, i: object) -> UsageError | IndexError:
        if self._cdata is None:
            return UsageError(f"{self.name} is closed: no operation is allowed after close()")
        return IndexError(f"word index out of range for {self.name}: expected 0 <= i < "
                          f"{self._n}, got {i!r}")

    def _bad_bit(self, nr: object) -> UsageError | IndexError:
        if self._cdata is None:
            return UsageError(f"{self.name} is closed: no operation is allowed after close()")
        return IndexError(f"bit number out of range for {self.name}: expected 0 <= nr < "
                          f"{self._n * WORD_BITS}, got {nr!r}")

    # -- word operations ---------------------------------------------------
    # Each one: bounds check, switch point, one foreign call. Keep them flat:
    # they are the hot path of every engine.
    def load(self, i: int) -> int:
        if not 0 <= i < self._n:
            raise self._bad_index(i)
        hook = _switch.HOOK
        if hook is not None and not self.quiet:
            hook(_OP_LOAD, self.name, i)
        r = self._scratch.a
        self._ops.load(self._base + (i << 3), _SEQ_CST, r)
        return int(r[0])

    def peek(self, i: int) -> int:
        """An atomic load that is *not* a switch point: for the harness's
        own bookkeeping (a scheduler reading the lock word, a trace showing
        values), never for the code under test."""
        if not 0 <= i < self._n:
            raise self._bad_index(i)
        r = self._scratch.a
        self._ops.load(self._base + (i << 3), _SEQ_CST, r)
        return int(r[0])

    def plain(self) -> Any:
        """The words as an array of plain 64-bit reads (``plain()[i]`` is
        word ``i``, no bounds check, no foreign call): only for a reader
        that no other thread can race (the controlled runtime, which runs
        one thread at a time) while the words stay open."""
        if self._cdata is None:
            raise self._bad_index(0)
        return _cffi.cast(_U64P, self._base)

    def store(self, i: int, value: int) -> None:
        if not 0 <= i < self._n:
            raise self._bad_index(i)
        hook = _switch.HOOK
        if hook is not None and not self.quiet:
            hook(_OP_STORE, self.name, i)
        a = self._scratch.a
        a[0] = value & _MASK64
        self._ops.store(self._base + (i << 3), a, _SEQ_CST)

    def exchange(self, i: int, value: int) -> int:
        """Atomically store ``value`` and return the previous value."""
        if not 0 <= i < self._n:
            raise self._bad_index(i)
        hook = _switch.HOOK
        if hook is not None and not self.quiet:
            hook(_OP_XCHG, self.name, i)
        s = self._scratch
        s.a[0] = value & _MASK64
        self._ops.exchange(self._base + (i << 3), s.a, _SEQ_CST, s.b)
        return int(s.b[0])

    def compare_exchange(self, i: int, expected: int, desired: int) -> tuple[bool, int]:
        """Strong CAS. Returns ``(True, expected)`` if the word held
        ``expected`` and now holds ``desired``, else ``(False, actual)``."""
        if not 0 <= i < self._n:
            raise self._bad_index(i)
        hook = _switch.HOOK
        if hook is not None and not self.quiet:
            hook(_OP_CMPXCHG, self.name, i)
        s = self._scratch
        s.a[0] = expected & _MASK64
        s.b[0] = desired & _MASK64
        ok = self._ops.cmpxchg(self._base + (i << 3), s.a, s.b, _SEQ_CST, _SEQ_CST)
        return bool(ok), int(s.a[0])

    def _fetch(self, fn: Any, op: Op, i: int, arg: int) -> int:
        if not 0 <= i < self._n:
            raise self._bad_index(i)
        hook = _switch.HOOK
        if hook is not None and not self.quiet:
            hook(op, self.name, i)
        s = self._scratch
        s.a[0] = arg & _MASK64
        fn(self._base + (i << 3), s.a, _SEQ_CST, s.b)
        return int(s.b[0])

    def fetch_or(self, i: int, mask: int) -> int:
        """Atomically OR ``mask`` in; return the previous value."""
        return self._fetch(self._ops.fetch_or, _OP_FETCH_OR, i, mask)

    def fetch_and(self, i: int, mask: int) -> int:
        """Atomically AND with ``mask``; return the previous value."""
        return self._fetch(self._ops.fetch_and, _OP_FETCH_AND, i, mask)

    def fetch_andnot(self, i: int, mask: int) -> int:
        """Atomically clear the bits of ``mask``; return the previous value
        (the kernel's ``atomic_long_fetch_andnot``)."""
        return self._fetch(self._ops.fetch_and, _OP_FETCH_ANDNOT, i, ~mask)

    def fetch_add(self, i: int, value: int) -> int:
        """Atomically add ``value`` modulo 2**64; return the previous value."""
        return self._fetch(self._ops.fetch_add, _OP_FETCH_ADD, i, value)

    # -- bit operations (the kernel's set_bit_le family) --------------------
    def set_bit(self, nr: int) -> None:
        if not 0 <= nr < self._n << 6:
            raise self._bad_bit(nr)
        self._fetch(self._ops.fetch_or, _OP_SET_BIT, nr >> 6, 1 << (nr & 63))

    def clear_bit(self, nr: int) -> None:
        if not 0 <= nr < self._n << 6:
            raise self._bad_bit(nr)
        self._fetch(self._ops.fetch_and, _OP_CLEAR_BIT, nr >> 6, ~(1 << (nr & 63)))

    def test_bit(self, nr: int) -> bool:
        if not 0 <= nr < self._n << 6:
            raise self._bad_bit(nr)
        return bool(self.load(nr >> 6) >> (nr & 63) & 1)

    def _test_modify(self, fn: Any, op: Op, nr: int) -> bool:
        if not 0 <= nr < self._n << 6:
            raise self._bad_bit(nr)
        i = nr >> 6
        hook = _switch.HOOK
        if hook is not None and not self.quiet:
            hook(op, self.name, i)
        return bool(fn(self._base + (i << 3), nr & 63, _SEQ_CST))

    def test_and_set_bit(self, nr: int) -> bool:
        """Atomically set bit ``nr``; return whether it was already set."""
        return self._test_modify(self._ops.test_set, _OP_TEST_AND_SET_BIT, nr)

    def test_and_clear_bit(self, nr: int) -> bool:
        """Atomically clear bit ``nr``; return whether it was set."""
        return self._test_modify(self._ops.test_reset, _OP_TEST_AND_CLEAR_BIT, nr)

    # -- bulk helpers -------------------------------------------------------
    def snapshot(self, start: int = 0, count: int | None = None) -> list[int]:
        """Load ``count`` words from ``start``, one atomic load each (not a
        consistent snapshot of the whole range, exactly like the kernel's
        copy of a live bitmap)."""
        if count is None:
            count = self._n - start
        return [self.load(i) for i in range(start, start + count)]

