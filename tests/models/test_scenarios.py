from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fedseal.contract.regime import regime_for, site_batch_sizes
from fedseal.contract.run_plan import AdapterKind
from fedseal.models.data import (
    DEFAULT_SCENARIO,
    SCENARIOS,
    FederatedDataset,
    TextExamples,
    load_federated_dataset,
    scenario_site_names,
)
from fedseal.models.data.banks import _loans_by_bank
from fedseal.models.data.heart import _patients_by_site, render_patient
from fedseal.models.data.hospitals import icd10_chapter_examples

SCENARIO_NAMES = ["hospitals", "heart", "banks"]


def _pool(scenario: str) -> TextExamples:
    if scenario == "hospitals":
        return icd10_chapter_examples()[0]
    source = _patients_by_site() if scenario == "heart" else _loans_by_bank()
    return TextExamples.concat(list(source.values()))


@pytest.fixture(scope="module", params=SCENARIO_NAMES)
def dataset(request) -> FederatedDataset:
    spec = SCENARIOS[request.param]
    return load_federated_dataset(request.param, spec.default_sites, seed=0)


def test_registry_and_site_names() -> None:
    assert DEFAULT_SCENARIO == "hospitals"
    assert set(SCENARIOS) >= set(SCENARIO_NAMES)
    assert scenario_site_names("hospitals", 3) == ["hospital_a", "hospital_b", "hospital_c"]
    assert len(scenario_site_names("hospitals", 10)) == 10
    assert scenario_site_names("heart", 4) == [
        "cleveland",
        "hungary",
        "va_long_beach",
        "switzerland",
    ]
    assert scenario_site_names("banks", 4) == [
        "bank_west",
        "bank_south",
        "bank_northeast",
        "bank_midwest",
    ]


@pytest.mark.parametrize(
    ("scenario", "num_sites", "match"),
    [
        ("nope", 3, "hospitals, heart, banks"),
        ("hospitals", 11, "2 to 10"),
        ("hospitals", 1, "2 to 10"),
        ("heart", 5, "cleveland, hungary"),
        ("banks", 5, "bank_west"),
    ],
)
def test_invalid_choices_name_the_valid_ones(scenario, num_sites, match) -> None:
    with pytest.raises(ValueError, match=match):
        load_federated_dataset(scenario, num_sites)
    with pytest.raises(ValueError, match=match):
        scenario_site_names(scenario, num_sites)


def test_scenario_shape(dataset: FederatedDataset) -> None:
    spec = SCENARIOS[dataset.scenario]
    assert list(dataset.sites) == scenario_site_names(dataset.scenario, spec.default_sites)
    assert dataset.primary_metric == spec.primary_metric
    assert dataset.max_length == spec.max_length
    for name, split in dataset.sites.items():
        assert split.name == name
        assert len(split.train) > 0 and len(split.test) > 0
        assert split.train.labels.dtype == np.int64
        assert split.train.labels.max() < dataset.num_labels
    assert len(dataset.global_test) > 0
    assert set(np.unique(dataset.global_test.labels)) == set(range(dataset.num_labels)) or (
        dataset.scenario == "hospitals"  # chapter 22 has 3 codes in all: rarely drawn
    )


def test_hospital_sizes_and_classes() -> None:
    dataset = load_federated_dataset("hospitals", 3, seed=0)
    assert dataset.num_labels == 22
    assert dataset.labels[0].startswith("Certain infectious and parasitic diseases")
    assert len(dataset.global_test) == sum(len(s.test) for s in dataset.sites.values())
    for split in dataset.sites.values():
        assert 6000 <= len(split.train) <= 30_000
        assert 400 <= len(split.test) <= 800


def test_deterministic_for_a_seed(dataset: FederatedDataset) -> None:
    again = load_federated_dataset(dataset.scenario, len(dataset.sites), seed=0)
    other = load_federated_dataset(dataset.scenario, len(dataset.sites), seed=1)
    assert again == dataset
    for name, split in dataset.sites.items():
        assert again.sites[name].train.digest() == split.train.digest()
    assert any(other.sites[n].train != s.train for n, s in dataset.sites.items())


