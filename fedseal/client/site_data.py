"""The site's own records, loaded from the source its config names.

Loaded once at `fl-client` start (so a broken source fails before the site joins) and again inside
each ClientApp process, from the JSON cache in the site's state directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fedseal.client.errors import SiteError
from fedseal.client.site_config import SiteConfig
from fedseal.models.data import TextExamples, load_csv_examples, load_site_data

__all__ = ["SiteData", "SiteDataError", "check_validation", "load_site_records"]


class SiteDataError(SiteError, ValueError):
    """The site's data source cannot be read or does not fit the run."""


@dataclass(frozen=True)
class SiteData:
    """What one site trains and evaluates on.

    `global_test` is None for a site's own sources: a site holds only its own records (the demo
    scores the federated model on the union of the sites' test sets itself). `validation` holds
    records out of training for choosing hyperparameters (empty when the source has none).
    """

    train: TextExamples
    test: TextExamples
    global_test: TextExamples | None
    labels: tuple[str, ...]
    validation: TextExamples = field(default_factory=lambda: TextExamples((), []))


def load_site_records(config: SiteConfig, labels: Sequence[str] | None = None) -> SiteData:
    """Load the site's train and test records; `labels` is the run's class list (CSV sources)."""
    data = config.data
    cache_dir = config.site.state_dir / "cache"
    try:
        if data.source == "demo":
            assert data.scenario is not None and data.num_sites is not None
            split, scenario_labels = load_site_data(
                data.scenario, config.site.name, data.num_sites, data.seed, cache_dir=cache_dir
            )
            if labels is not None and tuple(labels) != tuple(scenario_labels):
                raise SiteDataError(
                    f"the run's labels do not match the {data.scenario} scenario's labels"
                )
            return SiteData(split.train, split.test, None, tuple(scenario_labels), split.validation)
        assert data.train_path is not None and data.test_path is not None
        if labels is None:
            labels = _csv_labels(config)
        train = load_csv_examples(data.train_path, data.text_column, data.label_column, labels)
        test = load_csv_examples(data.test_path, data.text_column, data.label_column, labels)
        validation = TextExamples((), [])
        if data.validation_path is not None:
            validation = load_csv_examples(
                data.validation_path, data.text_column, data.label_column, labels
            )
        return SiteData(train, test, None, tuple(labels), validation)
    except SiteDataError:
        raise
    except (ValueError, KeyError, OSError) as exc:
        raise SiteDataError(f"site {config.site.name}: data source unusable: {exc}") from None


def check_validation(config: SiteConfig, data: SiteData) -> None:
    """Refuse a DP site without validation records to choose its settings on.

    Hyperparameters tuned on the training records would spend privacy that no ledger entry
    records; under `[dp]` a site needs a validation split at least as large as its expected
    batch (`training.batch_size`, capped at its training records) so that a batch-sized score
    of a setting is possible without touching the training records.
    """
    if config.dp is None or not config.dp.enabled:
        return
    expected = min(config.training.batch_size, len(data.train))
    where = "data.validation_path" if config.data.source == "csv" else "its demo split"
    if len(data.validation) == 0:
        raise SiteDataError(
            f"site {config.site.name}: no validation records ({where}): a site that trains "
            "with DP needs records held out of training to choose its settings on"
        )
    if len(data.validation) < expected:
        raise SiteDataError(
            f"site {config.site.name}: {len(data.validation)} validation records ({where}) are "
            f"fewer than its expected batch of {expected} (training.batch_size); lower the batch "
            "size or hold out more records"
        )


def _csv_labels(config: SiteConfig) -> list[str]:
    """The label values present in the site's CSV files (used only to validate at start-up)."""
    import pandas as pd

    values: set[str] = set()
    for path in (config.data.train_path, config.data.test_path):
        frame = pd.read_csv(path)
        if config.data.label_column not in frame.columns:
            raise SiteDataError(f"{path}: no column {config.data.label_column!r}")
        values.update(str(v) for v in frame[config.data.label_column].dropna().unique())
    return sorted(values)
