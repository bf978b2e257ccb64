"""Check 7, and its part of check 2: the sites' privacy audit statements on the chain.

A site that ran a membership-inference attack on a run's global model with its own records
(`fl-client audit-privacy --attach`) signs the result; the coordinator appends it as a
`privacy_audit` event whose details are the statement's fields and the signature. Each one is
checked here from its stored details alone:

- check 2: the statement's site is the event's, and the key that site held at that point of the
  chain (its latest `site_enrolled` event, not revoked since) verifies the signature over the
  statement's bytes (`ledger_codec.audit_statement`, a prefix no other statement uses);
- check 7: the details parse as a statement, the event's run is the statement's (by Flower run
  id), and the attack's ε lower bound is not above the ε the site recorded: the cumulative ε of
  its last charged entry in that run up to the round whose model it attacked. An (ε, δ)-DP
  mechanism is (ε, δ')-DP for every δ' ≥ δ, so the bound is compared only when it was computed
  for a δ at least the ledger's; otherwise, or without a charged entry, the result is shown as
  not comparable. The bound holds at the statement's confidence (95% by default): about one
  honest audit in twenty may exceed a tight ε by chance, never a loose one by much.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from fedseal.contract.audit_statement import (
    AuditStatementError,
    PrivacyAuditStatement,
    SignedAuditStatement,
)
from fedseal.privacy.status import PrivacyStatus

from .entries import EVENTS, PRIVACY, ChainEntry, name
from .findings import AuditVerdict, Check, EmpiricalAudit, Finding
from .site_check import PRIVACY_AUDIT, key_states_before, signature_problem
from .snapshot import EventRow, PrivacyRow, Snapshot

__all__ = ["audit_line", "check_privacy_audits", "figures_text", "verdict_text"]

_SHAPE = '{"statement": the signed fields, "signature": 128 hex digits}'


def _parse(details: Any) -> SignedAuditStatement | str:
    """The stored statement and signature, or what is wrong with them."""
    try:
        raw = json.loads(details)
    except (TypeError, ValueError):
        return "details that are not JSON"
    if not isinstance(raw, dict) or set(raw) != {"statement", "signature"}:
        return "details of another shape"
    try:
        signature = bytes.fromhex(raw["signature"])
    except (TypeError, ValueError):
        signature = b""
    if len(signature) != 64:
        return "a signature that is not 128 hex digits"
    try:
        return SignedAuditStatement(PrivacyAuditStatement.from_fields(raw["statement"]), signature)
    except AuditStatementError as exc:
        return f"a statement that does not parse ({exc})"
    except TypeError:
        return "a statement that does not parse"


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _recorded(
    ledger: Sequence[PrivacyRow], seq: int, run_id: Any, statement: PrivacyAuditStatement
) -> PrivacyRow | None:
    """The site's last charged entry of the run, up to the attacked round, before the audit."""
    found = None
    for row in ledger:
        if (
            row.site == statement.site
            and row.run_id == run_id
            and row.status == PrivacyStatus.CHARGED
            and isinstance(row.round_number, int)
            and row.round_number <= statement.applied_round
            and isinstance(row.id, int)
            and row.id < seq
        ):
            found = row
    return found


