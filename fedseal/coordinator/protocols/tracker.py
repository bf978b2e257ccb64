"""Who dropped, failed or contributed across the stages of one encrypted round (`he`, `he+ss`).

Every stage goes through the tracker: it sends the stage's messages, records the sites that
failed or never answered, and in the end gives each sampled site exactly one record for the
registry. A problem after the upload stage is logged but the site stays counted: its upload is
already in the sum.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from flwr.serverapp import Grid

from fedseal.contract.limits import ReplyLimits
from fedseal.contract.message_fields import field_bytes
from fedseal.coordinator.messaging import StageResult, StageStream, stream_stage
from fedseal.coordinator.protocols.base import (
    AggregationResult,
    ContributionStatus,
    RoundRequest,
    SiteContribution,
    declined_contribution,
)
from fedseal.secure_agg.errors import SecureAggError
from fedseal.secure_agg.messages import Signed

__all__ = ["StageTracker"]

log = logging.getLogger("fedseal.coordinator")


class StageTracker:
    """Who dropped, failed or contributed across a round's stages, for the registry."""

    def __init__(self, grid: Grid, request: RoundRequest, limits: ReplyLimits) -> None:
        self.grid = grid
        self.request = request
        self.limits = limits
        self.status: dict[str, SiteContribution] = {}
        self.digest: str | None = request.expected_digest

    def fail(self, site: str, reason: str, *, privacy: Mapping[str, Any] | None = None) -> None:
        """Mark a site failed (keeping what it reported, its privacy spend included)."""
        previous = self.status.get(site)
        if previous is None:
            self.status[site] = SiteContribution(
                site, ContributionStatus.FAILED, error=reason[:500], privacy=privacy
            )
        elif previous.status is ContributionStatus.CONTRIBUTED:
            self.status[site] = dataclasses.replace(
                previous, status=ContributionStatus.FAILED, error=reason[:500]
            )
        log.warning("round %d: site %s: %s", self.request.round_number, site, reason)

    def drop(self, site: str, reason: str) -> None:
        """Mark a site dropped before it uploaded (it never answered, or is not connected)."""
        if site not in self.status:
            self.status[site] = SiteContribution(site, ContributionStatus.DROPPED, error=reason)

    def declined(self, site: str, result: Mapping[str, Any]) -> None:
        self.status[site] = declined_contribution(site, result)
        log.warning(
            "round %d: site %s declined: %s",
            self.request.round_number,
            site,
            self.status[site].error,
        )

    def reject(self, rejected: Mapping[str, str], *, after_upload: bool = False) -> None:
        for site, reason in rejected.items():
            if after_upload:  # its upload is in the sum; record the problem, keep it counted
                log.warning("round %d: site %s: %s", self.request.round_number, site, reason)
            else:
                self.fail(site, reason or "message refused")

    def stream(self, message_type: str, configs: dict[str, dict[str, Any]]) -> StageStream:
        """Send a stage's messages; its replies arrive as the stream is iterated."""
        return stream_stage(
            self.grid,
            message_type,
            configs,
            self.request.nodes,
            self.request.timeout_s,
            self.limits.for_message_type(message_type),
        )

    def stage(
        self, message_type: str, configs: dict[str, dict[str, Any]], *, after_upload: bool = False
    ) -> StageResult:
        """Send a stage's messages and collect its (small) replies."""
        stream = self.stream(message_type, configs)
        result = stream.collect()
        self.stage_ended(stream, after_upload=after_upload)
        return result

    def stage_ended(self, stream: StageStream, *, after_upload: bool = False) -> None:
        """Record the sites that failed a stage or never answered it."""
        name = stream.message_type.split(".")[-1]
        for site, reason in stream.failed.items():
            if after_upload:
                log.warning(
                    "round %d: site %s failed %s: %s", self.request.round_number, site, name, reason
                )
            else:
                self.fail(site, f"{name}: {reason}")
        for site in stream.missing:
            if after_upload:
                log.warning(
                    "round %d: site %s dropped at %s", self.request.round_number, site, name
                )
            elif site not in self.status:
                self.status[site] = SiteContribution(
                    site, ContributionStatus.DROPPED, error=f"no reply at {name}"
                )

    def signed(self, stage: StageResult, key: str) -> list[Signed]:
        messages = []
        for reply in stage.replies.values():
            try:
                raw = field_bytes(reply.result, key, max_len=self.limits.control)
                messages.append(Signed.from_bytes(raw))
            except (SecureAggError, ValueError):
                continue  # missing from the list: the collect step treats it as absent
        return messages

    def record(self, contribution: SiteContribution) -> None:
        """A site's settled part in the upload stage (a refusal is logged)."""
        self.status[contribution.site] = contribution
        if contribution.status is ContributionStatus.FAILED:
            log.warning(
                "round %d: site %s: %s",
                self.request.round_number,
                contribution.site,
                contribution.error,
            )

    def result(
        self,
        payload: bytes | None,
        error: str | None,
        start_digest: str | None = None,
        contributors: tuple[str, ...] = (),
    ) -> AggregationResult:
        for site in self.request.sites:
            if site not in self.status:
                self.status[site] = SiteContribution(
                    site, ContributionStatus.DROPPED, error="left the round before uploading"
                )
        for site, entry in list(self.status.items()):
            if entry.status is not ContributionStatus.CONTRIBUTED:
                continue
            if payload is None:
                self.status[site] = dataclasses.replace(
                    entry, status=ContributionStatus.FAILED, start_digest=None, error=error
                )
            elif site not in contributors:
                self.status[site] = dataclasses.replace(
                    entry, status=ContributionStatus.FAILED, error="upload not in the aggregate"
                )
        # by site: replies arrive in any order, the round's records do not depend on it
        contributions = dict(sorted(self.status.items()))
        return AggregationResult(payload, contributions, start_digest or self.digest, error)
