"""fl-demo's closing report: how the run ended, summary.json, and the federated model next to
each site trained alone, with the verdict whether federating paid off.

The comparison scores every model on the global test set (the union of the sites' test sets),
which no site holds: only the demo, which built every site's data, can score it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .progress import say

if TYPE_CHECKING:
    from fedseal.contract.run_plan import RunPlan
    from fedseal.demo.baseline import SoloDp
    from fedseal.demo.dp_budget import DemoDpOptions, SiteDpPlan
    from fedseal.models.data.types import FederatedDataset
    from fedseal.registry import RoundView, RunView

__all__ = ["compare_with_solo", "run_summary", "write_summary"]


def run_summary(
    run: RunView,
    rounds: list[RoundView],
    flower_run_id: int,
    scenario: str,
    sites: list[str],
    dp_options: DemoDpOptions | None,
    dp_plans: dict[str, SiteDpPlan] | None,
) -> dict[str, object]:
    """Say how the run ended; what summary.json records of it, round by round."""
    completed = [r for r in rounds if str(r.status) == "completed"]
    say(
        f"run {run.id} {run.status}: {len(completed)} of {run.rounds_planned} rounds completed"
        + (f" ({run.error})" if run.error else "")
    )
    return {
        "run_id": run.id,
        "flower_run_id": flower_run_id,
        "status": str(run.status),
        "scenario": scenario,
        "sites": sites,
        "dp": _dp_summary(dp_options, dp_plans),
        "rounds": [
            {
                "round": r.number,
                "status": str(r.status),
                "participants": r.participants,
                "dropped": r.dropped,
                "global_accuracy": r.global_accuracy,
                "global_auc": r.global_auc,
                "global_digest": r.global_digest,
                "seconds": r.duration_s,
            }
            for r in rounds
        ],
    }


def write_summary(
    workdir: Path, summary: dict[str, object], database_url: str, ledger_public_key: Path
) -> None:
    """Write summary.json and say how to audit the run's privacy ledger."""
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    say(f"summary written to {workdir / 'summary.json'}")
    say(
        "check the privacy ledger: fl-audit verify --database "
        f"{database_url} --coordinator-key {ledger_public_key}"
    )


def _dp_summary(
    options: DemoDpOptions | None, plans: dict[str, SiteDpPlan] | None
) -> dict[str, object]:
    """What summary.json says about privacy: the options and each site's plan for this run."""
    if options is None or plans is None:
        return {"enabled": False}
    return {
        "enabled": True,
        "epsilon_this_run": options.epsilon,
        "budget": options.budget,
        "max_grad_norm": options.max_grad_norm,
        "noise_multiplier": options.noise_multiplier,
        "sites": {
            site: {
                "records": plan.num_records,
                "delta": plan.delta,
                "spent_before": plan.spent,
                "epsilon_this_run": plan.this_run,
                "target_epsilon": plan.target,
            }
            for site, plan in plans.items()
        },
    }


