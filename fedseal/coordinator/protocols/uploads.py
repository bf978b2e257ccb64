"""A round's uploads, taken one at a time: each is checked, folded into a running sum as it
arrives, and dropped.

What the coordinator keeps of an upload is its record (`SiteContribution`: the site, its example
count and metrics, the digest of the bytes it sent, its signed privacy statement), never the
upload: memory holds one running sum whatever the number of sites.

One decision cannot be taken on arrival. From a run's second round on, the coordinator knows the
global adapter every site must have trained from (the digest the sites agreed on after applying
the last aggregate), and an upload trained from another is refused at once. In a run's first
round the sites start from a seeded initial adapter, and the digest most replies report decides;
that majority is known only once every reply is in, and replies are not kept. So until then each
reported digest gets its own running sum (`SumsByStart`), and a site's record is settled at the
end (`UploadOutcome.settle`). Honest sites agree, so that is still one sum; a site reporting
another digest costs one more sum, never a kept upload.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fedseal.contract.wire import Key
from fedseal.coordinator.messaging import SiteReply
from fedseal.coordinator.protocols.base import ContributionStatus, SiteContribution

__all__ = ["DIFFERENT_START", "SumsByStart", "UploadOutcome"]

DIFFERENT_START = "trained from a different global adapter"

SumT = TypeVar("SumT")


class SumsByStart(Generic[SumT]):
    """Running sums of a round's uploads, one per global adapter the uploads were trained from.

    With `expected` (every round after a run's first) only uploads trained from it are summed.
    Without it, every reply votes with the digest it reports and `start_digest` is the most
    reported one (ties: the first reported), as a vote over all the replies would be.
    """

    def __init__(self, expected: str | None, new_sum: Callable[[], SumT]) -> None:
        self.expected = expected or None
        self._new_sum = new_sum
        self._votes: Counter[str] = Counter()
        self._sums: dict[str, SumT] = {}

    def vote(self, digest: str) -> None:
        """Count the digest one reply reports (declined and refused replies vote too)."""
        self._votes[digest] += 1

    def sum_for(self, digest: str) -> SumT:
        """The running sum an upload trained from `digest` goes into; a ValueError when the
        round's start is known and `digest` is not it."""
        if self.expected is not None and digest != self.expected:
            raise ValueError(DIFFERENT_START)
        if digest not in self._sums:
            self._sums[digest] = self._new_sum()
        return self._sums[digest]

    def start_digest(self) -> str | None:
        """The adapter the round started from: the expected one, else the majority's."""
        if self.expected is not None:
            return self.expected
        return self._votes.most_common(1)[0][0] if self._votes else None

    def total(self) -> SumT:
        """The sum of the uploads trained from `start_digest` (empty when none counted)."""
        start = self.start_digest()
        found = self._sums.get(start) if start is not None else None
        return self._new_sum() if found is None else found


@dataclass(frozen=True)
class UploadOutcome:
    """What became of one site's upload when it arrived, before the round's start is known.

    `digest` is the adapter the site says it trained from (None when the reply was refused
    before that was read); `record` is the site's contribution if that adapter is the round's
    start: contributed, or failed with the reason its upload was refused.
    """

    digest: str | None
    record: SiteContribution

    @classmethod
    def contributed(
        cls,
        reply: SiteReply,
        digest: str,
        *,
        num_examples: int | None,
        privacy: Mapping[str, Any] | None,
        update_digest: str,
    ) -> UploadOutcome:
        """A checked upload, added to the sum of the adapter `digest` it was trained from."""
        record = SiteContribution(
            reply.site,
            ContributionStatus.CONTRIBUTED,
            num_examples=num_examples,
            train_loss=reply.metrics.get(Key.TRAIN_LOSS),
            train_seconds=reply.metrics.get(Key.TRAIN_SECONDS),
            clipped_coordinates=_count(reply.metrics.get(Key.CLIPPED)),
            start_digest=digest,
            privacy=privacy,
            update_digest=update_digest,
        )
        return cls(digest, record)

    @classmethod
    def refused(
        cls, site: str, digest: str | None, reason: str, privacy: Any = None
    ) -> UploadOutcome:
        """A refused upload (its privacy statement is kept: the site has spent the budget)."""
        record = SiteContribution(
            site, ContributionStatus.FAILED, error=reason[:500], privacy=privacy
        )
        return cls(digest, record)

    def settle(self, start_digest: str | None, refused: str) -> SiteContribution:
        """The site's record for the round; `refused` prefixes the reason of a refusal."""
        if self.digest is not None and self.digest != start_digest:
            return SiteContribution(
                self.record.site,
                ContributionStatus.FAILED,
                error=f"{refused}: {DIFFERENT_START}",
                privacy=self.record.privacy,
            )
        return self.record


def _count(value: object) -> int | None:
    """A reported count (metrics travel as floats), or None if it is not a whole number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0 or value != int(value):
        return None
    return int(value)
