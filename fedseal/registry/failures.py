"""One-line, password-free descriptions of database failures for operators."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote_plus

from alembic.util import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)

from .errors import RegistryUnavailable

__all__ = [
    "describe_error",
    "is_transient",
    "one_line",
    "redact_url",
    "unavailable",
    "url_secrets",
]

_USERINFO_PASSWORD = re.compile(r"^(?P<head>[^:/?#]+://[^:/@?#]*):(?P<password>[^/?#]*)@")
_REDACTED = "***"


def one_line(text: str) -> str:
    """Collapse whitespace and line breaks, so the message fits one log or terminal line."""
    return " ".join(text.split())


def url_secrets(url: str) -> tuple[str, ...]:
    """The password of ``url`` in the forms it may appear in, longest first."""
    found: set[str] = set()
    match = _USERINFO_PASSWORD.match(url)
    if match and match["password"]:
        found.add(match["password"])
    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        password = None
    if password:
        found.update({str(password), quote_plus(str(password))})
    return tuple(sorted(found, key=len, reverse=True))


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return text


def redact_url(url: str) -> str:
    """``url`` as the user wrote it, with the password replaced by ``***``."""
    match = _USERINFO_PASSWORD.match(url)
    if match:
        url = f"{match['head']}:{_REDACTED}@{url[match.end() :]}"
    return _scrub(url, url_secrets(url))


def describe_error(exc: BaseException) -> str:
    """Why the registry could not be used, in a few words plus the driver's first line."""
    if isinstance(exc, ArgumentError) and "parse" in str(exc).lower():
        return "not a valid database URL"
    if isinstance(exc, NoSuchModuleError):
        dialect = str(exc).rsplit(":", 1)[-1].strip()
        return f"unknown database dialect or driver {dialect!r}"
    if isinstance(exc, ImportError):
        return f"database driver not installed ({exc})"
    if isinstance(exc, CommandError):
        return f"schema migration failed: {_detail(str(exc))}"
    if isinstance(exc, DBAPIError):
        detail = _detail(str(exc.orig)) if exc.orig is not None else type(exc).__name__
        if isinstance(exc, IntegrityError):
            return f"constraint violated: {detail}"
        if isinstance(exc, OperationalError):
            return f"cannot use the database: {detail}"
        return f"database error: {detail}"
    if isinstance(exc, SQLAlchemyError | OSError | ValueError):
        return _detail(str(exc)) or type(exc).__name__
    return f"{type(exc).__name__}: {_detail(str(exc))}"


def unavailable(url: str, reason: str | BaseException) -> RegistryUnavailable:
    """A :class:`RegistryUnavailable` naming the redacted URL and the reason, on one line."""
    text = describe_error(reason) if isinstance(reason, BaseException) else reason
    message = one_line(f"registry database {redact_url(url)} unavailable: {text}")
    return RegistryUnavailable(_scrub(message, url_secrets(url)), transient=is_transient(reason))


def is_transient(reason: str | BaseException) -> bool:
    """Whether waiting may cure the failure: the server was unreachable or dropped the
    connection (OperationalError, InterfaceError, a socket error), not a bad URL or schema."""
    return isinstance(reason, OperationalError | InterfaceError | ConnectionError | TimeoutError)


_MAX_DETAIL = 300


def _detail(text: str) -> str:
    """The driver's message on one line, cut short: enough to act on, never a wall of text."""
    flat = one_line(text)
    return flat if len(flat) <= _MAX_DETAIL else flat[: _MAX_DETAIL - 3] + "..."
