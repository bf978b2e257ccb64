"""One site's view of a scenario, cached as JSON so a site process does not rebuild everything.

Building a scenario reads a whole data package (the ICD-10-CM one takes seconds); site processes
restart often, so the first build writes the site's own split to its cache and later calls read
it. Only that site's records are written: a site's state directory holds nothing of another
site's, nor the global test set (the union of every site's held-out records).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from fedseal.models.data.registry import get_scenario, load_federated_dataset, scenario_site_names
from fedseal.models.data.types import FederatedDataset, SiteSplit, TextExamples

__all__ = ["load_site_data", "site_cache_path"]

_FORMAT = "fedseal-site-data-v2"


def site_cache_path(cache_dir: Path, scenario: str, site: str, num_sites: int, seed: int) -> Path:
    """Where a site's cached split lives."""
    return Path(cache_dir) / f"{scenario}-n{num_sites}-seed{seed}-{site}.json"


def load_site_data(
    scenario: str,
    site: str,
    num_sites: int,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> tuple[SiteSplit, tuple[str, ...]]:
    """A site's split (train, validation, test) and the label names, from its cache if there."""
    names = scenario_site_names(scenario, num_sites)
    if site not in names:
        raise ValueError(
            f"unknown site {site!r} for scenario {scenario!r} with {num_sites} sites; "
            f"valid sites: {', '.join(names)}"
        )
    if cache_dir is not None:
        cached = _read(site_cache_path(cache_dir, scenario, site, num_sites, seed))
        if cached is not None and cached[0].name == site:
            return cached
    dataset = load_federated_dataset(scenario, num_sites, seed)
    split = dataset.sites[site]
    if cache_dir is not None:
        _write(Path(cache_dir), dataset, split, num_sites, seed)
    return split, dataset.labels


def _payload(dataset: FederatedDataset, split: SiteSplit) -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "scenario": dataset.scenario,
        "labels": list(dataset.labels),
        "site": split.name,
        "train": split.train.to_json(),
        "validation": split.validation.to_json(),
        "test": split.test.to_json(),
    }


def _write(
    cache_dir: Path, dataset: FederatedDataset, split: SiteSplit, num_sites: int, seed: int
) -> None:
    """Write the site's file atomically (temp file + rename): readers never see half a file."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = site_cache_path(cache_dir, dataset.scenario, split.name, num_sites, seed)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=cache_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(_payload(dataset, split), handle, ensure_ascii=False)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> tuple[SiteSplit, tuple[str, ...]] | None:
    """The cached split, or None when it is missing, unreadable or from another format."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != _FORMAT:
            return None
        get_scenario(data["scenario"])
        labels = tuple(str(x) for x in data["labels"])
        split = SiteSplit(
            name=str(data["site"]),
            train=TextExamples.from_json(data["train"]),
            test=TextExamples.from_json(data["test"]),
            validation=TextExamples.from_json(data["validation"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    for part in (split.train, split.validation, split.test):
        if len(part) and part.labels.max() >= len(labels):
            return None
    return split, labels
