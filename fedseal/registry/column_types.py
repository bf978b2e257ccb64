"""Column types shared by the tables: UTC timestamps and string-backed status enums."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import DateTime, Enum
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["STATUS_LENGTH", "UTCDateTime", "status_column_type"]

STATUS_LENGTH = 16
"""Room for status strings; a VARCHAR, so adding a status never needs a native type change."""


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite has no timezone support and would hand back naive values; this type
    refuses naive input and always returns aware UTC datetimes, so rows read
    back compare equal to what was written on SQLite and PostgreSQL alike.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError("timestamp must be a datetime")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def status_column_type(enum_class: type[StrEnum], name: str) -> Enum:
    """A VARCHAR holding the enum's values (not names), guarded by a named CHECK constraint."""
    return Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=STATUS_LENGTH,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )
