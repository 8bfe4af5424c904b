"""Credentials never printed: a URL's user and password are masked.

``--db redis://user:PASSWORD@host:port/N`` carries a secret that a CI log
must not show. Two guards, so that neither a message nor a file can leak
it:

* :class:`MaskedUrl`: the ``--db`` value as the CLI keeps it. It is a
  ``str`` whose ``str()``, ``repr()`` and f-string forms are masked
  (``redis://***:***@host:port/N``), so an error message, a progress line
  or a report that quotes the option shows no secret; only
  :func:`reveal` (what opens the connection) gives the real one.
* :func:`mask_credentials` on every text the harness writes to a file
  (:func:`~concurrent_dirty.harness.output.write_text`: the JSON reports,
  a command line recorded in them) and on every usage error the CLI
  prints, in case a secret reached a message as a plain ``str`` (a
  client library's exception quoting the URL).

The user is masked with the password: a user name is half a credential.
"""

from __future__ import annotations

import re

__all__ = ["MaskedUrl", "mask_credentials", "reveal"]

#: ``scheme://user:password@`` or ``scheme://user@`` (RFC 3986 userinfo:
#: anything up to the last ``@`` before the host, no ``/`` or whitespace).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)"
                       r"(?P<user>[^\s/@:]*)(?::(?P<password>[^\s/@]*))?@")


def _mask(m: re.Match[str]) -> str:
    user = "***" if m.group("user") else ""
    password = ":***" if m.group("password") is not None else ""
    return f"{m.group('scheme')}{user}{password}@"


def mask_credentials(text: str) -> str:
    """``text`` with the user and password of every URL in it masked:
    ``redis://bob:hunter2@db:6379/0`` -> ``redis://***:***@db:6379/0``,
    ``redis://:hunter2@db`` -> ``redis://:***@db``. Text without a URL's
    userinfo is returned unchanged."""
    return _USERINFO.sub(_mask, str.__str__(text))


class MaskedUrl(str):
    """A string that prints masked (see the module docstring); compares,
    hashes and pickles as the real value."""

    __slots__ = ()

    def __str__(self) -> str:
        return mask_credentials(str.__str__(self))

    def __repr__(self) -> str:
        return repr(str(self))

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def reveal(value: str) -> str:
    """The real value of a :class:`MaskedUrl` (or of any ``str``): for the
    code that connects, and for nothing that prints."""
    return str.__str__(value)
