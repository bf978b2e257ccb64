"""Each demo site's `[dp]` table for one fl-demo run, from the operator's per-run ε.

The operator thinks in "ε this run"; a site config thinks in cumulative ε, because the site's
accountant history (in its state directory) spans every run on its data and survives between
fl-demo invocations on the same workdir. So the cumulative target written for a site is
min(budget, already spent + ε this run), with "already spent" read from the site's own
accountant store at the δ the site will use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedseal.client.dp.settings import default_delta
from fedseal.privacy.accountant_kind import Accountant

__all__ = ["DemoDpOptions", "SiteDpPlan", "plan_site_dp"]


@dataclass(frozen=True)
class DemoDpOptions:
    """fl-demo's DP options, already validated: the same for every site."""

    epsilon: float
    """ε each site may spend in this run."""
    budget: float
    """Each site's lifetime budget: every run on its data together."""
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    """A fixed σ; None lets each site calibrate σ once for the run."""
    delta: float | None = None
    """None: the site's default, min(1e-5, 1/(10 n))."""
    accountant: Accountant = Accountant.PRV
    """Calibrates σ and is recorded with every ledger entry (fl-audit recomputes with it)."""


@dataclass(frozen=True)
class SiteDpPlan:
    """What one site may spend in this run, and the `[dp]` table that tells it so."""

    site: str
    num_records: int
    delta: float
    spent: float
    """ε the site had already spent (all earlier runs), at `delta`."""
    options: DemoDpOptions

    @property
    def target(self) -> float:
        """The cumulative ε the site may have spent when this run ends."""
        return min(self.options.budget, self.spent + self.options.epsilon)

    @property
    def this_run(self) -> float:
        """ε this run may add (0 when the budget is already spent)."""
        return max(0.0, self.target - self.spent)

    @property
    def exhausted(self) -> bool:
        """Nothing left: the site will decline every round of the run."""
        return self.spent >= self.options.budget

    def table(self) -> dict[str, Any]:
        """The site config's `[dp]` table.

        With a calibrated σ the run's cap is `target_epsilon` and `epsilon` stays the lifetime
        budget. A fixed σ has no target, so the only cap a site enforces is `epsilon`: it is set
        to the cumulative cap of this run (never above the lifetime budget), so that "ε ≤ E
        this run" holds in both modes.
        """
        options = self.options
        table: dict[str, Any]
        if options.noise_multiplier is None:
            table = {"epsilon": options.budget, "target_epsilon": self.target}
        else:
            table = {"epsilon": self.target, "noise_multiplier": options.noise_multiplier}
        table["max_grad_norm"] = options.max_grad_norm
        table["accountant"] = str(options.accountant)
        if options.delta is not None:
            table["delta"] = options.delta
        return table

    def describe(self) -> str:
        """One line for the operator, printed before the run starts."""
        sigma = (
            "σ calibrated by the site"
            if self.options.noise_multiplier is None
            else f"σ = {self.options.noise_multiplier:g} fixed"
        )
        return (
            f"{self.site}: DP ε ≤ {self.this_run:.3g} this run (spent {self.spent:.3g} of budget "
            f"{self.options.budget:g} so far), δ = {self.delta:.3g}, "
            f"C = {self.options.max_grad_norm:g}, {sigma}, {self.options.accountant} accountant"
        )


def plan_site_dp(
    site: str, state_dir: Path, num_records: int, options: DemoDpOptions
) -> SiteDpPlan:
    """The site's plan for this run, reading its accountant history from `state_dir`.

    A site that never trained has no accountant file and has spent nothing; opening the store
    creates nothing. A file that cannot be read raises `AccountantStoreError` (never treated as
    "nothing spent": that would reset the budget).
    """
    from fedseal.client.dp.accountant_store import AccountantStore

    delta = options.delta if options.delta is not None else default_delta(num_records)
    spent = AccountantStore.open(state_dir).spent_epsilon(delta)
    return SiteDpPlan(site, num_records, delta, spent, options)
