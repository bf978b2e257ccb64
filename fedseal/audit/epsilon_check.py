"""Checks 3 and 4: every ε recomputes from the mechanisms in the ledger, and no budget is passed.

ε is recomputed with `fedseal.privacy.accounting.epsilon_of`, which returns what Opacus'
accountants report, from nothing but the recorded (σ, q, steps), δ and accountant: an entry's
`epsilon_round` from its own event (0 when declined), its `epsilon_cumulative` from all of its
site's charged events up to and including it, across runs, in chain order. Legacy entries
(recorded before the ledger was chained) count as history: the site's accountant includes them,
and check 1 already flags each of them.

Every figure is also recomputed by a second, independent library, dp-accounting
(`fedseal.privacy.second_opinion`): a recorded ε below its tight PLD bound (less the PLD's
slack), or an Opacus figure off dp-accounting's figure of the same kind (RDP for RDP, PLD for
PRV) beyond its tolerance, is a check 3 finding too.
"""

from __future__ import annotations

import math
import numbers
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.events import DpEvent
from fedseal.privacy.status import PrivacyStatus

from .entries import PRIVACY, ChainEntry, name
from .findings import Check, EntryEpsilon, Finding
from .snapshot import PrivacyRow, Snapshot

if TYPE_CHECKING:
    from fedseal.privacy.second_opinion import SecondOpinion

__all__ = ["REL_TOLERANCE", "check_epsilon", "ledger_order"]

REL_TOLERANCE = 1e-9
"""How far a recorded ε may be from the recomputed one, relatively (docs/ledger-format.md)."""

_STATUSES = tuple(PrivacyStatus)
_ACCOUNTANTS = ("rdp", "prv")


def ledger_order(snapshot: Snapshot, entries: Sequence[ChainEntry]) -> list[PrivacyRow]:
    """The privacy entries whose ε counts: legacy rows (ids <= 0) by id, then the chain's."""
    legacy = [row for row in snapshot.privacy if isinstance(row.id, int) and row.id <= 0]
    chained = [
        entry.row
        for entry in entries
        if entry.table == PRIVACY and isinstance(entry.row, PrivacyRow)
    ]
    return legacy + chained


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _close(found: float, expected: float) -> bool:
    return found == expected or math.isclose(found, expected, rel_tol=REL_TOLERANCE)


def _fmt(value: float) -> str:
    return repr(float(value))


def check_epsilon(
    rows: Sequence[PrivacyRow],
) -> tuple[list[Finding], dict[Any, EntryEpsilon]]:
    """Findings of checks 3 and 4, and each entry's recomputed ε (by id)."""
    from fedseal.privacy.accounting import epsilon_of

    findings: list[Finding] = []
    recomputed: dict[Any, EntryEpsilon] = {}
    history: dict[Any, list[DpEvent]] = defaultdict(list)
    seen: dict[tuple[Any, Any, Any], Any] = {}
    for row in rows:
        here = name(PRIVACY, row.id)
        site = row.site if row.site is not None else ("site_id", row.site_id)
        first = seen.setdefault((row.run_id, row.round_number, site), row.id)
        if first != row.id:
            findings.append(
                Finding(
                    Check.EPSILON,
                    here,
                    "round_number",
                    f"one entry per run, round and site ({name(PRIVACY, first)} is this one's)",
                    f"a second entry for run {row.run_id} round {row.round_number}",
                )
            )
        problems = _mechanism_problems(row)
        for field, expected in problems:
            findings.append(
                Finding(Check.EPSILON, here, field, expected, repr(getattr(row, field)))
            )
        if problems:
            recomputed[row.id] = EntryEpsilon(None, None)
            continue
        event = DpEvent(row.noise_multiplier, row.sample_rate, row.steps)
        kind = Accountant(row.accountant)
        if row.status == PrivacyStatus.CHARGED:
            history[site].append(event)
        try:
            epsilon_round = (
                epsilon_of([event], row.delta, kind) if row.status == PrivacyStatus.CHARGED else 0.0
            )
            epsilon_cumulative = epsilon_of(history[site], row.delta, kind)
        except (ArithmeticError, ValueError) as exc:
            findings.append(
                Finding(Check.EPSILON, here, "epsilon_cumulative", "a recomputable ε", str(exc))
            )
            recomputed[row.id] = EntryEpsilon(None, None)
            continue
        for field, expected in (
            ("epsilon_round", epsilon_round),
            ("epsilon_cumulative", epsilon_cumulative),
        ):
            found = _real(getattr(row, field))
            if found is None or not _close(found, expected):
                findings.append(
                    Finding(
                        Check.EPSILON,
                        here,
                        field,
                        f"{_fmt(expected)} (recomputed, {row.accountant} at δ={row.delta:g})",
                        repr(getattr(row, field)),
                    )
                )
        charged = [event] if row.status == PrivacyStatus.CHARGED else []
        opinions, problems_found = _second_opinions(
            row, here, kind, ((charged, epsilon_round), (history[site], epsilon_cumulative))
        )
        findings += problems_found
        cumulative = opinions[-1]
        recomputed[row.id] = EntryEpsilon(
            epsilon_round,
            epsilon_cumulative,
            None if cumulative is None else cumulative.rdp,
            None if cumulative is None else cumulative.pld,
        )
        findings += _budget_findings(row, here, epsilon_cumulative)
    return findings, recomputed


