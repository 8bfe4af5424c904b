"""A failure store in Hypothesis's example-database interface.

Every failing execution a scheduler finds is saved as its replay token
(UTF-8 bytes) under the key ``b"concurrent-dirty:" + algorithm reference``
(the built-in name, or ``module:Class``), in any
:class:`hypothesis.database.ExampleDatabase`: a directory
(:class:`~hypothesis.database.DirectoryBasedExampleDatabase`, ``--db PATH``)
or Redis (:class:`~hypothesis.extra.redis.RedisExampleDatabase`, ``--db
redis://host:port/N``, needs ``pip install 'concurrent-dirty[redis]'``).
Hypothesis keeps its own entries in the same database under other keys, so
one database can serve both.

Before searching, ``fuzz`` and ``mutants`` replay the saved tokens of their
algorithms (:func:`replay_saved`):

* a token that still fails is reported at once, before any search;
* a token that no longer fails (the bug was fixed) is **deleted**, as
  Hypothesis drops an example that stopped failing: a fixed bug should not
  cost a replay on every run; the deletion is said on stderr;
* a token of another version of concurrent-dirty (its schedules follow
  other switch points), or a damaged one, is skipped with a note and **left**
  in place: the release that wrote it may still share the database.

Layer 7: ``search``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..errors import ConcurrentDirtyError, UsageError
from ..harness.credentials import mask_credentials, reveal
from ..harness.token import VERSION, decode

if TYPE_CHECKING:
    from hypothesis.database import ExampleDatabase

    from ..harness.execution import ExecutionResult

__all__ = ["KEY_PREFIX", "Replayed", "key_for", "open_store", "replay_saved", "save_failure",
           "saved_tokens"]

KEY_PREFIX = b"concurrent-dirty:"
#: Redis entries live this long after their last save (Hypothesis's default: 8 days).
_YEAR = timedelta(days=365)


def key_for(ref: str) -> bytes:
    return KEY_PREFIX + ref.encode()


def open_store(spec: str) -> ExampleDatabase:
    """``redis://host:port/N`` (``rediss://`` too) or a directory path.
    A URL's user and password never appear in a message (see
    :mod:`~concurrent_dirty.harness.credentials`)."""
    spec = reveal(spec)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return _redis(spec)
    if not spec:
        raise UsageError("expected --db PATH (a directory) or redis://host:port/N, got ''")
    if os.path.exists(spec) and not os.path.isdir(spec):
        raise UsageError(f"expected --db to be a directory or redis://host:port/N, got "
                         f"{spec!r}, which is not a directory")
    parent = os.path.dirname(os.path.abspath(spec))
    if not os.path.isdir(parent):
        raise UsageError(f"expected --db in an existing directory, got {spec!r} "
                         f"({parent} does not exist)")
    from hypothesis.database import DirectoryBasedExampleDatabase

    return DirectoryBasedExampleDatabase(spec)


def _redis(url: str) -> ExampleDatabase:
    shown = mask_credentials(url)
    try:
        import redis
    except ImportError:
        raise UsageError(f"expected the redis package for --db {shown}, got none installed: "
                         f"pip install 'concurrent-dirty[redis]'") from None
    from hypothesis.extra.redis import RedisExampleDatabase

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        client.ping()
    except (ValueError, redis.RedisError) as exc:
        raise UsageError(f"expected a reachable Redis server for --db {shown}, got "
                         f"{type(exc).__name__}: {mask_credentials(str(exc))}") from None
    return RedisExampleDatabase(client, expire_after=_YEAR)


def saved_tokens(db: ExampleDatabase, ref: str) -> list[str]:
    """The tokens saved for ``ref``, sorted (the database keeps a set)."""
    return sorted(value.decode(errors="replace") for value in db.fetch(key_for(ref)))


def save_failure(db: ExampleDatabase, ref: str, token: str) -> None:
    db.save(key_for(ref), token.encode())


@dataclass
class Replayed:
    """One saved token, replayed: ``status`` is ``fails`` (reported),
    ``fixed`` (deleted) or ``skipped`` (left, with ``note``)."""

    ref: str
    token: str
    status: str
    note: str = ""
    result: ExecutionResult | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"algorithm": self.ref, "token": self.token,
                                "status": self.status, "note": self.note}
        if self.result is not None:
            data.update(failure_kind=self.result.outcome.kind,
                        failure_step=self.result.outcome.step)
        return data


def replay_saved(db: ExampleDatabase, refs: Iterable[str]) -> list[Replayed]:
    """Replay every token saved for ``refs`` (see the module docstring for
    what happens to each)."""
    from .replay import replay

    out: list[Replayed] = []
    for ref in refs:
        for token in saved_tokens(db, ref):
            try:
                decode(token)
            except UsageError as exc:
                why = "of another version" if f"version {VERSION} " in str(exc) \
                    else "unreadable"
                out.append(Replayed(ref, token, "skipped", f"a saved token {why}, skipped "
                                    f"and left in the database: {exc}"))
                continue
            try:
                result = replay(token)
            except ConcurrentDirtyError as exc:
                out.append(Replayed(ref, token, "skipped",
                                    f"a saved token that cannot be replayed here, skipped: "
                                    f"{exc}"))
                continue
            if result.failed:
                out.append(Replayed(ref, token, "fails", "the saved failure still fails",
                                    result))
            else:
                db.delete(key_for(ref), token.encode())
                out.append(Replayed(ref, token, "fixed",
                                    "the saved failure no longer fails: deleted from the "
                                    "database"))
    return out
