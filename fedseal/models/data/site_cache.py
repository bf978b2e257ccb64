"""One site's view of a scenario, cached as JSON so a site process does not rebuild everything.

Building a scenario reads a whole data package (the ICD-10-CM one takes seconds); site processes
restart often, so the first build writes every site's file and later calls read just one.
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

_FORMAT = "fedseal-site-data-v1"


def site_cache_path(cache_dir: Path, scenario: str, site: str, num_sites: int, seed: int) -> Path:
    """Where a site's cached split lives."""
    return Path(cache_dir) / f"{scenario}-n{num_sites}-seed{seed}-{site}.json"


def load_site_data(
    scenario: str,
    site: str,
    num_sites: int,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> tuple[SiteSplit, TextExamples, tuple[str, ...]]:
    """A site's split, the global test set and the label names, from the cache when possible."""
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
    if cache_dir is not None:
        _write_all(Path(cache_dir), dataset, num_sites, seed)
    return dataset.sites[site], dataset.global_test, dataset.labels


def _payload(dataset: FederatedDataset, split: SiteSplit) -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "scenario": dataset.scenario,
        "labels": list(dataset.labels),
        "site": split.name,
        "train": split.train.to_json(),
        "test": split.test.to_json(),
        "global_test": dataset.global_test.to_json(),
    }


def _write_all(cache_dir: Path, dataset: FederatedDataset, num_sites: int, seed: int) -> None:
    """Write every site's file atomically (temp file + rename): readers never see half a file."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    for split in dataset.sites.values():
        target = site_cache_path(cache_dir, dataset.scenario, split.name, num_sites, seed)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=cache_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(_payload(dataset, split), handle, ensure_ascii=False)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _read(path: Path) -> tuple[SiteSplit, TextExamples, tuple[str, ...]] | None:
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
        )
        global_test = TextExamples.from_json(data["global_test"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    for part in (split.train, split.test, global_test):
        if len(part) and part.labels.max() >= len(labels):
            return None
    return split, global_test, labels
