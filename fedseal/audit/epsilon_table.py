"""The lines of `fl-audit verify` that show every entry's ε by both accountants, side by side.

A reader should not have to take "check 3: pass" on trust: the table shows, per privacy entry,
the cumulative ε as recorded, as recomputed with its own accountant (Opacus), and as
dp-accounting's RDP and PLD accountants give it, so a gap between the bounds is visible too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .entries import PRIVACY, name
from .findings import VerifyResult
from .snapshot import PrivacyRow

__all__ = ["HEADER", "epsilon_lines"]

HEADER = (
    "entry",
    "site",
    "run",
    "round",
    "status",
    "accountant",
    "recorded",
    "recomputed",
    "dp-acc RDP",
    "dp-acc PLD",
)
_WIDTHS = (18, 12, 4, 5, 8, 10, 10, 10, 10, 10)


def _figure(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else repr(value)[:10]
    return f"{value:.6f}"


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _line(cells: Sequence[str]) -> str:
    return (
        "  "
        + " ".join(
            cell.rjust(width) if index >= 6 else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, _WIDTHS, strict=True))
        ).rstrip()
    )


def epsilon_lines(rows: Sequence[PrivacyRow], result: VerifyResult) -> list[str]:
    """A title, a header and one line per privacy entry of `rows` (in the order given)."""
    lines = [
        "epsilon per entry (cumulative, at its δ): recorded, recomputed with its own accountant "
        "(Opacus), and by dp-accounting's RDP and PLD accountants:",
        _line(HEADER),
    ]
    for row in rows:
        figures = result.recomputed.get(row.id)
        lines.append(
            _line(
                (
                    name(PRIVACY, row.id),
                    _text(row.site),
                    _text(row.run_id),
                    _text(row.round_number),
                    _text(row.status),
                    _text(row.accountant),
                    _figure(row.epsilon_cumulative),
                    _figure(None if figures is None else figures.epsilon_cumulative),
                    _figure(None if figures is None else figures.dp_accounting_rdp),
                    _figure(None if figures is None else figures.dp_accounting_pld),
                )
            )
        )
    if not rows:
        lines.append("  (no privacy entries)")
    return lines
