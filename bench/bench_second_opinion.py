"""fl-audit's second opinion: Opacus' ε against dp-accounting's, and what each costs.

Two parts:

* ``demo``: the ledger a default ``fl-demo`` run writes (hospitals, 3 sites, head adapter,
  5 rounds x 10 steps, batch 3,000 capped at each site's validation records, every site
  calibrating σ with PRV for ε = 1 over the run at its default δ). Per site and round: the
  cumulative ε by Opacus' PRV (what the site records) and RDP, and by dp-accounting's RDP
  (at Opacus' orders) and PLD (pessimistic), the PLD floor the audit holds figures to, and
  the seconds each evaluation took. No training is run: the ledger's figures depend only on
  (σ, q, steps, δ).
* ``grid``: (q, σ, steps) over q 0.001-0.5, σ 0.6-10, 1-10,000 steps at δ = 1e-5: the largest
  gap between Opacus' and dp-accounting's RDP figures, and whether any Opacus figure (RDP or
  PRV) falls below the PLD floor.

Usage:
  python bench/bench_second_opinion.py demo|grid|all [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

from fedseal.client.dp.calibration import calibrate_noise
from fedseal.client.dp.settings import default_delta
from fedseal.contract.regime import regime_for, site_batch_sizes
from fedseal.contract.run_plan import AdapterKind
from fedseal.models.data.registry import load_federated_dataset
from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import epsilon_of
from fedseal.privacy.events import DpEvent
from fedseal.privacy.second_opinion import second_opinion


def _timed(function: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started


def demo() -> list[dict[str, Any]]:
    regime = regime_for(AdapterKind.HEAD, "hospitals")
    dataset = load_federated_dataset("hospitals", 3, 0)
    sites = sorted(dataset.sites)
    batches = site_batch_sizes(
        regime.batch_size, {site: len(dataset.sites[site].validation) for site in sites}
    )
    rows = []
    for site in sites:
        n = len(dataset.sites[site].train)
        q, delta = min(1.0, batches[site] / n), default_delta(n)
        sigma = calibrate_noise(
            [],
            target_epsilon=1.0,
            delta=delta,
            sample_rate=q,
            steps=regime.rounds * regime.steps,
            accountant=Accountant.PRV,
        )
        history: list[DpEvent] = []
        for number in range(1, regime.rounds + 1):
            history.append(DpEvent(sigma, q, regime.steps))
            prv, prv_s = _timed(epsilon_of, history, delta, Accountant.PRV)
            rdp, rdp_s = _timed(epsilon_of, history, delta, Accountant.RDP)
            opinion, opinion_s = _timed(second_opinion, history, delta, [prv, rdp])
            row = {
                "site": site,
                "records": n,
                "q": q,
                "sigma": sigma,
                "delta": delta,
                "round": number,
                "opacus_prv": prv,
                "opacus_rdp": rdp,
                "dp_accounting_rdp": opinion.rdp,
                "dp_accounting_pld": opinion.pld,
                "pld_interval": opinion.pld_interval,
                "pld_floor": opinion.floor,
                "prv_agrees": opinion.agrees(Accountant.PRV, prv),
                "rdp_agrees": opinion.agrees(Accountant.RDP, rdp),
                "seconds": {"prv": prv_s, "rdp": rdp_s, "dp_accounting": opinion_s},
            }
            rows.append(row)
            print(
                f"{site} n={n} q={q:.4f} σ={sigma:.4f} δ={delta:g} round {number}: "
                f"Opacus PRV {prv:.4f} RDP {rdp:.4f} | dp-accounting RDP {opinion.rdp:.4f} "
                f"PLD {opinion.pld:.4f} (grid {opinion.pld_interval:g}, floor {opinion.floor:.4f})"
                f" | agree PRV {row['prv_agrees']} RDP {row['rdp_agrees']} | s: PRV {prv_s:.2f} "
                f"RDP {rdp_s:.3f} dp-accounting {opinion_s:.2f}",
                flush=True,
            )
    return rows


def grid() -> dict[str, Any]:
    delta = 1e-5
    rdp_gaps, below_floor = [], []
    for q, sigma, steps in itertools.product(
        (0.001, 0.01, 0.05, 0.2, 0.5), (0.6, 1.0, 3.0, 10.0), (1, 50, 1000, 10_000)
    ):
        events = [DpEvent(sigma, q, steps)]
        rdp = epsilon_of(events, delta, Accountant.RDP)
        if rdp > 60:
            continue
        prv = epsilon_of(events, delta, Accountant.PRV)
        opinion = second_opinion(events, delta, [rdp, prv])
        rdp_gaps.append(((opinion.rdp - rdp) / rdp, q, sigma, steps, rdp))
        for kind, figure in (("rdp", rdp), ("prv", prv)):
            if figure < opinion.floor:
                below_floor.append((kind, q, sigma, steps, figure, opinion.pld))
    rdp_gaps.sort(reverse=True)
    summary = {
        "cases": len(rdp_gaps),
        "largest_rdp_gaps": rdp_gaps[:5],
        "largest_rdp_gap_up_to_eps_20": max(g for g in rdp_gaps if g[4] <= 20),
        "smallest_rdp_gap": min(rdp_gaps),
        "figures_below_floor": below_floor,
    }
    print(json.dumps(summary, indent=1), flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("demo", "grid", "all"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    if args.part in ("demo", "all"):
        figures["demo"] = demo()
    if args.part in ("grid", "all"):
        figures["grid"] = grid()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
