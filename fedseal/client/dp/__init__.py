"""Differential privacy on a site: DP-SGD on the LoRA adapter and a budget never overspent.

One module per job:

- `settings`: the `[dp]` table of the site config (`DpSettings`, `parse_dp_section`);
- `events`, `accounting`: DP-SGD events and their ε under Opacus' RDP or PRV accountant;
- `accountant_store`: every event the site ever released, as JSON in its state directory;
- `calibration`: σ for a target ε with the site's history prepended;
- `budget`: the check before a round (`check_round`);
- `trainer`: `train_steps_dp`, Opacus DP-SGD on the PEFT model;
- `report`: the round's entry for the coordinator's privacy ledger;
- `private_round`: one round as the site worker runs it (plan, check, train, charge, report).

Names are loaded on first use, so importing the package (as the site's config parser does) does
not import torch or Opacus.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Accountant",
    "AccountantStore",
    "AccountantStoreError",
    "AlreadyCharged",
    "BudgetDecision",
    "BudgetReason",
    "CalibrationError",
    "Charge",
    "DoubleCharge",
    "DpConfigError",
    "DpError",
    "DpEvent",
    "DpSettings",
    "DpTrainResult",
    "PrivacyReport",
    "PrivacyStatus",
    "PrivateRound",
    "calibrate_noise",
    "charged_report",
    "check_round",
    "declined_report",
    "default_delta",
    "epsilon_of",
    "noise_for_run",
    "parse_dp_section",
    "poisson_sample_rate",
    "train_private_round",
    "train_steps_dp",
]

_HOME = {
    "Accountant": "settings",
    "DpSettings": "settings",
    "default_delta": "settings",
    "parse_dp_section": "settings",
    "AccountantStoreError": "errors",
    "CalibrationError": "errors",
    "DoubleCharge": "errors",
    "DpConfigError": "errors",
    "DpError": "errors",
    "DpEvent": "events",
    "epsilon_of": "accounting",
    "AccountantStore": "accountant_store",
    "Charge": "accountant_store",
    "calibrate_noise": "calibration",
    "noise_for_run": "calibration",
    "BudgetDecision": "budget",
    "BudgetReason": "budget",
    "check_round": "budget",
    "PrivacyStatus": "report",
    "PrivacyReport": "report",
    "charged_report": "report",
    "declined_report": "report",
    "DpTrainResult": "trainer",
    "poisson_sample_rate": "trainer",
    "train_steps_dp": "trainer",
    "AlreadyCharged": "private_round",
    "PrivateRound": "private_round",
    "train_private_round": "private_round",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
