"""The DP training regime, measured: federated, each site alone and centralised, by ε.

For each scenario, with the head adapter on cached MiniLM embeddings (fl-demo's CPU default,
`fedseal.contract.regime`), `--repeats` times: the federation (`regime_sim.run_federation`, the
sites' real DP-SGD, calibration and protocol arithmetic) without DP and at each ε; each site
alone at the same ε and without DP (the same rounds, steps, batch and learning rate); the
centralised non-private model (every site's records pooled); for banks a pooled logistic
regression on the loans' raw columns. Scores are on the global test set (the union of the sites'
test sets); medians and ranges over the repeats. `--tune` scores a grid on the sites' VALIDATION
records instead (how the public defaults were chosen).

Usage: python bench/bench_regime.py [--scenarios hospitals banks heart] [--repeats 3]
       (pip install -e ".[bench]" for the banks reference: scikit-learn)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from regime_sim import (
    banks_logistic_reference,
    load_features,
    pooled,
    run_federation,
    score_union,
)

from fedseal.contract.regime import regime_for, site_batch_sizes
from fedseal.contract.run_plan import AdapterKind
from fedseal.models.data import get_scenario


def regime_args(scenario: str, args: argparse.Namespace) -> argparse.Namespace:
    """`args` with the scenario's head-adapter defaults where no value was given."""
    regime = regime_for(AdapterKind.HEAD, scenario)
    chosen = argparse.Namespace(**vars(args))
    for name, value in (
        ("rounds", regime.rounds),
        ("steps", regime.steps),
        ("lr", regime.learning_rate),
        ("batch", regime.batch_size),
    ):
        if getattr(chosen, name) is None:
            setattr(chosen, name, value)
    return chosen


def metric_of(result, metric: str) -> float:
    return float(result.auc if metric == "auc" else result.accuracy)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.4f} [{min(values):.4f}, {max(values):.4f}]"


def measure(scenario: str, args: argparse.Namespace) -> dict[str, object]:
    args = regime_args(scenario, args)
    spec = get_scenario(scenario)
    sites, labels, metric = load_features(scenario, spec.default_sites, 0, args.cache)
    batch = site_batch_sizes(args.batch, {s.name: s.validation.n for s in sites})
    tests = [s.test for s in sites]
    common = dict(rounds=args.rounds, steps=args.steps, learning_rate=args.lr, batch=batch)
    out: dict[str, object] = {
        "metric": metric,
        "sites": {s.name: s.n for s in sites},
        "regime": {"rounds": args.rounds, "steps": args.steps, "lr": args.lr, "batch": batch},
    }
    rows: dict[str, list[float]] = {}
    for epsilon in [None, *args.epsilons]:
        tag = "no DP" if epsilon is None else f"eps={epsilon:g}"
        for repeat in range(args.repeats):
            vector, _ = run_federation(sites, labels, epsilon=epsilon, seed=repeat, **common)
            rows.setdefault(f"federated, {tag}", []).append(
                metric_of(score_union(vector, labels, tests), metric)
            )
            for site in sites:
                alone, _ = run_federation([site], labels, epsilon=epsilon, seed=repeat, **common)
                rows.setdefault(f"{site.name} alone, {tag}", []).append(
                    metric_of(score_union(alone, labels, tests), metric)
                )
        print(f"  {scenario} {tag}: done", flush=True)
    centre = pooled(sites)
    for repeat in range(args.repeats):
        vector, _ = run_federation(
            [centre],
            labels,
            epsilon=None,
            seed=repeat,
            rounds=args.rounds,
            steps=args.steps * len(sites),
            learning_rate=args.lr,
            batch={"pooled": args.batch},
        )
        rows.setdefault("centralised, no DP", []).append(
            metric_of(score_union(vector, labels, tests), metric)
        )
    if scenario == "banks":
        try:
            rows["pooled logistic regression (raw columns)"] = [
                banks_logistic_reference(spec.default_sites, 0)
            ]
        except ImportError:
            print("  (scikit-learn is not installed: no logistic-regression reference)")
    out["rows"] = rows
    return out


