"""The seam between the round loop and an aggregation protocol."""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flwr.serverapp import Grid

from fedseal.contract.ledger_codec import STATEMENT_FIELDS
from fedseal.contract.limits import DEFAULT_CONTROL_BYTES
from fedseal.contract.run_plan import RunPlan
from fedseal.registry.statuses import ContributionStatus
from fedseal.secure_agg.params import SPARSE_ABOVE

__all__ = [
    "AggregationProtocol",
    "AggregationResult",
    "ContributionStatus",
    "RoundRequest",
    "RunContext",
    "SiteContribution",
    "declined_contribution",
    "privacy_report",
    "received_update_digest",
]

PRIVACY_FIELDS = tuple(
    name for name in STATEMENT_FIELDS if name not in ("site", "flower_run_id", "round_number")
)
"""What a site's signed statement gives the registry besides who, which run and which round (the
registry fills those in from what it knows, so a statement about another round cannot verify)."""


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
    catchup_fields: Mapping[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunContext:
    """What a protocol may need at run start: the sites, their enrolled keys, the limits.

    `run_id` is Flower's run id: unique across registries, it is what sites key their state by
    and what every signed protocol message is bound to.
    """

    run_id: int
    sites: Mapping[str, Any]  # name -> SiteInfo (node id, sizes)
    enrolled_keys: Mapping[str, bytes]
    clip: float
    timeout_s: float
    max_upload_bytes: int = 0
    """Largest train reply accepted; 0 derives it from the adapter size and the protocol."""
    max_reply_bytes: int = DEFAULT_CONTROL_BYTES
    """Largest reply accepted at every other stage (keys, signatures, metrics)."""
    sparse_above: int = SPARSE_ABOVE
    """he+ss above this many sites uses a SecAgg+ neighbour graph (`params.plan`)."""
    neighbours: int = 0
    """The neighbour graph's degree; 0 lets the planner choose it."""
    max_colluding: int = -1
    """Colluding sites every round withstands (threshold k > (n + c) / 2); -1: (n - 1) // 2."""
    key_rounds: int = 1
    """he+ss: rounds whose keys one advertise and share stage make at once (a key batch)."""


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
    privacy: Mapping[str, Any] | None = None  # the site's signed ledger statement, under DP
    update_digest: str | None = None  # SHA-256 of the update bytes the site sent
    clipped_coordinates: int | None = None  # clipped to the plan's bound before encoding


def privacy_report(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The signed privacy statement a train reply carries (None without DP), or a ValueError.

    Returns the keyword arguments of `Registry.record_privacy` beyond run, round and site:
    `PRIVACY_FIELDS` and `site_signature`. Only the shape is checked here; the registry checks
    the signature and the ranges when it records the entry.
    """
    from fedseal.contract.wire import Key

    if Key.PRIVACY not in result:
        return None
    try:
        statement = json.loads(str(result[Key.PRIVACY]))
    except ValueError:
        raise ValueError("privacy statement is not JSON") from None
    if not isinstance(statement, dict) or set(statement) != set(STATEMENT_FIELDS):
        raise ValueError(f"privacy statement must have exactly the fields {STATEMENT_FIELDS}")
    for key, value in statement.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError(f"privacy statement field {key} has an unusable value")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"privacy statement field {key} is not finite")
    signature = result.get(Key.PRIVACY_SIGNATURE)
    if not isinstance(signature, bytes | bytearray) or not signature:
        raise ValueError("privacy statement is not signed")
    report = {key: statement[key] for key in PRIVACY_FIELDS}
    report["site_signature"] = bytes(signature)
    return report


def received_update_digest(payload: bytes, privacy: Mapping[str, Any] | None) -> str:
    """SHA-256 of an update as received; a ValueError when the site's signed privacy statement
    commits to different bytes (its ledger entry must be about the update it really sent)."""
    from fedseal.contract.ledger_codec import update_digest

    digest = update_digest(payload)
    if privacy is not None and privacy["update_digest"] != digest:
        raise ValueError("the signed privacy statement is about another update")
    return digest


def declined_contribution(site: str, result: Mapping[str, Any]) -> SiteContribution:
    """A site that answered the train stage by declining (its privacy budget is spent)."""
    from fedseal.contract.wire import Key

    reason = str(result.get(Key.DECLINED, ""))[:500] or "declined"
    try:
        report = privacy_report(result)
    except ValueError as exc:
        return SiteContribution(site, ContributionStatus.FAILED, error=f"declined: {exc}")
    return SiteContribution(site, ContributionStatus.DECLINED, error=reason, privacy=report)


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

    def prepare_run(self, grid: Grid, run: RunContext) -> None:  # noqa: B027 - optional hook
        """Run-level set-up before the first round (e.g. a key ceremony); nothing by default."""

    def apply_fields(self, round_number: int, contributors: list[str], sampled: list[str]) -> dict:
        """Extra fields the sites need to apply this round's aggregate (and to catch up on it)."""
        return {}

    def round_sample(self, round_number: int) -> list[str] | None:
        """The sampled set round `round_number` must have (the sites whose keys an earlier
        stage made for it), or None to let the round loop sample."""
        return None

    @abstractmethod
    def aggregate(
        self, grid: Grid, request: RoundRequest, min_contributors: int
    ) -> AggregationResult:
        """Run the protocol's stages for one round."""
