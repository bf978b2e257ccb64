"""Noise calibration for a target ε that counts what the site has already spent.

Opacus' `get_noise_multiplier` assumes a fresh accountant. A site that has trained before must
instead find σ such that its WHOLE history followed by the run's planned steps reaches the target:
a bisection over σ (ε falls as σ grows) with the history prepended to every evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import epsilon_of
from fedseal.privacy.events import DpEvent

from .accountant_store import AccountantStore
from .errors import CalibrationError
from .settings import MAX_NOISE_MULTIPLIER, DpSettings

__all__ = ["MIN_NOISE_MULTIPLIER", "calibrate_noise", "noise_for_run"]

MIN_NOISE_MULTIPLIER = 0.05
"""Smallest σ the search tries; below it one step costs far more than any sensible budget."""


def calibrate_noise(
    history: Sequence[DpEvent],
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: Accountant = Accountant.RDP,
    rel_tolerance: float = 0.002,
) -> float:
    """The smallest σ (within `rel_tolerance`) at which `history` + `steps` at (σ, q) stays at
    or below `target_epsilon`.

    The returned σ always meets the target (the search keeps the upper end). Raises
    `CalibrationError` when the history alone already reaches the target, or when even
    σ = 1000 does not get there.
    """
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ValueError(f"target_epsilon must be finite and > 0, got {target_epsilon}")
    if not 0 < rel_tolerance < 1:
        raise ValueError("rel_tolerance must be in (0, 1)")
    DpEvent(1.0, sample_rate, steps)  # validates q and steps
    past = list(history)

    def eps(sigma: float) -> float:
        return epsilon_of([*past, DpEvent(sigma, sample_rate, steps)], delta, accountant)

    spent = epsilon_of(past, delta, accountant)
    if spent >= target_epsilon:
        raise CalibrationError(
            f"target ε = {target_epsilon:g} is already spent on this site's data "
            f"(ε = {spent:.4g} at δ = {delta:.3g}); raise dp.target_epsilon (at most dp.epsilon)"
        )
    high = 1.0
    while eps(high) > target_epsilon:
        if high >= MAX_NOISE_MULTIPLIER:
            raise CalibrationError(
                f"target ε = {target_epsilon:g} is unreachable for {steps} steps at q = "
                f"{sample_rate:.3g}: even σ = {MAX_NOISE_MULTIPLIER:g} reaches "
                f"ε = {eps(MAX_NOISE_MULTIPLIER):.4g} (already spent {spent:.4g})"
            )
        high = min(high * 2, MAX_NOISE_MULTIPLIER)
    low = high / 2
    while eps(low) <= target_epsilon:
        if low <= MIN_NOISE_MULTIPLIER:
            return MIN_NOISE_MULTIPLIER
        high, low = low, max(low / 2, MIN_NOISE_MULTIPLIER)
    while high / low > 1 + rel_tolerance:
        middle = math.sqrt(high * low)
        if eps(middle) <= target_epsilon:
            high = middle
        else:
            low = middle
    return high


def noise_for_run(
    store: AccountantStore,
    settings: DpSettings,
    *,
    run_id: int,
    sample_rate: float,
    steps_per_round: int,
    rounds_remaining: int,
) -> float:
    """The σ this run trains with: the configured one, or one calibrated ONCE per run.

    With `target_epsilon`, the first call of a run calibrates σ for `rounds_remaining` rounds of
    `steps_per_round` steps after the site's whole history and keeps it in the store, so every
    later round (and a restarted site) uses the same σ.
    """
    if settings.noise_multiplier is not None:
        return settings.noise_multiplier
    kept = store.run_noise(run_id)
    if kept is not None:
        return kept
    if settings.target_epsilon is None:
        raise ValueError("settings have neither noise_multiplier nor target_epsilon")
    if isinstance(rounds_remaining, bool) or not isinstance(rounds_remaining, int):
        raise TypeError("rounds_remaining must be an int")
    if rounds_remaining < 1:
        raise ValueError(f"rounds_remaining must be >= 1, got {rounds_remaining}")
    sigma = calibrate_noise(
        store.history,
        target_epsilon=settings.target_epsilon,
        delta=settings.require_delta(),
        sample_rate=sample_rate,
        steps=steps_per_round * rounds_remaining,
        accountant=settings.accountant,
    )
    return store.set_run_noise(run_id, sigma)
