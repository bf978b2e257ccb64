"""A real ledger for the audit tests, written through the registry as a federation would.

Three hospitals enrol real Ed25519 identity keys (`create_site_keys`), the coordinator holds its
own ledger key, and two runs record charged and declined rounds whose ε figures come from
`epsilon_of` and whose statements each site signs with `ledger_codec.sign_statement`; every
contributed update has its digest in `contributions`, and every round the global model's test
score; one site is revoked between the runs and one site's budget is set by an event. Nothing is
written around the registry's API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedseal.client.site_keys import SiteKeys, create_site_keys
from fedseal.contract import ledger_codec
from fedseal.contract.audit_statement import AuditAttack, PrivacyAuditStatement
from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import epsilon_of
from fedseal.privacy.events import DpEvent
from fedseal.registry import Registry, open_registry
from fedseal.registry.ledger_key import public_key_bytes

SITES = ("hospital_a", "hospital_b", "hospital_c")
SPARE_SITE = "hospital_d"
"""Enrolled, never sampled: a site id no (run, round) has an entry for."""
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DELTA = 1e-5
NOISE = 1.1
SAMPLE_RATE = 32 / 600
STEPS = 40
CLIP = 1.0
BUDGETS = {"hospital_a": 10.0, "hospital_b": 3.5, "hospital_c": 10.0}
"""hospital_b's budget is small: it trains two rounds, then declines every round."""
GLOBAL_SCORES = ((0.41, 0.58, 0.66), (0.69, 0.71, 0.72))
"""The global model's test accuracy after each round of the two runs (its AUC is 0.12 higher)."""


PRIVACY_IDS = (*range(8, 17), *range(20, 26))
"""The chain positions of the privacy entries build_ledger writes (tests name some of them)."""


class Clock:
    """Each reading is one second after the last, so timestamps differ and stay exact."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1, microseconds=123)
        return self.now


@dataclass
class Ledger:
    """What the builder made: where, with which keys, and what each site spent."""

    url: str
    coordinator_key: Ed25519PrivateKey
    site_keys: dict[str, SiteKeys]
    run_ids: list[int] = field(default_factory=list)
    spare_run_id: int = 0
    """A run that failed before its first round: it has no ledger entries."""
    history: dict[str, list[DpEvent]] = field(default_factory=dict)

    @property
    def coordinator_public(self) -> bytes:
        return public_key_bytes(self.coordinator_key)

    def open(self) -> Registry:
        return open_registry(self.url, clock=Clock(), ledger_key=self.coordinator_key)


def statement(
    registry: Registry, keys: SiteKeys, *, run_id: int, round_number: int, **fields: Any
) -> dict[str, Any]:
    """`record_privacy`'s arguments for a statement `keys` signs, as the site would."""
    values = {
        "site": keys.site,
        "flower_run_id": registry.get_run(run_id).flower_run_id,
        "round_number": round_number,
        **fields,
    }
    signature = ledger_codec.sign_statement(keys.identity, values)
    del values["flower_run_id"]
    return {"run_id": run_id, "site_signature": signature, **values}


def mechanism(**overrides: Any) -> dict[str, Any]:
    values = {
        "noise_multiplier": NOISE,
        "sample_rate": SAMPLE_RATE,
        "steps": STEPS,
        "max_grad_norm": CLIP,
        "delta": DELTA,
        "accountant": "rdp",
    }
    values.update(overrides)
    return values


