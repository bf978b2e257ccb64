"""Scenario "hospitals": ICD-10-CM code descriptions labelled with their chapter (22 classes).

Source: the ICD-10-CM tabular list shipped in the `simple-icd-10-cm` package (offline, MIT).
Each example is a billable (leaf) code's description, e.g. "Cholera due to Vibrio cholerae 01,
biovar cholerae" -> "Certain infectious and parasitic diseases (A00-B99)". Hospitals differ in size
and in case mix (Dirichlet label skew), as real coding departments do. Sites are sized as coding
departments are (tens of thousands of coded cases a year, here 30,000 / 13,416 / 6,000 training
records for three sites, drawn without overlap from the 74,736 leaves): under differential privacy
the signal grows with the records while the noise does not (docs/privacy.md, "The training
regime"). Validation splits hold 3,000 / 2,121 / 1,500 records, as large as the expected batch
they check (a site refuses a DP batch larger than its validation split).
"""

from __future__ import annotations

import functools
import string
import warnings

import numpy as np

from fedseal.models.data.splitting import (
    allocate_counts,
    dirichlet_label_mixes,
    scenario_rng,
    shuffled_split,
    site_sizes,
    take_by_class,
)
from fedseal.models.data.types import FederatedDataset, Scenario, SiteSplit, TextExamples

__all__ = ["SCENARIO", "build_hospitals", "icd10_chapter_examples"]

NAME = "hospitals"
SITE_POOL = tuple(f"hospital_{letter}" for letter in string.ascii_lowercase[:10])
LARGEST_TRAIN, SMALLEST_TRAIN = 30_000, 6_000
LARGEST_VALIDATION, SMALLEST_VALIDATION = 3_000, 1_500
LARGEST_TEST, SMALLEST_TEST = 800, 400
# Sites' label mixes are Dirichlet(CONCENTRATION * sqrt-flattened global mix): specialised case
# mixes (a few chapters dominate each hospital), as at specialist hospitals.
CONCENTRATION = 3.0
# At most this share of the leaves is handed out: many sites are scaled down together to fit
# (3 sites use 77 % of it at full size; 10 sites keep 38 % of the full sizes).
POOL_SHARE = 0.9
SCENARIO_MAX_LENGTH = 32  # 99% of descriptions fit in 36 tokens, 90% in 26


@functools.lru_cache(maxsize=1)
def icd10_chapter_examples() -> tuple[TextExamples, tuple[str, ...]]:
    """Every ICD-10-CM leaf code's description with its chapter index, and the chapter names."""
    with warnings.catch_warnings():  # the package reads its data with deprecated importlib APIs
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import simple_icd_10_cm as cm

    codes = cm.get_all_codes(False)
    chapters = [c for c in codes if cm.is_chapter(c)]
    chapter_index = {c: i for i, c in enumerate(chapters)}
    texts: list[str] = []
    labels: list[int] = []
    for code in codes:
        if cm.is_leaf(code) and not cm.is_chapter(code):
            texts.append(cm.get_description(code))
            labels.append(chapter_index[cm.get_ancestors(code)[-1]])
    names = tuple(cm.get_description(c) for c in chapters)
    return TextExamples(tuple(texts), np.asarray(labels, dtype=np.int64)), names


def _split_sizes(num_sites: int, pool_size: int) -> tuple[list[int], list[int], list[int]]:
    """Training, validation and test sizes per site, all scaled by one factor where the full
    sizes would take more than `POOL_SHARE` of the leaves."""
    full = (
        (LARGEST_TRAIN, SMALLEST_TRAIN),
        (LARGEST_VALIDATION, SMALLEST_VALIDATION),
        (LARGEST_TEST, SMALLEST_TEST),
    )
    total = sum(sum(site_sizes(num_sites, large, small)) for large, small in full)
    scale = min(1.0, POOL_SHARE * pool_size / total)
    trains, validations, tests = (
        site_sizes(num_sites, round(large * scale), round(small * scale)) for large, small in full
    )
    return trains, validations, tests


def build_hospitals(num_sites: int, seed: int) -> FederatedDataset:
    """Split the ICD-10-CM leaves into `num_sites` disjoint hospitals with skewed case mixes."""
    pool, names = icd10_chapter_examples()
    num_labels = len(names)
    rng = scenario_rng(NAME, seed)

    remaining = np.arange(len(pool))
    class_pools = [
        rng.permutation(remaining[pool.labels[remaining] == c]) for c in range(num_labels)
    ]
    capacity = np.array([p.size for p in class_pools], dtype=np.int64)
    cursor = np.zeros(num_labels, dtype=np.int64)

    prior = np.sqrt(pool.label_counts(num_labels).astype(np.float64))
    mixes = dirichlet_label_mixes(rng, prior, CONCENTRATION, num_sites)
    trains, validations, tests = _split_sizes(num_sites, len(pool))

    sites: dict[str, SiteSplit] = {}
    sizes = zip(SITE_POOL, mixes, trains, validations, tests, strict=False)
    for name, mix, n_train, n_val, n_test in sizes:
        counts = allocate_counts(rng, n_train + n_val + n_test, mix, capacity - cursor)
        taken, cursor = take_by_class(class_pools, counts, cursor)
        rest, test = shuffled_split(rng, pool.subset(taken), n_test)
        train, validation = shuffled_split(rng, rest, n_val)
        sites[name] = SiteSplit(name=name, train=train, test=test, validation=validation)
    # The federation's population is the union of its hospitals' patients: the global test set is
    # every site's held-out test set together (a model that knows one case mix scores poorly).
    return FederatedDataset(
        scenario=NAME,
        labels=names,
        sites=sites,
        global_test=TextExamples.concat([s.test for s in sites.values()]),
        primary_metric="accuracy",
        max_length=SCENARIO_MAX_LENGTH,
    )


SCENARIO = Scenario(
    name=NAME,
    description="ICD-10-CM code description -> chapter (22 classes), skewed case mix per hospital",
    primary_metric="accuracy",
    site_pool=SITE_POOL,
    default_sites=3,
    min_sites=2,
    max_length=SCENARIO_MAX_LENGTH,
    build=build_hospitals,
)
