"""Aggregation protocols: how one round's updates become the aggregate the sites apply.

Each mode is one module behind `AggregationProtocol` (`plain`, `he`, `he_ss`); the encrypted
modes share the key ceremony (`ceremony`) and the record of who did what in a round's stages
(`tracker`). The run's mode is chosen once, recorded in the registry, and never silently
replaced by a weaker one.
"""

from fedseal.coordinator.protocols.base import (
    AggregationProtocol,
    AggregationResult,
    ContributionStatus,
    RoundRequest,
    RunContext,
    SiteContribution,
)
from fedseal.coordinator.protocols.he import HeAggregation
from fedseal.coordinator.protocols.he_ss import SecureAggregation
from fedseal.coordinator.protocols.plain import PlainFedAvg

__all__ = [
    "AggregationProtocol",
    "AggregationResult",
    "ContributionStatus",
    "HeAggregation",
    "PlainFedAvg",
    "RoundRequest",
    "RunContext",
    "SecureAggregation",
    "SiteContribution",
    "protocol_for_mode",
]


def protocol_for_mode(mode: str) -> AggregationProtocol:
    """The protocol implementation of a run's mode; unknown modes are an error, not a fallback."""
    protocols: dict[str, type[AggregationProtocol]] = {
        cls.mode: cls for cls in (PlainFedAvg, HeAggregation, SecureAggregation)
    }
    try:
        return protocols[mode]()
    except KeyError:
        raise ValueError(f"no aggregation protocol for mode {mode!r}") from None
