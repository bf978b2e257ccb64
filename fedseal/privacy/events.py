"""One DP-SGD mechanism event: `steps` noisy steps at noise multiplier σ and sample rate q.

Events are what the accountant composes. They are plain numbers so that they travel as JSON to the
site's state directory and to the coordinator's ledger, and so that an auditor can recompute ε
from them with nothing but Opacus.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DpEvent", "merge_events"]


@dataclass(frozen=True)
class DpEvent:
    """`steps` Poisson-subsampled Gaussian steps with noise multiplier σ and sample rate q."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        sigma, q, steps = self.noise_multiplier, self.sample_rate, self.steps
        for name, value in (("noise_multiplier", sigma), ("sample_rate", q)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a number, got {value!r}")
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
            raise TypeError(f"steps must be an int, got {steps!r}")
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"noise_multiplier must be finite and > 0, got {sigma}")
        if not (math.isfinite(q) and 0 < q <= 1):
            raise ValueError(f"sample_rate must be in (0, 1], got {q}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        object.__setattr__(self, "noise_multiplier", float(sigma))
        object.__setattr__(self, "sample_rate", float(q))
        object.__setattr__(self, "steps", int(steps))

    def same_mechanism(self, other: DpEvent) -> bool:
        """True when both events have the same σ and q (their steps can then be merged)."""
        return (
            self.noise_multiplier == other.noise_multiplier
            and self.sample_rate == other.sample_rate
        )

    def as_tuple(self) -> tuple[float, float, int]:
        """(σ, q, steps): one entry of an Opacus accountant's `history`."""
        return (self.noise_multiplier, self.sample_rate, self.steps)

    def to_json(self) -> dict[str, float | int]:
        return {
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DpEvent:
        return cls(
            noise_multiplier=data["noise_multiplier"],
            sample_rate=data["sample_rate"],
            steps=data["steps"],
        )


def merge_events(events: Iterable[DpEvent]) -> list[DpEvent]:
    """Consecutive events with the same σ and q merged into one, as Opacus' accountants do.

    Composition only depends on the multiset of steps, and the cost of a PRV (and RDP)
    evaluation grows with the number of distinct entries, so histories are kept merged.
    """
    merged: list[DpEvent] = []
    for event in events:
        if merged and merged[-1].same_mechanism(event):
            last = merged.pop()
            event = DpEvent(last.noise_multiplier, last.sample_rate, last.steps + event.steps)
        merged.append(event)
    return merged
