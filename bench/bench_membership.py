"""Membership inference against the head adapter, with and without DP.

Two settings, each at ε = 1 and without DP, repeated over seeds:
- `federation`: the default demo's federation (hospitals, 3 sites, the head regime of
  `fedseal.contract.regime`), attacked at each site: its training records (members) against its
  own validation and test records (non-members), which no site trained on.
- `memorise`: one site's small subset trained alone far past convergence (full batch, many
  steps), the setting in which a model without DP memorises its records.
The attack is the loss threshold: score = −loss of the record's true label.

    python bench/bench_membership.py [--repeats 3] [--cache .bench-cache]

Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from regime_sim import BASE, SiteFeatures, load_features, run_federation

from fedseal.client.dp.settings import default_delta
from fedseal.client.training import FeatureInputs
from fedseal.contract.regime import regime_for, site_batch_sizes
from fedseal.contract.run_plan import AdapterKind
from fedseal.models.adapter import load_vector_into_adapter
from fedseal.models.features import FeatureHead, feature_size
from fedseal.privacy.membership import MembershipAudit, membership_audit

REGIME = regime_for(AdapterKind.HEAD, "hospitals")


def losses(vector: np.ndarray, num_labels: int, inputs: FeatureInputs) -> np.ndarray:
    """Per-record cross-entropy of the true label under the head `vector`."""
    head = FeatureHead(feature_size(BASE), num_labels)
    load_vector_into_adapter(head, vector)
    head.eval()
    with torch.no_grad():
        logits = head(inputs.features)
        return torch.nn.functional.cross_entropy(logits, inputs.labels, reduction="none").numpy()


def attack(
    vector: np.ndarray, labels: int, members: FeatureInputs, others: FeatureInputs, seed: int
) -> MembershipAudit:
    return membership_audit(
        -losses(vector, labels, members),
        -losses(vector, labels, others),
        delta=default_delta(members.n),
        seed=seed,
    )


def held_out(site: SiteFeatures) -> FeatureInputs:
    """The site's records no one trained on: its validation and test records."""
    return FeatureInputs(
        torch.cat([site.validation.features, site.test.features]).numpy(),
        torch.cat([site.validation.labels, site.test.labels]).numpy(),
    )


def _subset(inputs: FeatureInputs, n: int) -> FeatureInputs:
    return FeatureInputs(inputs.features[:n].numpy(), inputs.labels[:n].numpy())


def federation(sites: list[SiteFeatures], labels: int, epsilon: float | None, seed: int):
    batch = site_batch_sizes(REGIME.batch_size, {s.name: s.validation.n for s in sites})
    vector, _ = run_federation(
        sites,
        labels,
        rounds=REGIME.rounds,
        steps=REGIME.steps,
        learning_rate=REGIME.learning_rate,
        batch=batch,
        epsilon=epsilon,
        seed=seed,
    )
    return {s.name: attack(vector, labels, s.train, held_out(s), seed) for s in sites}


def memorise(site: SiteFeatures, labels: int, epsilon: float | None, seed: int, n: int, steps: int):
    small = SiteFeatures(site.name, _subset(site.train, n), site.validation, site.test)
    vector, _ = run_federation(
        [small],
        labels,
        rounds=1,
        steps=steps,
        learning_rate=REGIME.learning_rate,
        batch={site.name: n},
        epsilon=epsilon,
        seed=seed,
    )
    return attack(vector, labels, small.train, _subset(held_out(site), n), seed)


def row(name: str, results: list[MembershipAudit]) -> str:
    aucs = [r.auc for r in results]
    lows = [r.auc_low for r in results]
    highs = [r.auc_high for r in results]
    bounds = [r.epsilon_lower for r in results]
    chance = sum(r.indistinguishable for r in results)
    return (
        f"| {name} | {results[0].members:,} / {results[0].non_members:,} | "
        f"{np.mean(aucs):.3f} ({min(aucs):.3f}–{max(aucs):.3f}) | "
        f"[{min(lows):.3f}, {max(highs):.3f}] | {chance} of {len(results)} | "
        f"{np.mean(bounds):.2f} (max {max(bounds):.2f}) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(".bench-cache"))
    parser.add_argument("--memorise-records", type=int, default=250)
    parser.add_argument("--memorise-steps", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    sites, labels, _ = load_features("hospitals", 3, 0, args.cache)
    print(f"features ready ({time.perf_counter() - started:.0f} s)", flush=True)
    rows: list[str] = []
    for epsilon in (None, 1.0):
        tag = "no DP" if epsilon is None else f"ε = {epsilon:g}"
        per_site: dict[str, list[MembershipAudit]] = {}
        for seed in range(args.repeats):
            for name, result in federation(sites, labels, epsilon, seed).items():
                per_site.setdefault(name, []).append(result)
        rows += [row(f"federation, {tag}: {name}", r) for name, r in per_site.items()]
        small = [
            memorise(sites[0], labels, epsilon, seed, args.memorise_records, args.memorise_steps)
            for seed in range(args.repeats)
        ]
        rows.append(
            row(
                f"{sites[0].name} subset alone, {args.memorise_steps} full-batch steps, {tag}",
                small,
            )
        )
        print(f"{tag}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    print()
    print(
        "| model attacked | members / non-members | attack AUC, mean (range) | "
        "95 % CI (widest) | CI holds 0.5 | empirical ε lower bound, mean (max) |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
