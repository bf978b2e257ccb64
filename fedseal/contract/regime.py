"""The training regime: which adapter trains, and the public defaults it trains with.

Shared by fl-demo and `fl-coordinator start-run`; nothing here imports torch (fl-demo resolves
`--adapter auto` itself: the coordinator never imports torch).

The defaults were chosen on the sites' validation records (never on the global test set) with
`bench/bench_dp.py tune`, and are fixed here as public settings: a site that tuned them on its
own records would spend privacy that no ledger entry records. docs/privacy.md ("The training
regime") gives the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedseal.contract.run_plan import AdapterKind

__all__ = ["REGIMES", "Regime", "site_batch_sizes"]


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


def site_batch_sizes(largest: int, validation_sizes: dict[str, int]) -> dict[str, int]:
    """Each site's expected batch: `largest`, capped at the site's validation records (a site
    refuses to train with DP on a batch larger than what it holds out to validate on)."""
    return {site: max(1, min(largest, n)) for site, n in validation_sizes.items()}
