"""The registry of demo scenarios and the entry points that build them."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from fedseal.models.data import banks, heart, hospitals
from fedseal.models.data.types import FederatedDataset, Scenario

__all__ = [
    "DEFAULT_SCENARIO",
    "SCENARIOS",
    "get_scenario",
    "load_federated_dataset",
    "scenario_site_names",
]

DEFAULT_SCENARIO = "hospitals"

SCENARIOS: Mapping[str, Scenario] = MappingProxyType(
    {s.name: s for s in (hospitals.SCENARIO, heart.SCENARIO, banks.SCENARIO)}
)


def get_scenario(name: str) -> Scenario:
    """Look up a scenario; the error names the valid ones."""
    try:
        return SCENARIOS[name]
    except (KeyError, TypeError):
        valid = ", ".join(SCENARIOS)
        raise ValueError(f"unknown scenario {name!r}; valid scenarios: {valid}") from None


def _checked_num_sites(scenario: Scenario, num_sites: int) -> int:
    if isinstance(num_sites, bool) or not isinstance(num_sites, int):
        raise TypeError("num_sites must be an int")
    if not scenario.min_sites <= num_sites <= scenario.max_sites:
        raise ValueError(
            f"scenario {scenario.name!r} supports {scenario.min_sites} to {scenario.max_sites} "
            f"sites ({', '.join(scenario.site_pool)}), got {num_sites}"
        )
    return num_sites


def scenario_site_names(scenario: str, num_sites: int) -> list[str]:
    """The names of the first `num_sites` sites of a scenario, in order."""
    spec = get_scenario(scenario)
    return list(spec.site_pool[: _checked_num_sites(spec, num_sites)])


def load_federated_dataset(scenario: str, num_sites: int, seed: int = 0) -> FederatedDataset:
    """Build a scenario's sites and global test set; the same seed gives the same split."""
    spec = get_scenario(scenario)
    return spec.build(_checked_num_sites(spec, num_sites), int(seed))
