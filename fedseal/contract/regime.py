"""The training regime: which adapter trains, and the public defaults it trains with.

Shared by fl-demo and `fl-coordinator start-run`; nothing here imports torch (fl-demo resolves
`--adapter auto` itself: the coordinator never imports torch).

The defaults were chosen on the sites' validation records (never on the global test set) with
`bench/bench_dp.py tune`, and are fixed here as public settings: a site that tuned them on its
own records would spend privacy that no ledger entry records. docs/privacy.md ("The training
regime") gives the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fedseal.contract.run_plan import AdapterKind

__all__ = ["REGIMES", "SCENARIO_REGIMES", "Regime", "regime_for", "site_batch_sizes"]


@dataclass(frozen=True)
class Regime:
    """Rounds, local steps, learning rate, the largest expected batch and the secure modes'
    per-coordinate update clip for one adapter kind."""

    adapter: AdapterKind
    rounds: int
    steps: int
    learning_rate: float
    batch_size: int
    clip: float
    description: str


REGIMES: dict[AdapterKind, Regime] = {
    AdapterKind.HEAD: Regime(
        adapter=AdapterKind.HEAD,
        rounds=5,
        steps=60,
        learning_rate=0.1,
        batch_size=1024,
        clip=16.0,  # 60 Adam steps at 0.1 move a coordinate by up to about 6: never clipped
        description="a linear head over the frozen MiniLM's cached sentence embeddings",
    ),
    AdapterKind.LORA: Regime(
        adapter=AdapterKind.LORA,
        rounds=5,
        steps=20,
        learning_rate=0.01,
        batch_size=256,
        clip=0.5,
        description="LoRA (r=8, query and value) and the classification head, through MiniLM",
    ),
}


# Where a scenario's records call for another setting of the same adapter. Hospitals hold 30,000 /
# 13,416 / 6,000 training records: the noise ε = 1 needs shrinks against batches of 3,000, and few
# large steps beat many small ones (validation grid: docs/benchmarks.md, "The DP training regime").
# Banks and heart hold a few hundred to two thousand records: their validation splits cap the batch
# at 14-250, where 5 x 10 steps is too few (banks at ε = 1: AUC 0.61 against 0.68 with 5 x 60).
SCENARIO_REGIMES: dict[tuple[AdapterKind, str], Regime] = {
    # the head adapter's own clip, 16, holds: 10 Adam steps at 0.2 move a coordinate by up to 2
    (AdapterKind.HEAD, "hospitals"): replace(
        REGIMES[AdapterKind.HEAD], steps=10, learning_rate=0.2, batch_size=3000
    ),
}


def regime_for(adapter: AdapterKind, scenario: str | None = None) -> Regime:
    """The public defaults for `adapter` on `scenario` (the adapter's own where the scenario has
    no setting of its own, or for a site's own CSV records)."""
    return SCENARIO_REGIMES.get((adapter, scenario or ""), REGIMES[adapter])


def site_batch_sizes(largest: int, validation_sizes: dict[str, int]) -> dict[str, int]:
    """Each site's expected batch: `largest`, capped at the site's validation records (a site
    refuses to train with DP on a batch larger than what it holds out to validate on)."""
    return {site: max(1, min(largest, n)) for site, n in validation_sizes.items()}
