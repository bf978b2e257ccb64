"""A site's differential-privacy settings: the `[dp]` table of its config, validated.

```toml
[dp]
epsilon = 3.0          # total budget for ALL runs on this site's data
delta = 1e-6           # optional; default min(1e-5, 1/(10 n)), n = the site's training records
max_grad_norm = 1.0    # per-example clipping norm
noise_multiplier = 1.1 # either a fixed σ ...
# target_epsilon = 2.0 # ... or the cumulative ε the planned rounds of a run should reach
accountant = "rdp"     # or "prv"
enabled = true
```

Everything is checked before anything trains, and each failure is one `DpConfigError` line naming
the file and the key. This module imports nothing heavy (the site's message relay parses the site
config); the one check that needs an accountant imports Opacus only when it runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fedseal.privacy.accountant_kind import Accountant

from .errors import DpConfigError

__all__ = [
    "DEFAULT_ACCOUNTANT",
    "DEFAULT_MAX_GRAD_NORM",
    "DELTA_CAP",
    "DP_KEYS",
    "MAX_NOISE_MULTIPLIER",
    "Accountant",
    "DpSettings",
    "default_delta",
    "parse_dp_section",
]


DEFAULT_ACCOUNTANT = Accountant.RDP
"""RDP: a closed-form upper bound, cheap, recomputable by anyone (see docs/privacy.md)."""

DEFAULT_MAX_GRAD_NORM = 1.0
DELTA_CAP = 1e-5
"""δ never defaults above this, however few records a site has."""

MAX_NOISE_MULTIPLIER = 1000.0
"""Largest σ a config may name or calibration may choose; beyond it the gradient is only noise."""

DP_KEYS = (
    "epsilon",
    "delta",
    "max_grad_norm",
    "noise_multiplier",
    "target_epsilon",
    "accountant",
    "enabled",
)


def default_delta(num_records: int) -> float:
    """min(1e-5, 1/(10 n)): well below 1/n, so "leak one whole record" is not a valid outcome."""
    if isinstance(num_records, bool) or not isinstance(num_records, int) or num_records < 1:
        raise ValueError(f"num_records must be an int >= 1, got {num_records!r}")
    return min(DELTA_CAP, 1.0 / (10 * num_records))


@dataclass(frozen=True)
class DpSettings:
    """One site's budget and mechanism. `delta` None means "derive from n" (see `resolved`).

    Exactly one of `noise_multiplier` (a fixed σ) and `target_epsilon` (the cumulative ε the
    site should have spent once a run's planned rounds are done; σ is then calibrated once for
    the run) is set.
    """

    epsilon: float
    delta: float | None = None
    max_grad_norm: float = DEFAULT_MAX_GRAD_NORM
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    accountant: Accountant = DEFAULT_ACCOUNTANT
    enabled: bool = True

    def __post_init__(self) -> None:
        problem = _first_problem(self)
        if problem is not None:
            raise DpConfigError(f"dp.{problem[0]} {problem[1]}")
        object.__setattr__(self, "accountant", Accountant(self.accountant))

    def require_delta(self) -> float:
        """δ, or an error when it was left to be derived from the number of records."""
        if self.delta is None:
            raise DpConfigError("dp.delta is not resolved yet: call resolved(num_records) first")
        return self.delta

    def resolved(self, num_records: int, batch_size: int | None = None) -> DpSettings:
        """These settings for a site with `num_records` records: δ filled in and checked < 1/n,
        and a noise level that could never fit the budget refused (see `parse_dp_section`)."""
        return _checked_for_records(self, num_records, batch_size, where="")


def parse_dp_section(
    table: dict[str, Any] | None,
    path: Path,
    num_records: int | None = None,
    *,
    batch_size: int | None = None,
) -> DpSettings | None:
    """Validate a site config's `[dp]` table; None when the file has no `[dp]` section.

    With `num_records` (the site's training records) δ is resolved and the noise level is
    checked against the budget: a config is refused when ONE step at the configured σ
    (for `target_epsilon`: at the largest σ calibration may pick, 1000) and the smallest
    sample rate the site could use, q = 1/n, already costs more than the budget. With
    `batch_size` as well, the site's real q = min(1, batch_size/n) is used instead, which
    refuses more configs that could never train a single step.
    """
    where = f"{path}: "
    if table is None:
        return None
    if not isinstance(table, dict):
        raise DpConfigError(f"{where}[dp] must be a table")
    unknown = sorted(set(table) - set(DP_KEYS))
    if unknown:
        raise DpConfigError(
            f"{where}dp.{unknown[0]} is not a known setting in [dp] (known: {', '.join(DP_KEYS)})"
        )
    if "epsilon" not in table:
        raise DpConfigError(f"{where}dp.epsilon is missing (the total privacy budget, > 0)")
    values: dict[str, Any] = {}
    for key in ("epsilon", "delta", "max_grad_norm", "noise_multiplier", "target_epsilon"):
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DpConfigError(f"{where}dp.{key} must be a number, got {value!r}")
            values[key] = float(value)
    if "accountant" in table:
        value = table["accountant"]
        if value not in tuple(Accountant):
            allowed = ", ".join(f'"{a.value}"' for a in Accountant)
            raise DpConfigError(f"{where}dp.accountant must be {allowed}, got {value!r}")
        values["accountant"] = Accountant(value)
    if "enabled" in table:
        if not isinstance(table["enabled"], bool):
            raise DpConfigError(f"{where}dp.enabled must be true or false")
        values["enabled"] = table["enabled"]
    try:
        settings = DpSettings(**values)
    except DpConfigError as exc:
        raise DpConfigError(f"{where}{exc}") from None
    if num_records is None:
        return settings
    return _checked_for_records(settings, num_records, batch_size, where=where)


def _first_problem(s: DpSettings) -> tuple[str, str] | None:
    """(key, what is wrong) for the first invalid field, or None."""
    for key in ("epsilon", "delta", "max_grad_norm", "noise_multiplier", "target_epsilon"):
        value = getattr(s, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return key, f"must be a number, got {value!r}"
        if not math.isfinite(value):
            return key, f"must be finite, got {value}"
    if s.epsilon is None or s.epsilon <= 0:
        return "epsilon", f"must be > 0 (the total privacy budget), got {s.epsilon}"
    if s.delta is not None and not 0 < s.delta < 1:
        return "delta", f"must be in (0, 1), got {s.delta}"
    if s.max_grad_norm <= 0:
        return (
            "max_grad_norm",
            f"must be > 0 (the per-example clipping norm), got {s.max_grad_norm}",
        )
    if (s.noise_multiplier is None) == (s.target_epsilon is None):
        return "noise_multiplier", "or dp.target_epsilon must be set, exactly one of the two"
    if s.noise_multiplier is not None and not 0 < s.noise_multiplier <= MAX_NOISE_MULTIPLIER:
        return (
            "noise_multiplier",
            f"must be in (0, {MAX_NOISE_MULTIPLIER:g}], got {s.noise_multiplier}",
        )
    if s.target_epsilon is not None and not 0 < s.target_epsilon <= s.epsilon:
        return (
            "target_epsilon",
            f"must be > 0 and at most dp.epsilon = {s.epsilon:g}, got {s.target_epsilon}",
        )
    if s.accountant not in tuple(Accountant):
        return "accountant", f'must be "rdp" or "prv", got {s.accountant!r}'
    if not isinstance(s.enabled, bool):
        return "enabled", "must be true or false"
    return None


def _checked_for_records(
    settings: DpSettings, num_records: int, batch_size: int | None, *, where: str
) -> DpSettings:
    if isinstance(num_records, bool) or not isinstance(num_records, int) or num_records < 1:
        raise DpConfigError(f"{where}the site has no training records to protect")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    delta = settings.delta
    if delta is None:
        delta = default_delta(num_records)
    elif delta >= 1.0 / num_records:
        raise DpConfigError(
            f"{where}dp.delta = {delta:g} must be below 1/n = {1.0 / num_records:.3g} "
            f"for the site's {num_records} records"
        )
    resolved = replace(settings, delta=delta)
    if not resolved.enabled:
        return resolved
    sample_rate = 1.0 / num_records if batch_size is None else min(1.0, batch_size / num_records)
    sigma = resolved.noise_multiplier or MAX_NOISE_MULTIPLIER
    from fedseal.privacy.accounting import epsilon_of
    from fedseal.privacy.events import DpEvent

    cheapest = epsilon_of([DpEvent(sigma, sample_rate, 1)], delta, resolved.accountant)
    limit = resolved.epsilon if resolved.target_epsilon is None else resolved.target_epsilon
    if cheapest > limit:
        key = "noise_multiplier" if resolved.noise_multiplier is not None else "target_epsilon"
        raise DpConfigError(
            f"{where}dp.{key} could never fit the budget: one step at σ = {sigma:g}, "
            f"q = {sample_rate:.3g} already costs ε = {cheapest:.3g} > {limit:g} "
            f"(δ = {delta:.3g}, {resolved.accountant} accountant)"
        )
    return resolved
