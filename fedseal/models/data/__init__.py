"""Demo datasets: federated text-classification scenarios built from installed packages."""

from fedseal.models.data.csv_source import load_csv_examples
from fedseal.models.data.registry import (
    DEFAULT_SCENARIO,
    SCENARIOS,
    get_scenario,
    load_federated_dataset,
    scenario_site_names,
)
from fedseal.models.data.site_cache import load_site_data
from fedseal.models.data.types import FederatedDataset, Scenario, SiteSplit, TextExamples

__all__ = [
    "DEFAULT_SCENARIO",
    "SCENARIOS",
    "FederatedDataset",
    "Scenario",
    "SiteSplit",
    "TextExamples",
    "get_scenario",
    "load_csv_examples",
    "load_federated_dataset",
    "load_site_data",
    "scenario_site_names",
]