def check_privacy_audits(
    snapshot: Snapshot, entries: Sequence[ChainEntry], ledger: Sequence[PrivacyRow]
) -> tuple[list[Finding], list[EmpiricalAudit]]:
    """Findings of checks 2 and 7 about privacy audit statements, and each statement as read.

    `ledger` is the privacy entries whose ε counts, in order (`epsilon_check.ledger_order`).
    """
    states = key_states_before(entries)
    flower_ids = {run.id: run.flower_run_id for run in snapshot.runs}
    findings: list[Finding] = []
    audits: list[EmpiricalAudit] = []
    for entry in entries:
        row = entry.row
        if entry.table != EVENTS or not isinstance(row, EventRow) or row.action != PRIVACY_AUDIT:
            continue
        here = name(EVENTS, entry.seq)
        site = row.site if isinstance(row.site, str) else None
        signed = _parse(row.details)
        if isinstance(signed, str):
            findings.append(Finding(Check.EMPIRICAL_AUDITS, here, "details", _SHAPE, signed))
            audits.append(
                EmpiricalAudit(here, site, row.run_id, None, False, AuditVerdict.UNVERIFIED)
            )
            continue
        statement = signed.statement
        own: list[Finding] = []
        if row.site != statement.site:
            own.append(
                Finding(
                    Check.SITE_SIGNATURES,
                    here,
                    "site",
                    f"{statement.site!r}, the site the statement names",
                    repr(row.site),
                )
            )
        if row.run_id not in flower_ids:
            own.append(
                Finding(Check.EMPIRICAL_AUDITS, here, "run_id", "an existing run", repr(row.run_id))
            )
        elif str(flower_ids[row.run_id]) != statement.flower_run_id:
            own.append(
                Finding(
                    Check.EMPIRICAL_AUDITS,
                    here,
                    "run_id",
                    f"the run with Flower run id {statement.flower_run_id}, as the statement says",
                    f"run {row.run_id} (Flower run id {flower_ids[row.run_id]})",
                )
            )
        problem = signature_problem(statement.site, states.get(entry.seq), signed.verify)
        if problem is not None:
            own.append(Finding(Check.SITE_SIGNATURES, here, "details", *problem))
        findings += own
        figures = statement.fields()
        if own:
            audits.append(
                EmpiricalAudit(
                    here, site, row.run_id, figures, problem is None, AuditVerdict.UNVERIFIED
                )
            )
            continue
        recorded = _recorded(ledger, entry.seq, row.run_id, statement)
        epsilon = None if recorded is None else _real(recorded.epsilon_cumulative)
        delta = None if recorded is None else _real(recorded.delta)
        if recorded is None or epsilon is None or delta is None or statement.delta < delta:
            verdict = AuditVerdict.NOT_COMPARABLE
        elif statement.epsilon_lower > epsilon:
            verdict = AuditVerdict.CONTRADICTED
            findings.append(
                Finding(
                    Check.EMPIRICAL_AUDITS,
                    here,
                    "details",
                    f"an empirical ε lower bound at most {epsilon!r}, the ε site "
                    f"{statement.site} recorded ({name(PRIVACY, recorded.id)})",
                    f"ε ≥ {statement.epsilon_lower!r} at {statement.confidence:.0%} confidence "
                    f"(δ = {statement.delta:g})",
                )
            )
        else:
            verdict = AuditVerdict.CONSISTENT
        audits.append(
            EmpiricalAudit(
                here,
                site,
                row.run_id,
                figures,
                True,
                verdict,
                epsilon,
                None if recorded is None else name(PRIVACY, recorded.id),
            )
        )
    return findings, audits


def figures_text(figures: Mapping[str, Any]) -> str:
    """A statement's attack and result in words: what the text output and the page show."""
    return (
        f"{figures['attack']} attack on {figures['members']} members and "
        f"{figures['non_members']} non-members: AUC {float(figures['auc']):.3f} "
        f"[{float(figures['auc_low']):.3f}, {float(figures['auc_high']):.3f}], "
        f"ε ≥ {float(figures['epsilon_lower']):.3f} "
        f"({float(figures['confidence']):.0%} confidence, δ = {float(figures['delta']):g})"
    )


def verdict_text(audit: EmpiricalAudit) -> str:
    """How the result stands against the site's recorded ε."""
    if audit.verdict is AuditVerdict.UNVERIFIED:
        return "unverified (see the findings)"
    if audit.recorded_epsilon is None:
        return "not comparable: no charged entry of the site in that run up to that round"
    recorded = f"recorded ε {audit.recorded_epsilon:.4f} ({audit.recorded_entry})"
    if audit.verdict is AuditVerdict.NOT_COMPARABLE:
        return f"not comparable with {recorded}: the attack's δ is below the ledger's"
    if audit.verdict is AuditVerdict.CONTRADICTED:
        return f"CONTRADICTS {recorded}"
    return f"consistent with {recorded}"


def audit_line(audit: EmpiricalAudit) -> str:
    """One line of `fl-audit verify` per privacy audit statement."""
    where = f"site {audit.site}, run {audit.run_id}"
    if audit.figures is None:
        return f"empirical audit {audit.entry}: {where}: {verdict_text(audit)}"
    return (
        f"empirical audit {audit.entry}: {where} round {audit.figures['applied_round']}, "
        f"{figures_text(audit.figures)}; {verdict_text(audit)}"
    )
