"""`plain` mode: FedAvg in the clear (a baseline and a debugging aid, not for production).

The coordinator sees every update. Updates are summed as they arrive and are checked, then
dropped (`uploads`), so memory holds one running sum whatever the number of sites.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.serverapp import Grid

from fedseal.contract.limits import ReplyLimits, plain_upload_bound
from fedseal.contract.message_fields import field_bytes
from fedseal.contract.update_codec import InvalidPayload, decode_update, encode_aggregate
from fedseal.contract.wire import Key, MessageType
from fedseal.coordinator.messaging import SiteReply, stream_stage
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
from fedseal.coordinator.protocols.uploads import SumsByStart, UploadOutcome

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
        self._size: int | None = None  # the update length of the round being aggregated

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
        stream = stream_stage(
            grid,
            MessageType.TRAIN,
            configs,
            request.nodes,
            request.timeout_s,
            self.limits.for_message_type(MessageType.TRAIN),
        )
        sums = SumsByStart(request.expected_digest, RunningSum)
        contributions: dict[str, SiteContribution] = {}
        outcomes: list[UploadOutcome] = []
        self._size = self.adapter_size
        for reply in stream:  # each update is summed as it arrives, then dropped
            sums.vote(str(reply.result.get(Key.START_DIGEST, "")))
            if Key.DECLINED in reply.result:
                contributions[reply.site] = declined_contribution(reply.site, reply.result)
                continue
            outcomes.append(self._take_update(reply, sums, request.round_number))
        for site in stream.missing:
            contributions[site] = SiteContribution(
                site, ContributionStatus.DROPPED, error="no reply"
            )
        for site, reason in stream.failed.items():
            contributions[site] = SiteContribution(site, ContributionStatus.FAILED, error=reason)
        start_digest = sums.start_digest()
        for outcome in outcomes:
            record = outcome.settle(start_digest, "update rejected")
            if record.status is ContributionStatus.FAILED:
                log.warning(
                    "round %d: rejecting %s's update: %s",
                    request.round_number,
                    record.site,
                    record.error,
                )
            contributions[record.site] = record
        contributions = dict(sorted(contributions.items()))  # not in the order of arrival

        running = sums.total()
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

    def _take_update(
        self, reply: SiteReply, sums: SumsByStart[RunningSum], round_number: int
    ) -> UploadOutcome:
        """Check one train reply and add its weighted update to the sum of its start adapter.

        The privacy statement is read first and kept even when the update is refused (the site
        has spent the budget).
        """
        site, result = reply.site, reply.result
        privacy = digest = None
        try:
            privacy = privacy_report(result)
            if int(result[Key.ROUND]) != round_number:
                raise InvalidPayload("reply is for another round")
            digest = str(result[Key.START_DIGEST])
            running = sums.sum_for(digest)
            weight = int(result[Key.NUM_EXAMPLES])
            if not 0 < weight <= MAX_WEIGHT:
                raise InvalidPayload(f"number of examples outside 1..{MAX_WEIGHT}")
            payload = field_bytes(result, Key.UPDATE, max_len=self.limits.upload)
            update_digest = received_update_digest(payload, privacy)
            if self._size is None:  # the adapter size was not reported: the first update's
                self._size = len(payload) // 4
            update = decode_update(payload, self._size)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            return UploadOutcome.refused(site, digest, f"update rejected: {exc}", privacy)
        running.add(update, weight)
        return UploadOutcome.contributed(
            reply, digest, num_examples=weight, privacy=privacy, update_digest=update_digest
        )