def _second_opinions(
    row: PrivacyRow,
    here: str,
    kind: Accountant,
    figures: Sequence[tuple[Sequence[DpEvent], float]],
) -> tuple[list[SecondOpinion | None], list[Finding]]:
    """dp-accounting's figures for (events, Opacus' ε) of epsilon_round, epsilon_cumulative, and
    the findings they give: the recorded ε below the PLD floor, Opacus off dp-accounting."""
    from fedseal.privacy.second_opinion import second_opinion

    opinions: list[SecondOpinion | None] = []
    findings: list[Finding] = []
    for field, (events, own) in zip(("epsilon_round", "epsilon_cumulative"), figures, strict=True):
        recorded = _real(getattr(row, field))
        try:
            opinion = second_opinion(
                events, row.delta, [own] if recorded is None else [own, recorded]
            )
        except (ArithmeticError, ValueError) as exc:
            findings.append(
                Finding(Check.EPSILON, here, field, "an ε dp-accounting computes", str(exc))
            )
            opinions.append(None)
            continue
        opinions.append(opinion)
        if recorded is not None and recorded < opinion.floor:
            findings.append(
                Finding(
                    Check.EPSILON,
                    here,
                    field,
                    f"at least {_fmt(opinion.floor)} (dp-accounting's PLD bound "
                    f"{_fmt(opinion.pld)} at δ={row.delta:g}, less its slack)",
                    repr(getattr(row, field)),
                )
            )
        if not opinion.agrees(kind, own):
            other = "RDP" if kind is Accountant.RDP else "PLD"
            findings.append(
                Finding(
                    Check.EPSILON,
                    here,
                    field,
                    f"Opacus' {kind} figure within {opinion.tolerance(kind):.3g} of "
                    f"dp-accounting's {other} {_fmt(opinion.same_kind(kind))}",
                    f"{_fmt(own)} from Opacus' {kind} accountant",
                )
            )
    return opinions, findings


def _mechanism_problems(row: PrivacyRow) -> list[tuple[str, str]]:
    """Fields that make the entry's mechanism meaningless, with what they should be."""
    problems = []
    if row.status not in _STATUSES:
        problems.append(("status", "charged or declined"))
    if row.accountant not in _ACCOUNTANTS:
        problems.append(("accountant", "rdp or prv"))
    sigma, q, delta = _real(row.noise_multiplier), _real(row.sample_rate), _real(row.delta)
    if sigma is None or sigma <= 0:
        problems.append(("noise_multiplier", "a finite number > 0"))
    if q is None or not 0 < q <= 1:
        problems.append(("sample_rate", "a number in (0, 1]"))
    if isinstance(row.steps, bool) or not isinstance(row.steps, int) or row.steps < 1:
        problems.append(("steps", "a whole number >= 1"))
    if delta is None or not 0 < delta < 1:
        problems.append(("delta", "a number in (0, 1)"))
    return problems


def _budget_findings(row: PrivacyRow, here: str, recomputed: float) -> list[Finding]:
    """Check 4: neither the recorded nor the recomputed cumulative ε is above the budget."""
    budget = _real(row.budget)
    if budget is None or budget <= 0:
        return [Finding(Check.BUDGET, here, "budget", "a finite number > 0", repr(row.budget))]
    recorded = _real(row.epsilon_cumulative)
    over = [
        (what, value)
        for what, value in (("recorded", recorded), ("recomputed", recomputed))
        if value is not None and value > budget and not _close(value, budget)
    ]
    if not over:
        return []
    what, value = over[0]
    return [
        Finding(
            Check.BUDGET,
            here,
            "epsilon_cumulative",
            f"at most the budget {_fmt(budget)}",
            f"{_fmt(value)} ({what})",
        )
    ]
