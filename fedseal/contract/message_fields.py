"""Typed reads of the fields of a message from another process, with one clear error.

Message fields come from a peer (the coordinator for a site, a site for the coordinator) and may
be missing, of the wrong type, or absurd. Reading them through these helpers turns every such
case into `MessageFieldError` naming the field, instead of a `KeyError: 'round'` from deep
inside a handler. No helper ever allocates from a number the peer chose (``bytes(10**9)`` is
exactly what `field_bytes` refuses), and JSON text is size-checked and depth-safe.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from fedseal.contract.errors import ContractError

__all__ = [
    "MessageFieldError",
    "field_bytes",
    "field_bytes_list",
    "field_int",
    "field_int_list",
    "field_json",
    "field_str",
    "field_str_list",
    "split_by_counts",
]

_MISSING = object()
_JSON_MAX = 16 << 20


class MessageFieldError(ContractError):
    """A message field that is missing, of the wrong type or out of range."""


def _get(fields: Mapping[str, Any], key: str, default: Any) -> Any:
    try:
        value = fields.get(key, _MISSING) if isinstance(fields, Mapping) else _MISSING
    except TypeError:  # an unhashable key in a hostile mapping
        value = _MISSING
    if value is _MISSING:
        if default is not _MISSING:
            return default
        raise MessageFieldError(f"message field {key!r} is missing")
    return value


def field_int(
    fields: Mapping[str, Any],
    key: str,
    *,
    low: int = -(2**63),
    high: int = 2**63 - 1,
    default: Any = _MISSING,
) -> int:
    """An integer field within [low, high] (an integral float is accepted)."""
    value = _get(fields, key, default)
    if isinstance(value, bool):
        raise MessageFieldError(f"message field {key!r} must be an integer, not a boolean")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise MessageFieldError(f"message field {key!r} must be an integer")
    if not low <= value <= high:
        raise MessageFieldError(f"message field {key!r} is {value}, outside {low}..{high}")
    return value


def field_int_list(
    fields: Mapping[str, Any], key: str, *, max_items: int, low: int = 0, high: int = 2**31 - 1
) -> list[int]:
    """A non-empty list of at most `max_items` integers, each within [low, high]."""
    value = _get(fields, key, _MISSING)
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= max_items:
        raise MessageFieldError(f"message field {key!r} must list 1 to {max_items} integers")
    if any(isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high for v in value):
        raise MessageFieldError(
            f"message field {key!r} must list integers between {low} and {high}"
        )
    return [int(v) for v in value]


def split_by_counts(items: list[Any], counts: list[int]) -> list[list[Any]]:
    """`items` cut into consecutive runs of `counts` each (a key batch's per-round lists sent
    as one flat list); the counts must add up to all of the items."""
    if any(c < 0 for c in counts) or sum(counts) != len(items):
        raise MessageFieldError("the per-round counts do not add up to the listed messages")
    out, start = [], 0
    for count in counts:
        out.append(items[start : start + count])
        start += count
    return out


def field_str(
    fields: Mapping[str, Any], key: str, *, max_len: int = 4096, default: Any = _MISSING
) -> str:
    """A text field of at most `max_len` characters."""
    value = _get(fields, key, default)
    if not isinstance(value, str):
        raise MessageFieldError(f"message field {key!r} must be text")
    if len(value) > max_len:
        raise MessageFieldError(f"message field {key!r} is longer than {max_len} characters")
    return value


def field_bytes(
    fields: Mapping[str, Any], key: str, *, max_len: int, default: Any = _MISSING
) -> bytes:
    """A bytes field of at most `max_len` bytes; anything but bytes is refused, never converted."""
    value = _get(fields, key, default)
    if not isinstance(value, bytes | bytearray):
        raise MessageFieldError(f"message field {key!r} must be bytes")
    if len(value) > max_len:
        raise MessageFieldError(f"message field {key!r} holds more than {max_len} bytes")
    return bytes(value)


def field_bytes_list(
    fields: Mapping[str, Any],
    key: str,
    *,
    max_items: int = 100_000,
    max_len: int,
    default: Any = _MISSING,
) -> list[bytes]:
    """A list of bytes fields (an empty list may arrive as a missing or empty value)."""
    value = _get(fields, key, default)
    if value is None or (isinstance(value, list | tuple) and not value):
        return []
    if not isinstance(value, list | tuple):
        raise MessageFieldError(f"message field {key!r} must be a list of bytes")
    if len(value) > max_items:
        raise MessageFieldError(f"message field {key!r} has more than {max_items} items")
    out = []
    for item in value:
        if not isinstance(item, bytes | bytearray):
            raise MessageFieldError(f"message field {key!r} must be a list of bytes")
        if len(item) > max_len:
            raise MessageFieldError(f"an item of message field {key!r} exceeds {max_len} bytes")
        out.append(bytes(item))
    return out


def field_json(
    fields: Mapping[str, Any], key: str, *, max_len: int = _JSON_MAX, default: Any = _MISSING
) -> Any:
    """A field holding JSON text, parsed (deeply nested or non-standard JSON is refused)."""
    value = _get(fields, key, default)
    if value is default and default is not _MISSING:
        return value
    text = field_str({key: value}, key, max_len=max_len)
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "not valid JSON"
        raise MessageFieldError(f"message field {key!r} is {reason}") from None


def field_str_list(
    fields: Mapping[str, Any], key: str, *, max_items: int = 100_000, max_len: int = 256
) -> list[str]:
    """A field holding a JSON list of short strings (site names)."""
    value = field_json(fields, key)
    if not isinstance(value, list) or len(value) > max_items:
        raise MessageFieldError(f"message field {key!r} must be a JSON list of names")
    if any(not isinstance(item, str) or not 0 < len(item) <= max_len for item in value):
        raise MessageFieldError(f"message field {key!r} must be a JSON list of names")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
