"""What an audit found: one `Finding` per broken rule, and the `VerifyResult` that holds them.

Plain frozen values with no database or rendering code, so `verify`, the report renderers, the web
page and the tests all read the same structure. A finding always names the entry as
`table#id` (`privacy_ledger#17`, `events#3`, `ledger_chain#9`, `contributions#4`, `sites#2`),
the field, and what was expected against what was found, so a person can go to the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

__all__ = [
    "AuditVerdict",
    "Check",
    "EmpiricalAudit",
    "EntryEpsilon",
    "Finding",
    "KeySource",
    "VerifyResult",
]


class Check(IntEnum):
    """The seven checks of docs/ledger-format.md, numbered as there."""

    CHAIN = 1
    SITE_SIGNATURES = 2
    EPSILON = 3
    BUDGET = 4
    CONTRIBUTIONS = 5
    SITE_KEYS = 6
    EMPIRICAL_AUDITS = 7

    @property
    def title(self) -> str:
        return _CHECK_TITLES[self]


_CHECK_TITLES = {
    Check.CHAIN: "chain: complete, every hash recomputes, every countersignature verifies",
    Check.SITE_SIGNATURES: "site signatures: every statement signed by the key valid at its entry",
    Check.EPSILON: "epsilon: every figure recomputes from its mechanism, and dp-accounting agrees",
    Check.BUDGET: "budget: no cumulative epsilon above its budget",
    Check.CONTRIBUTIONS: "contributions: every contributed update has its charged entry",
    Check.SITE_KEYS: "site keys: the sites table matches the enrolments in the chain",
    Check.EMPIRICAL_AUDITS: "empirical audits: every privacy audit statement names its run, "
    "and no attack proves more epsilon than its site recorded",
}


class KeySource(StrEnum):
    """Where the coordinator key that countersignatures were checked against came from."""

    PINNED = "pinned"  # --coordinator-key: obtained out of band, the only trustworthy source
    CHAIN = "chain"  # the chain_started entry: proves consistency, not who wrote the chain
    NONE = "none"  # no usable key: no countersignature could be checked


class AuditVerdict(StrEnum):
    """What a site's privacy audit statement says about the ε its site recorded."""

    CONSISTENT = "consistent"  # the attack's ε lower bound is at most the recorded ε
    CONTRADICTED = "contradicted"  # the lower bound is above the recorded ε: a finding
    NOT_COMPARABLE = "not comparable"  # no charged entry in the run, or a smaller δ than its
    UNVERIFIED = "unverified"  # the statement is malformed or its signature does not verify


@dataclass(frozen=True, slots=True)
class EmpiricalAudit:
    """One `privacy_audit` entry as the audit read it: the statement's figures as stored (None
    when they do not parse), whether its site's valid key signed them, and the site's recorded
    ε it was compared with (`recorded_entry` names that privacy entry)."""

    entry: str
    site: str | None
    run_id: object
    figures: Mapping[str, object] | None
    signature_verified: bool
    verdict: AuditVerdict
    recorded_epsilon: float | None = None
    recorded_entry: str | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """One broken rule, about one field of one entry."""

    check: Check
    entry: str
    field: str
    expected: str
    found: str

    def line(self) -> str:
        """The finding as the one line `fl-audit verify` prints."""
        return f"{self.entry} {self.field}: expected {self.expected}, found {self.found}"


@dataclass(frozen=True, slots=True)
class EntryEpsilon:
    """ε of one privacy entry as recomputed from the mechanisms in the chain (None: could not):
    with the entry's own accountant (Opacus), and the cumulative figure by dp-accounting too."""

    epsilon_round: float | None
    epsilon_cumulative: float | None
    dp_accounting_rdp: float | None = None
    """The cumulative ε by dp-accounting's RDP accountant, at Opacus' orders."""
    dp_accounting_pld: float | None = None
    """The cumulative ε by dp-accounting's PLD accountant: the tight bound."""


@dataclass(frozen=True)
class VerifyResult:
    """Everything `verify` established about one registry.

    `counts` is the number of rows checked per table; `head` the last index row's seq and
    entry hash (what an auditor notes down to detect a later truncation); `recomputed` maps a
    privacy entry's id to its recomputed ε figures.
    """

    findings: tuple[Finding, ...]
    counts: Mapping[str, int]
    sites: tuple[str, ...]
    runs: int
    key_fingerprint: str | None
    key_source: KeySource
    head: tuple[int, str] | None = None
    recomputed: Mapping[int, EntryEpsilon] = field(default_factory=dict)
    audits: tuple[EmpiricalAudit, ...] = ()
    """The sites' privacy audit statements in chain order (check 7)."""

    @property
    def ok(self) -> bool:
        """True when every check holds."""
        return not self.findings

    def failing_entries(self) -> frozenset[str]:
        """The `table#id` names that at least one finding is about."""
        return frozenset(finding.entry for finding in self.findings)

    def findings_for(self, entry: str) -> tuple[Finding, ...]:
        return tuple(finding for finding in self.findings if finding.entry == entry)

    def failed_checks(self) -> frozenset[Check]:
        return frozenset(finding.check for finding in self.findings)