def test_sites_are_non_iid(dataset: FederatedDataset) -> None:
    sizes = [len(s.train) for s in dataset.sites.values()]
    assert len(set(sizes)) == len(sizes)
    mixes = [
        s.train.label_counts(dataset.num_labels) / len(s.train) for s in dataset.sites.values()
    ]
    spread = max(np.abs(a - b).sum() for a in mixes for b in mixes)  # largest L1 distance
    assert spread > (0.3 if dataset.scenario == "hospitals" else 0.02)


def test_parts_are_disjoint(dataset: FederatedDataset) -> None:
    parts = [p for s in dataset.sites.values() for p in (s.train, s.validation, s.test)]
    # the global test set is the union of the sites' test sets, in every scenario
    assert dataset.global_test == TextExamples.concat([s.test for s in dataset.sites.values()])
    assert all(len(s.validation) > 0 for s in dataset.sites.values())
    used = Counter((t, int(y)) for p in parts for t, y in zip(p.texts, p.labels, strict=True))
    pool = _pool(dataset.scenario)
    available = Counter((t, int(y)) for t, y in zip(pool.texts, pool.labels, strict=True))
    over = {k: n for k, n in used.items() if n > available[k]}
    assert over == {}  # nothing is used more often than it exists in the source


def test_hospitals_with_many_sites_stay_within_the_pool() -> None:
    """Ten sites at the full sizes would need 179,000 of the 74,736 leaves: every part of every
    site is scaled down by one factor to fit, the largest still the largest."""
    ds = load_federated_dataset("hospitals", 10, seed=3)
    assert len(ds.sites) == 10
    trains = [len(s.train) for s in ds.sites.values()]
    assert trains == sorted(trains, reverse=True) and min(trains) > 2000
    used = sum(len(p) for s in ds.sites.values() for p in (s.train, s.validation, s.test))
    assert used <= 0.9 * len(_pool("hospitals"))


def test_hospital_sizes_are_the_regime_sizes() -> None:
    """Sites sized as coding departments are (docs/privacy.md, "The training regime"), with a
    validation split at least as large as the demo's expected batch (3,000, capped per site)."""
    ds = load_federated_dataset("hospitals", 3, seed=0)
    sizes = [(len(s.train), len(s.validation), len(s.test)) for s in ds.sites.values()]
    assert sizes == [(30_000, 3000, 800), (13_416, 2121, 566), (6000, 1500, 400)]
    batch = regime_for(AdapterKind.HEAD, "hospitals").batch_size
    validation = {name: len(s.validation) for name, s in ds.sites.items()}
    assert site_batch_sizes(batch, validation) == {
        "hospital_a": 3000,
        "hospital_b": 2121,
        "hospital_c": 1500,
    }
    again = load_federated_dataset("hospitals", 3, seed=0)
    for name, split in ds.sites.items():
        for part in ("train", "validation", "test"):
            assert getattr(again.sites[name], part).digest() == getattr(split, part).digest()


def test_heart_rendering_marks_missing_values() -> None:
    row = {
        "age": 63, "sex": "Male", "cp": "typical angina", "trestbps": 145.0, "chol": 0.0,
        "fbs": float("nan"), "restecg": "normal", "thalch": float("nan"), "exang": True,
        "oldpeak": 2.3, "slope": float("nan"), "ca": 0.0, "thal": "normal",
    }  # fmt: skip
    text = render_patient(row)
    assert text.startswith("age 63, male, chest pain typical angina, resting bp 145")
    assert "cholesterol unknown" in text and "fasting sugar high unknown" in text
    assert "max heart rate unknown" in text and "exercise angina yes" in text
    assert "vessels 0" in text and "nan" not in text


def test_text_examples_validate() -> None:
    with pytest.raises(ValueError):
        TextExamples(("a", "b"), np.array([0]))
    with pytest.raises(ValueError):
        TextExamples(("a",), np.array([-1]))
    examples = TextExamples(("a", "b"), np.array([1, 0]))
    with pytest.raises(ValueError):
        examples.labels[0] = 3  # read-only
    assert len(examples) == 2 and examples.subset([1]).texts == ("b",)
    assert TextExamples.from_json(examples.to_json()) == examples
