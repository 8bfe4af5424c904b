"""Calls into the code under test outside an execution's threads.

The constructor, ``shared_words``/``shared_locks`` and
``enable_dirty_logging`` run while the harness builds or resets a VM. An
exception there is the code under test's failure, not the harness's: it
becomes a :class:`~concurrent_dirty.errors.CodeUnderTestError` naming the
method, with the traceback trimmed to the code under test's frames.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import TypeVar

from ..errors import CodeUnderTestError, ConcurrentDirtyError

__all__ = ["call_user", "harness_frame", "user_traceback"]

T = TypeVar("T")

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Folders of the package that hold code under test (algorithms, mutants).
_UNDER_TEST = tuple(os.path.join(_PACKAGE, d) + os.sep for d in ("dirtylog", "mutants"))


def harness_frame(filename: str) -> bool:
    """Whether ``filename`` is the harness's own (not an algorithm's or a mutant's)."""
    path = os.path.abspath(filename)
    return path.startswith(_PACKAGE + os.sep) and not path.startswith(_UNDER_TEST)


def user_traceback(exc: BaseException) -> str:
    """``exc`` with its traceback, without the harness's own frames (the
    algorithms' and mutants' modules count as code under test)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not harness_frame(f.filename)]
    text = "Traceback (most recent call last):\n" + "".join(
        traceback.format_list(frames)) if frames else ""
    return text + "".join(traceback.format_exception_only(type(exc), exc))


def call_user(what: str, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)``; an exception from the code under test becomes a
    :class:`CodeUnderTestError` saying that ``what`` raised. The harness's
    own errors (a deadlock, a misuse) pass through unchanged."""
    try:
        return fn(*args)
    except ConcurrentDirtyError:
        raise
    except Exception as exc:
        raise CodeUnderTestError(
            f"{what} raised {type(exc).__name__}: {exc}\n{user_traceback(exc)}".rstrip()) from exc
