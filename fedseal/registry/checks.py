"""Argument checks at the registry boundary: wrong type is TypeError, wrong value ValueError."""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar

from .schema import DIGEST_LENGTH, NAME_LENGTH

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

__all__ = [
    "check_budget",
    "check_config",
    "check_count",
    "check_digest",
    "check_duration",
    "check_enum",
    "check_final",
    "check_flower_run_id",
    "check_metric",
    "check_name",
    "check_names",
    "check_non_negative",
    "check_positive",
    "check_sha256",
    "check_text",
    "given",
    "load_config",
]

_Enum = TypeVar("_Enum", bound=StrEnum)


def check_name(value: object, what: str) -> str:
    """A non-blank identifier such as a site name or scenario."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str")
    if not value.strip() or value != value.strip():
        raise ValueError(f"{what} must be non-blank without surrounding spaces")
    if len(value) > NAME_LENGTH:
        raise ValueError(f"{what} must be at most {NAME_LENGTH} characters")
    return value


def check_names(values: object, what: str) -> list[str]:
    """Distinct names; a bare str is refused so "site-a" is not read as five sites."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise TypeError(f"{what} must be a sequence of str")
    names = [check_name(value, f"each of {what}") for value in values]
    if len(set(names)) != len(names):
        raise ValueError(f"{what} must not repeat a name")
    return names


def check_count(value: object, what: str, *, minimum: int = 0) -> int:
    """A whole number of examples, rounds, ..."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an int")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}")
    return value


def _real(value: object, what: str) -> float:
    """Any real number but a bool, as a float (not yet checked to be finite)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a float")
    return float(value)


def _finite(value: object, what: str) -> float:
    number = _real(value, what)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite")
    return number


def check_metric(value: object, what: str) -> float | None:
    """A real number; NaN and infinity become None (unknown).

    An AUC on a held-out set with one class is NaN, and a diverged loss may be
    infinite: neither should stop a round from being recorded, and SQLite
    cannot store NaN, so both backends record "unknown".
    """
    number = _real(value, what)
    return number if math.isfinite(number) else None


def check_duration(value: object, what: str) -> float | None:
    """A non-negative number of seconds, or None when not finite."""
    seconds = check_metric(value, what)
    if seconds is not None and seconds < 0:
        raise ValueError(f"{what} must not be negative")
    return seconds


def check_digest(value: object, what: str) -> str:
    """A digest string as the caller formats it (hex, or algorithm-prefixed hex)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str")
    if not value or len(value) > DIGEST_LENGTH:
        raise ValueError(f"{what} must be 1 to {DIGEST_LENGTH} characters")
    return value


def check_sha256(value: object, what: str) -> str:
    """A SHA-256 digest as 64 lower-case hex characters."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str")
    if not _SHA256_HEX.fullmatch(value):
        raise ValueError(f"{what} must be a SHA-256 digest: 64 lower-case hex characters")
    return value


def check_budget(value: object, what: str) -> float:
    """A privacy budget ε: a finite number > 0."""
    number = _real(value, what)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{what} must be finite and > 0, got {number}")
    return number


def check_positive(
    value: object, what: str, *, upper: float | None = None, open_upper: bool = False
) -> float:
    """A finite number > 0, and at most ``upper`` (below it when ``open_upper``)."""
    number = _finite(value, what)
    too_high = upper is not None and (number >= upper if open_upper else number > upper)
    if number <= 0 or too_high:
        bound = "" if upper is None else f" and {'<' if open_upper else '<='} {upper:g}"
        raise ValueError(f"{what} must be > 0{bound}, got {number}")
    return number


def check_non_negative(value: object, what: str) -> float:
    """A finite number >= 0, such as an ε spent."""
    number = _finite(value, what)
    if number < 0:
        raise ValueError(f"{what} must not be negative, got {number}")
    return number


def check_enum(enum: type[_Enum], value: object, what: str) -> _Enum:
    """One of the enum's values, given as its member or its string."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str")
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise ValueError(f"{what} must be one of {allowed}, not {value!r}") from None


def check_final(enum: type[_Enum], value: object, running: _Enum, what: str) -> _Enum:
    """A status that ends a run or round: any of the enum's values but ``running``."""
    status = check_enum(enum, value, what)
    if status is running:
        raise ValueError(f"{what} must be final, not {running.value}")
    return status


def check_flower_run_id(value: object) -> str:
    """Flower's run id, an int or a str, as the text the registry stores."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError("flower_run_id must be a str or int")
    text = str(value)
    if not text or len(text) > 64:
        raise ValueError("flower_run_id must be 1 to 64 characters")
    return text


def check_text(value: object, what: str) -> str:
    """Free text such as an error message."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str")
    return value


def given(check: Callable[[Any, str], object], **values: object) -> dict[str, object]:
    """``check(value, name)`` of each value that is not None, by name: the columns a call sets.

    Arguments left as None keep the column's value, so they are not in the result.
    """
    return {name: check(value, name) for name, value in values.items() if value is not None}


def check_config(value: object) -> str:
    """The run config as canonical JSON text (sorted keys, no NaN), so it can be digested later."""
    if not isinstance(value, Mapping):
        raise TypeError("config must be a mapping")
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False, separators=(",", ":"))
    except TypeError as exc:
        raise TypeError(f"config must be JSON-serialisable: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"config must be JSON-serialisable: {exc}") from exc


def load_config(text: str) -> dict[str, Any]:
    """Inverse of :func:`check_config`."""
    loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError("stored run config is not a JSON object")
    return loaded
