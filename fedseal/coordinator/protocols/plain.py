"""`plain` mode: FedAvg in the clear (a baseline and a debugging aid, not for production).

The coordinator sees every update. Updates are summed as they are checked, so memory holds one
running sum whatever the number of sites.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
from flwr.serverapp import Grid

from fedseal.coordinator.messaging import send_stage
from fedseal.coordinator.protocols.base import (
    AggregationProtocol,
    AggregationResult,
    ContributionStatus,
    RoundRequest,
    RunContext,
    SiteContribution,
    declined_contribution,
    privacy_report,
    received_update_digest,
)
from fedseal.limits import ReplyLimits, plain_upload_bound
from fedseal.message_fields import field_bytes
from fedseal.update_codec import InvalidPayload, decode_update, encode_aggregate
from fedseal.wire import Key, MessageType

__all__ = ["PlainFedAvg", "RunningSum"]

log = logging.getLogger("fedseal.coordinator")

MAX_WEIGHT = 2**40
"""Largest number of examples one site may report (the aggregate's weight is 64-bit)."""


class RunningSum:
    """Σ n_i·Δ_i and Σ n_i, in float64, one update at a time."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.weight = 0

    def add(self, weighted_update: np.ndarray, weight: int) -> None:
        if self.total is None:
            self.total = np.zeros(weighted_update.shape, dtype=np.float64)
        self.total += weighted_update
        self.weight += weight


class PlainFedAvg(AggregationProtocol):
    """Weighted FedAvg over plaintext float32 updates."""

    mode = "plain"

    def __init__(self) -> None:
        self.limits = ReplyLimits()
        self.adapter_size: int | None = None

    def prepare_run(self, grid: Grid, run: RunContext) -> None:
        """Size limits for the run: an update is 4 bytes per adapter value, plus its statement."""
        sizes = {getattr(info, "adapter_size", None) for info in run.sites.values()}
        self.adapter_size = sizes.pop() if len(sizes) == 1 and None not in sizes else None
        upload = run.max_upload_bytes or (
            plain_upload_bound(self.adapter_size) if self.adapter_size else ReplyLimits().upload
        )
        self.limits = ReplyLimits(upload=upload, control=run.max_reply_bytes)

    def aggregate(
        self, grid: Grid, request: RoundRequest, min_contributors: int
    ) -> AggregationResult:
        configs = {}
        for site in request.sites:
            rounds, payloads = request.catchup.get(site, ([], []))
            configs[site] = {
                Key.RUN_ID: request.run_id,
                Key.ROUND: request.round_number,
                Key.MODE: self.mode,
                Key.EXPECTED_DIGEST: request.expected_digest or "",
                Key.CATCHUP_ROUNDS: [int(r) for r in rounds],
                Key.CATCHUP_PAYLOADS: list(payloads),
                **request.plan.to_config(),
            }
        stage = send_stage(
            grid,
            MessageType.TRAIN,
            configs,
            request.nodes,
            request.timeout_s,
            self.limits.for_message_type(MessageType.TRAIN),
        )

        contributions: dict[str, SiteContribution] = {}
        for site in stage.missing:
            contributions[site] = SiteContribution(
                site, ContributionStatus.DROPPED, error="no reply"
            )
        for site, reason in stage.failed.items():
            contributions[site] = SiteContribution(site, ContributionStatus.FAILED, error=reason)

        start_digest = request.expected_digest or _majority_digest(stage.replies.values())
        running = RunningSum()
        size: int | None = self.adapter_size
        for site, reply in sorted(stage.replies.items()):
            result = reply.result
            if Key.DECLINED in result:
                contributions[site] = declined_contribution(site, result)
                continue
            privacy = None
            try:
                privacy = privacy_report(result)  # kept even if the update is refused
                if int(result[Key.ROUND]) != request.round_number:
                    raise InvalidPayload("reply is for another round")
                if str(result[Key.START_DIGEST]) != start_digest:
                    raise InvalidPayload("trained from a different global adapter")
                weight = int(result[Key.NUM_EXAMPLES])
                if not 0 < weight <= MAX_WEIGHT:
                    raise InvalidPayload(f"number of examples outside 1..{MAX_WEIGHT}")
                payload = field_bytes(result, Key.UPDATE, max_len=self.limits.upload)
                digest = received_update_digest(payload, privacy)
                if size is None:
                    size = len(payload) // 4
                update = decode_update(payload, size)
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                log.warning("round %d: rejecting %s's update: %s", request.round_number, site, exc)
                contributions[site] = SiteContribution(
                    site,
                    ContributionStatus.FAILED,
                    error=f"update rejected: {exc}",
                    privacy=privacy,
                )
                continue
            running.add(update, weight)
            contributions[site] = SiteContribution(
                site,
                ContributionStatus.CONTRIBUTED,
                num_examples=weight,
                train_loss=reply.metrics.get(Key.TRAIN_LOSS),
                train_seconds=reply.metrics.get(Key.TRAIN_SECONDS),
                start_digest=start_digest,
                privacy=privacy,
                update_digest=digest,
            )
        contributed = sum(
            c.status is ContributionStatus.CONTRIBUTED for c in contributions.values()
        )
        if running.total is None or contributed < min_contributors:
            return AggregationResult(
                None,
                contributions,
                start_digest,
                error=f"{contributed} usable updates, fewer than the {min_contributors} required",
            )
        try:
            payload = encode_aggregate(running.total.astype(np.float32), running.weight)
        except InvalidPayload as exc:  # e.g. updates so large that their sum overflows float32
            return AggregationResult(None, contributions, start_digest, error=f"aggregate: {exc}")
        return AggregationResult(payload, contributions, start_digest)


def _majority_digest(replies) -> str | None:
    """In the first round the sites' seeded initial adapters must agree; most of them decide."""
    counts = Counter(str(r.result.get(Key.START_DIGEST, "")) for r in replies)
    if not counts:
        return None
    digest, _ = counts.most_common(1)[0]
    return digest