def play_round(
    registry: Registry, ledger: Ledger, run_id: int, number: int, sites: tuple[str, ...]
) -> None:
    """One round: each site trains if its budget allows (charged) or declines, and signs."""
    round_id = registry.start_round(run_id, number, sites)
    for site in sites:
        history = ledger.history.setdefault(site, [])
        event = DpEvent(NOISE, SAMPLE_RATE, STEPS)
        budget = BUDGETS[site]
        if epsilon_of([*history, event], DELTA, Accountant.RDP) <= budget:
            history.append(event)
            update = f"update of {site} in run {run_id} round {number}".encode()
            digest = ledger_codec.update_digest(update)
            fields = {
                "status": "charged",
                "epsilon_round": epsilon_of([event], DELTA, Accountant.RDP),
                "epsilon_cumulative": epsilon_of(history, DELTA, Accountant.RDP),
                "update_digest": digest,
            }
            outcome: dict[str, Any] = {"status": "contributed", "update_digest": digest}
        else:
            fields = {
                "status": "declined",
                "epsilon_round": 0.0,
                "epsilon_cumulative": epsilon_of(history, DELTA, Accountant.RDP),
                "update_digest": "",
            }
            outcome = {"status": "declined"}
        registry.record_privacy(
            **statement(
                registry,
                ledger.site_keys[site],
                run_id=run_id,
                round_number=number,
                budget=budget,
                **mechanism(),
                **fields,
            )
        )
        registry.record_contribution(round_id, site, num_examples=600, **outcome)
    score = GLOBAL_SCORES[len(ledger.run_ids) - 1][number - 1]
    registry.finish_round(
        round_id,
        status="completed",
        global_digest=global_digest(run_id, number),
        global_accuracy=score,
        global_auc=min(1.0, score + 0.12),
    )


def global_digest(run_id: int, number: int) -> str:
    """The global adapter's digest after a round, as the sites agreed on it."""
    return ledger_codec.update_digest(f"global adapter of run {run_id} round {number}".encode())


def audit_statement(
    ledger: Ledger, site: str = "hospital_a", *, run_index: int = 1, **overrides: Any
) -> PrivacyAuditStatement:
    """A site's privacy audit of a run's last global model (run 7001's round 3 by default): a
    loss-threshold attack that did no better than chance."""
    run_id = ledger.run_ids[run_index]
    values: dict[str, Any] = {
        "site": site,
        "flower_run_id": str(7000 + run_index),
        "applied_round": 3,
        "adapter_digest": global_digest(run_id, 3),
        "attack": AuditAttack.LOSS_THRESHOLD,
        "members": 600,
        "non_members": 600,
        "auc": 0.512,
        "auc_low": 0.48,
        "auc_high": 0.545,
        "epsilon_lower": 0.0,
        "confidence": 0.95,
        "delta": DELTA,
        "audited_at": "2026-03-02T08:00:00+00:00",
    }
    values.update(overrides)
    return PrivacyAuditStatement(**values)


def attach_audit(ledger: Ledger, site: str = "hospital_a", **overrides: Any) -> int:
    """The site signs `audit_statement(...)` and the registry appends it; returns its seq."""
    signed = audit_statement(ledger, site, **overrides).sign(ledger.site_keys[site].identity)
    with ledger.open() as registry:
        return registry.record_privacy_audit(signed).seq


def build_ledger(url: str, folder: Path) -> Ledger:
    """Two runs of three rounds (hospital_b runs out of budget, hospital_c is revoked between
    them), then a run that failed before its first round."""
    ledger = Ledger(
        url=url,
        coordinator_key=Ed25519PrivateKey.generate(),
        site_keys={site: create_site_keys(site, folder / site)[0] for site in (*SITES, SPARE_SITE)},
    )
    with ledger.open() as registry:
        for site in (*SITES, SPARE_SITE):
            registry.enroll_site(site, ledger.site_keys[site].public().to_bundle())
        registry.record_budget_change("hospital_b", BUDGETS["hospital_b"])
        for index, sites in enumerate((SITES, ("hospital_a", "hospital_b"))):
            run_id = registry.start_run(
                scenario="hospitals",
                protocol_mode="he+ss",
                config={"dp": True},
                rounds_planned=3,
                flower_run_id=7000 + index,
            )
            ledger.run_ids.append(run_id)
            for number in (1, 2, 3):
                play_round(registry, ledger, run_id, number, sites)
            registry.finish_run(run_id, status="completed")
            if index == 0:
                registry.revoke_site("hospital_c", "left the federation")
        ledger.spare_run_id = registry.start_run(
            scenario="hospitals",
            protocol_mode="he+ss",
            config={"dp": True},
            rounds_planned=3,
            flower_run_id=7999,
        )
        registry.finish_run(ledger.spare_run_id, status="failed", error="no site answered")
    return ledger