def tune(scenario: str, args: argparse.Namespace) -> None:
    args = regime_args(scenario, args)
    spec = get_scenario(scenario)
    sites, labels, metric = load_features(scenario, spec.default_sites, 0, args.cache)
    batch = site_batch_sizes(args.batch, {s.name: s.validation.n for s in sites})
    validation = [s.validation for s in sites]
    grid = itertools.product([None, *args.epsilons], [5, 8], [10, 15, 20, 60], [0.1, 0.2, 0.3])
    for epsilon, rounds, steps, lr in grid:
        scores = []
        for repeat in range(args.repeats):
            vector, _ = run_federation(
                sites,
                labels,
                rounds=rounds,
                steps=steps,
                learning_rate=lr,
                batch=batch,
                epsilon=epsilon,
                seed=repeat,
            )
            scores.append(metric_of(score_union(vector, labels, validation), metric))
        print(
            f"{scenario} eps={epsilon} rounds={rounds} steps={steps} lr={lr}: "
            f"validation {summary(scores)}",
            flush=True,
        )


def step_time(args: argparse.Namespace, repeats: int = 5, steps: int = 60) -> dict[str, float]:
    """DP-SGD step time over non-private step time for the head adapter at the hospitals'
    expected batch (3,000) on the largest hospital (CPU time of this process, calls alternated,
    median of paired ratios)."""
    from fedseal.client.dp.settings import DpSettings
    from fedseal.client.dp.trainer import train_dp_on
    from fedseal.client.training import TrainSettings, train_on
    from fedseal.models.features import FeatureHead

    sites, labels, _ = load_features("hospitals", 3, 0, args.cache)
    site = sites[0]
    dp = DpSettings(epsilon=1.0, delta=1e-5, target_epsilon=1.0)
    regime = regime_for(AdapterKind.HEAD, "hospitals")
    ratios, plain_s, dp_s = [], [], []
    for repeat in range(repeats):
        run = TrainSettings(
            steps=steps,
            batch_size=regime.batch_size,
            learning_rate=regime.learning_rate,
            seed=repeat,
            weight_decay=0.0,
        )
        head = FeatureHead(site.train.features.shape[1], labels)
        started = time.process_time()
        train_on(head, site.train, run, "cpu")
        plain = (time.process_time() - started) / steps
        started = time.process_time()
        train_dp_on(head, site.train, run, dp, 5.0, "cpu")
        private = (time.process_time() - started) / steps
        ratios.append(private / plain)
        plain_s.append(plain)
        dp_s.append(private)
    return {
        "plain_step_ms": 1000 * statistics.median(plain_s),
        "dp_step_ms": 1000 * statistics.median(dp_s),
        "ratio": statistics.median(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", nargs="+", default=["hospitals", "banks", "heart"])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=None, help="default: the scenario's")
    parser.add_argument("--steps", type=int, default=None, help="default: the scenario's")
    parser.add_argument("--lr", type=float, default=None, help="default: the scenario's")
    parser.add_argument("--batch", type=int, default=None, help="default: the scenario's")
    parser.add_argument("--cache", type=Path, default=Path(".bench-cache"))
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--step-time", action="store_true", help="only the DP step-time ratio")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.step_time:
        print(step_time(args))
        return
    if args.tune:
        for scenario in args.scenarios:
            tune(scenario, args)
        return
    results = {}
    started = time.perf_counter()
    for scenario in args.scenarios:
        results[scenario] = measure(scenario, args)
        result = results[scenario]
        regime = result["regime"]
        print(
            f"\n{scenario} ({result['metric']} on the global test set; {args.repeats} "
            f"repeats, median [min, max]; {regime['rounds']} rounds x {regime['steps']} steps, "
            f"lr {regime['lr']:g}, expected batches {regime['batch']}):"
        )
        for name, values in result["rows"].items():
            print(f"  {name:<44} {summary(values)}")
    print(f"\n{time.perf_counter() - started:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
