"""Helpers that carve a labelled pool into non-IID sites (sizes and label mixes differ).

Splitting is not secret: numpy's seeded Generator keeps every site's view reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedseal.models.data.types import FederatedDataset, SiteSplit, TextExamples

__all__ = [
    "allocate_counts",
    "dirichlet_label_mixes",
    "held_out_sites",
    "scenario_rng",
    "shuffled_split",
    "site_sizes",
    "take_by_class",
]


def scenario_rng(scenario: str, seed: int) -> np.random.Generator:
    """A Generator keyed by scenario and seed, so scenarios never share a stream."""
    tag = int.from_bytes(scenario.encode("utf-8")[:8].ljust(8, b"\0"), "little")
    return np.random.default_rng([int(seed), tag])


def site_sizes(num_sites: int, largest: int, smallest: int) -> list[int]:
    """Geometrically spaced sizes from `largest` down to `smallest` (first site largest)."""
    if num_sites == 1:
        return [largest]
    sizes = np.geomspace(largest, smallest, num_sites)
    return [round(float(s)) for s in sizes]


def dirichlet_label_mixes(
    rng: np.random.Generator, prior: np.ndarray, concentration: float, num_sites: int
) -> np.ndarray:
    """Per-site class probabilities drawn from Dirichlet(concentration * prior).

    Smaller `concentration` means more skew between sites; the mean mix is `prior`.
    """
    weights = np.asarray(prior, dtype=np.float64)
    weights = weights / weights.sum()
    alpha = np.maximum(concentration * weights, 1e-3)
    return rng.dirichlet(alpha, size=num_sites)


def allocate_counts(
    rng: np.random.Generator, total: int, probs: np.ndarray, capacity: np.ndarray
) -> np.ndarray:
    """Draw `total` class counts from `probs` without exceeding any class's `capacity`.

    A class that runs out passes its shortfall on to the classes that still have examples.
    """
    capacity = np.asarray(capacity, dtype=np.int64)
    if total > capacity.sum():
        raise ValueError(f"cannot draw {total} examples from a pool of {capacity.sum()}")
    weights = np.asarray(probs, dtype=np.float64)
    counts = np.zeros_like(capacity)
    while (short := total - int(counts.sum())) > 0:
        open_classes = counts < capacity
        w = np.where(open_classes, weights, 0.0)
        if w.sum() <= 0:
            w = (capacity - counts).astype(np.float64)
        counts = np.minimum(counts + rng.multinomial(short, w / w.sum()), capacity)
    return counts


def take_by_class(
    pools: list[np.ndarray], counts: np.ndarray, cursor: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Take `counts[c]` unused indices from each shuffled class pool; advances `cursor`."""
    taken = []
    for c, n in enumerate(counts.tolist()):
        taken.append(pools[c][cursor[c] : cursor[c] + n])
        cursor[c] += n
    return np.concatenate(taken) if taken else np.zeros(0, np.int64), cursor


def shuffled_split(
    rng: np.random.Generator, examples: TextExamples, test_size: int
) -> tuple[TextExamples, TextExamples]:
    """Shuffle `examples` and cut off `test_size` of them as the test part."""
    if not 0 <= test_size <= len(examples):
        raise ValueError(f"test_size {test_size} does not fit {len(examples)} examples")
    order = rng.permutation(len(examples))
    return examples.subset(order[test_size:]), examples.subset(order[:test_size])


def held_out_sites(
    scenario: str,
    seed: int,
    by_site: Mapping[str, TextExamples],
    names: Sequence[str],
    *,
    test_fraction: float,
    validation_fraction: float,
    labels: tuple[str, ...],
    primary_metric: str,
    max_length: int,
) -> FederatedDataset:
    """Sites `names` of a scenario whose records already come by site (a hospital, a region):
    each site's test part (`test_fraction`), then its validation part (`validation_fraction`
    of the rest); the global test set is the union of the sites' test parts."""
    rng = scenario_rng(scenario, seed)
    sites: dict[str, SiteSplit] = {}
    for name in names:
        examples = by_site[name]
        rest, test = shuffled_split(rng, examples, round(test_fraction * len(examples)))
        train, validation = shuffled_split(rng, rest, round(validation_fraction * len(rest)))
        sites[name] = SiteSplit(name=name, train=train, test=test, validation=validation)
    return FederatedDataset(
        scenario=scenario,
        labels=labels,
        sites=sites,
        global_test=TextExamples.concat([s.test for s in sites.values()]),
        primary_metric=primary_metric,
        max_length=max_length,
    )
