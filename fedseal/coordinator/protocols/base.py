"""The seam between the round loop and an aggregation protocol."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from flwr.serverapp import Grid

from fedseal.coordinator.registry.statuses import ContributionStatus
from fedseal.run_plan import RunPlan

__all__ = [
    "AggregationProtocol",
    "AggregationResult",
    "ContributionStatus",
    "RoundRequest",
    "SiteContribution",
]


@dataclass(frozen=True)
class RoundRequest:
    """What the round loop asks a protocol to aggregate."""

    run_id: int
    round_number: int
    sites: Sequence[str]
    nodes: Mapping[str, int]
    plan: RunPlan
    timeout_s: float
    expected_digest: str | None
    catchup: Mapping[str, tuple[list[int], list[bytes]]] = field(default_factory=dict)


@dataclass(frozen=True)
class SiteContribution:
    """One sampled site's part in the round, for the registry."""

    site: str
    status: ContributionStatus
    num_examples: int | None = None
    train_loss: float | None = None
    train_seconds: float | None = None
    start_digest: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class AggregationResult:
    """The aggregate for the sites (None when the round cannot produce one) and who took part."""

    payload: bytes | None
    contributions: Mapping[str, SiteContribution]
    start_digest: str | None
    error: str | None = None

    @property
    def contributors(self) -> list[str]:
        return sorted(
            site
            for site, c in self.contributions.items()
            if c.status is ContributionStatus.CONTRIBUTED
        )


class AggregationProtocol(ABC):
    """Collects the sampled sites' updates for a round and produces the aggregate."""

    mode: ClassVar[str]

    @abstractmethod
    def aggregate(
        self, grid: Grid, request: RoundRequest, min_contributors: int
    ) -> AggregationResult:
        """Run the protocol's stages for one round."""
