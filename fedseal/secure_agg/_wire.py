"""Unambiguous byte framing shared by the modules: length-prefixed fields, a strict reader.

Everything that is signed, hashed or used as HKDF info goes through `frame`, so two different field
lists can never produce the same bytes.
"""

from __future__ import annotations

import struct

__all__ = ["Reader", "frame", "text"]

_U32 = struct.Struct(">I")


def text(value: str | int) -> bytes:
    """Encode a string or integer field as UTF-8 text."""
    return str(value).encode("utf-8")


def frame(*parts: bytes) -> bytes:
    """Concatenate fields, each prefixed with its 4-byte big-endian length."""
    out = bytearray()
    for part in parts:
        out += _U32.pack(len(part))
        out += part
    return bytes(out)


class Reader:
    """Reads fields written by `frame`; every overrun raises `ValueError`."""

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("data must be bytes")
        self._data = memoryview(bytes(data))
        self._pos = 0

    def field(self, max_len: int | None = None) -> bytes:
        """Next length-prefixed field."""
        if self._pos + 4 > len(self._data):
            raise ValueError("truncated field length")
        (length,) = _U32.unpack_from(self._data, self._pos)
        self._pos += 4
        if max_len is not None and length > max_len:
            raise ValueError(f"field of {length} bytes exceeds {max_len}")
        if self._pos + length > len(self._data):
            raise ValueError("truncated field")
        out = bytes(self._data[self._pos : self._pos + length])
        self._pos += length
        return out

    def text(self, max_len: int = 256) -> str:
        """Next field as UTF-8 text."""
        return self.field(max_len).decode("utf-8")

    def integer(self, max_len: int = 32) -> int:
        """Next field as a decimal integer written by `text`."""
        raw = self.field(max_len)
        if not raw or not raw.lstrip(b"-").isdigit():
            raise ValueError("not an integer field")
        return int(raw)

    def end(self) -> None:
        """Raise unless every byte was consumed."""
        if self._pos != len(self._data):
            raise ValueError("trailing bytes")