def compare_with_solo(
    plan: RunPlan,
    last_round: RoundView,
    sites: list[str],
    rounds: int,
    workdir: Path,
    dataset: FederatedDataset,
    batch_sizes: dict[str, int],
    flower_run_id: int,
    dp_options: DemoDpOptions | None,
    dp_plans: dict[str, SiteDpPlan] | None,
) -> dict[str, object]:
    """Score the federated model on the global test set (the union of the sites' test sets)
    next to each site alone, with DP at the run's ε and without, and print the comparison."""
    import os
    import time

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from fedseal.client.adapter_model import build_adapter_model
    from fedseal.client.site_service import derive_seed, resolve_device
    from fedseal.demo.baseline import federated_score, load_site_inputs, train_solo

    torch.set_num_threads(2)
    device = resolve_device("auto")
    metric = dataset.primary_metric
    state_root = workdir / "state"
    _model, tokenizer = build_adapter_model(plan, device)
    inputs = {
        site: load_site_inputs(plan, dataset.sites[site], state_root / site, device, tokenizer)
        for site in sites
    }
    tests = [inputs[site].test for site in sites]
    holder = next(
        (
            c.site
            for c in last_round.contributions
            if c.site in sites and c.adapter_digest == last_round.global_digest
        ),
        sites[0],
    )
    federated = federated_score(
        plan, state_root / holder, flower_run_id, last_round.global_digest or "", tests, device
    )
    runs = _solo_runs(sites, dp_plans)
    steps = plan.steps * rounds
    say(
        f"training each site alone for comparison ({len(runs)} models, {rounds} rounds x "
        f"{plan.steps} steps each, the federation's batch and learning rate) ..."
    )
    solo: dict[str, dict[str, dict[str, object]]] = {}
    for index, (site, dp) in enumerate(runs, start=1):
        started = time.perf_counter()
        label = f"{site} alone ({'DP' if dp else 'no DP'})"
        score = train_solo(
            plan=plan,
            site=inputs[site],
            tests=tests,
            rounds=rounds,
            batch_size=batch_sizes[site],
            seed=derive_seed(plan.seed, site, "solo"),
            device=device,
            dp=dp,
        )
        solo.setdefault(site, {})["dp" if dp else "no_dp"] = {
            "accuracy": score.accuracy,
            "auc": score.auc,
            "noise_multiplier": score.noise_multiplier,
            "seconds": score.seconds,
        }
        say(f"  [{index}/{len(runs)}] {label}: {time.perf_counter() - started:.1f} s")

    federated_value = federated.auc if metric == "auc" else federated.accuracy
    verdicts = _print_verdicts(metric, federated_value, federated.n, solo, sites, dp_options)
    return {
        "metric": metric,
        "federated": federated_value,
        "federated_dp": dp_plans is not None,
        "global_test_records": federated.n,
        "solo": solo,
        "steps_alone": steps,
        "beats_every_site_alone": verdicts,
    }


def _solo_runs(
    sites: list[str], dp_plans: dict[str, SiteDpPlan] | None
) -> list[tuple[str, SoloDp | None]]:
    """Which models to train alone: each site with DP at its ε of this run (unless --no-dp),
    then each site without DP."""
    from fedseal.demo.baseline import SoloDp

    runs: list[tuple[str, SoloDp | None]] = []
    if dp_plans is not None:
        for site in sites:
            dp = dp_plans[site]
            runs.append(
                (
                    site,
                    SoloDp(
                        dp.this_run,
                        dp.delta,
                        dp.options.max_grad_norm,
                        str(dp.options.accountant),
                    ),
                )
            )
    return runs + [(site, None) for site in sites]


def _print_verdicts(
    metric: str,
    federated_value: float | None,
    records: int,
    solo: dict[str, dict[str, dict[str, object]]],
    sites: list[str],
    dp_options: DemoDpOptions | None,
) -> dict[str, bool]:
    """Print the federated model's score, each site's alone, and whether the federated model
    beats every site alone (with DP at the same ε, and without DP); returns the verdicts."""

    def value(result: dict[str, object]) -> float:
        found = result[metric]
        return float(found) if isinstance(found, int | float) else float("nan")

    print(
        f"\nscore on the global test set ({metric}; the union of the {len(sites)} sites' test "
        f"sets, {records} records):",
        flush=True,
    )
    federated_dp = dp_options is not None
    dp_label = "" if dp_options is None else f", ε ≤ {dp_options.epsilon:g}"
    subject = "the federated model (DP)" if federated_dp else "the federated model"
    fed_name = "federated (all sites" + (", DP" if federated_dp else "") + ")"
    print(f"  {fed_name:<34} {_score(federated_value)}", flush=True)
    verdicts: dict[str, bool] = {}
    for kind, title in (("dp", f"DP{dp_label}"), ("no_dp", "no DP")):
        scores = {site: solo[site][kind] for site in sites if kind in solo[site]}
        if not scores:
            continue
        for site, result in scores.items():
            print(f"  {site + ' alone (' + title + ')':<34} {_score(value(result))}", flush=True)
        best = max(value(r) for r in scores.values())
        verdicts[kind] = federated_value is not None and federated_value > best
    for kind, title in (("dp", "with DP at the same ε"), ("no_dp", "(no DP)")):
        if kind in verdicts:
            verdict = "beats" if verdicts[kind] else "does NOT beat"
            print(f"  {subject} {verdict} every site trained alone {title}", flush=True)
    print(flush=True)
    return verdicts


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
