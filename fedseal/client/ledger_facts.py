"""What the privacy ledger says about a run, for the model card of its exported adapter.

A site holds its own signed statements only (`StatementOutbox`); the coordinator's registry holds
every site's, the rounds and the ledger chain. So there are two readers of the same figures:
`own_spend` at the site, and `read_ledger` for whoever holds the registry (fl-demo, an operator).
The site package never imports the registry: `LedgerReader` names the part of its read API used
here, and the registry's entries carry the statements' own field names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fedseal.client.statement_outbox import StatementOutbox
from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.events import DpEvent
from fedseal.privacy.status import PrivacyStatus

__all__ = ["LedgerFacts", "LedgerReader", "SiteSpend", "own_spend", "read_ledger", "site_spend"]

_ENTRY_FIELDS = (
    "round_number",
    "status",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "delta",
    "accountant",
    "epsilon_cumulative",
    "budget",
)


@dataclass(frozen=True)
class SiteSpend:
    """One site's privacy spend as its ledger entries of one run state it.

    `epsilon_cumulative` is the figure of the site's last entry in the run: every DP step it has
    ever charged on these records, composed (earlier runs included). `epsilon_run` composes the
    run's charged steps alone, recomputed from the entries' mechanism (σ, q, steps) with the
    same accountant and δ, as an auditor does.
    """

    site: str
    epsilon_run: float
    epsilon_cumulative: float
    delta: float
    accountant: str
    budget: float
    rounds_charged: int
    rounds_declined: int


@dataclass(frozen=True)
class LedgerFacts:
    """A run as the coordinator's registry records it, with every site's spend and the ledger
    chain's head (sequence number, entry hash) when they were read."""

    registry_run_id: int
    flower_run_id: str
    status: str
    scenario: str
    mode: str
    rounds_planned: int
    rounds_completed: int
    final_round: int | None
    final_digest: str | None
    sites: tuple[str, ...]
    spends: dict[str, SiteSpend]
    chain_head: tuple[int, str] | None


def site_spend(site: str, entries: Iterable[Mapping[str, Any]]) -> SiteSpend | None:
    """The spend stated by `site`'s entries of one run (statement fields); None for none."""
    from fedseal.privacy.accounting import epsilon_of  # Opacus, and so torch: only when needed

    ordered = sorted(entries, key=lambda e: int(e["round_number"]))
    if not ordered:
        return None
    last = ordered[-1]
    delta = float(last["delta"])
    accountant = Accountant(str(last["accountant"]))
    charged = [e for e in ordered if str(e["status"]) == PrivacyStatus.CHARGED]
    events = [
        DpEvent(float(e["noise_multiplier"]), float(e["sample_rate"]), int(e["steps"]))
        for e in charged
    ]
    return SiteSpend(
        site=site,
        epsilon_run=epsilon_of(events, delta, accountant),
        epsilon_cumulative=float(last["epsilon_cumulative"]),
        delta=delta,
        accountant=str(accountant),
        budget=float(last["budget"]),
        rounds_charged=len(charged),
        rounds_declined=len(ordered) - len(charged),
    )


def own_spend(state_dir: Path, site: str, flower_run_id: str) -> SiteSpend | None:
    """The site's spend in a run from the statements it signed and kept; None when it kept
    none (it trained without DP)."""
    statements = [json.loads(s.statement) for s in StatementOutbox(state_dir).sent([flower_run_id])]
    return site_spend(site, (s for s in statements if s.get("site") == site))


class RunLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def flower_run_id(self) -> str | None: ...
    @property
    def scenario(self) -> str: ...
    @property
    def protocol_mode(self) -> str: ...
    @property
    def status(self) -> Any: ...
    @property
    def rounds_planned(self) -> int: ...
    @property
    def rounds_completed(self) -> int: ...


class ContributionLike(Protocol):
    @property
    def site(self) -> str: ...
    @property
    def status(self) -> Any: ...


class RoundLike(Protocol):
    @property
    def number(self) -> int: ...
    @property
    def status(self) -> Any: ...
    @property
    def global_digest(self) -> str | None: ...
    @property
    def contributions(self) -> Sequence[ContributionLike]: ...


class LedgerReader(Protocol):
    """The registry's read API that `read_ledger` uses (`fedseal.registry.Registry` has it)."""

    def get_run(self, run_id: int) -> RunLike: ...
    def rounds(self, run_id: int) -> Sequence[RoundLike]: ...
    def privacy_ledger(
        self, run_id: int | None = None, site: str | None = None
    ) -> Sequence[Any]: ...
    def chain_head(self) -> tuple[int, str] | None: ...


def read_ledger(registry: LedgerReader, run_id: int) -> LedgerFacts:
    """The registry's record of run `run_id`: its final global adapter (the last completed
    round's digest), the sites whose updates went into a completed round, every site's spend
    and the chain head now."""
    run = registry.get_run(run_id)
    completed = [r for r in registry.rounds(run_id) if str(r.status) == "completed"]
    final = completed[-1] if completed else None
    sites = sorted(
        {c.site for r in completed for c in r.contributions if str(c.status) == "contributed"}
    )
    by_site: dict[str, list[dict[str, Any]]] = {}
    for entry in registry.privacy_ledger(run_id=run_id):
        fields = {name: getattr(entry, name) for name in _ENTRY_FIELDS}
        by_site.setdefault(str(entry.site), []).append(fields)
    spends = {
        site: spend
        for site, entries in sorted(by_site.items())
        if (spend := site_spend(site, entries)) is not None
    }
    return LedgerFacts(
        registry_run_id=int(run.id),
        flower_run_id=str(run.flower_run_id or ""),
        status=str(run.status),
        scenario=str(run.scenario),
        mode=str(run.protocol_mode),
        rounds_planned=int(run.rounds_planned),
        rounds_completed=int(run.rounds_completed),
        final_round=None if final is None else int(final.number),
        final_digest=None if final is None else final.global_digest,
        sites=tuple(sites),
        spends=spends,
        chain_head=registry.chain_head(),
    )
