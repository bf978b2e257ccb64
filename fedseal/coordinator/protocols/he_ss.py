"""`he+ss` mode: BFV encryption of SecAgg-masked updates with Shamir-shared seeds.

One round (Bonawitz et al. 2017, with every message signed and bound to run, round and stage):
advertise → share → train and upload (masked, encrypted) → consistency → release → unmask. The
coordinator ends with `Enc(Σ n_i·Δ_i ‖ Σ n_i)` and never a plaintext. The run start (key
ceremony) and the upload stage are `he`'s (`HeAggregation`); fewer than `k` survivors abort the
round.
"""

from __future__ import annotations

import json
import logging

from fedseal.contract.message_fields import field_bytes_list
from fedseal.contract.wire import Key, MessageType
from fedseal.coordinator.protocols.base import AggregationResult
from fedseal.coordinator.protocols.he import EncryptedRound, HeAggregation
from fedseal.secure_agg import recipe
from fedseal.secure_agg.errors import SecureAggError
from fedseal.secure_agg.graph import round_seed
from fedseal.secure_agg.messages import AggregateMessage, Signed

__all__ = ["SecureAggregation"]

log = logging.getLogger("fedseal.coordinator")


class SecureAggregation(HeAggregation):
    """`he+ss`: BFV encryption of SecAgg-masked updates with Shamir-shared seeds."""

    mode = "he+ss"
    min_sites = 2
    honest_majority = True

    def _round(self, round_: EncryptedRound) -> AggregationResult:
        """Advertise and share, then `he`'s upload, then consistency and release to unmask."""
        book = self._share(round_)
        uploaders = list(book.senders)
        configs = self._train_configs(round_, uploaders)
        for site in uploaders:
            configs[site][Key.RELAYED] = [e.to_bytes() for e in book.for_recipient(site)]
        total, start_digest = self._uploads(round_, configs, uploaders)
        return self._finish(round_, self._unmask(round_, total, book), start_digest)

    def _share(self, round_: EncryptedRound) -> recipe.ShareBook:
        """The advertise and share stages: the envelopes each uploader is relayed with its
        train message (the senders are the round's uploaders, U2)."""
        info, fields, tracker = round_.info, round_.fields, round_.tracker
        directory = self._identity_directory()
        stage = tracker.stage(MessageType.ADVERTISE, dict.fromkeys(round_.sampled, fields))
        adverts, rejected = recipe.collect_adverts(
            info, tracker.signed(stage, Key.SIGNED), directory=directory
        )
        tracker.reject(rejected)
        if info.graph is not None:
            log.info(
                "round %d: SecAgg+ neighbour graph, degree %d, seed %s",
                round_.request.round_number,
                info.graph.degree,
                round_seed(info.run_id, info.round_no, info.sampled).hex()[:16],
            )
        relayed = {  # all of U1, or each site's neighbours in a neighbour graph
            s: [m.to_bytes() for m in recipe.adverts_for(info, adverts, s)] for s in adverts
        }
        stage = tracker.stage(
            MessageType.SHARE,
            {s: {**fields, Key.RELAYED: relayed[s]} for s in sorted(adverts)},
        )
        bundles = {}
        for site, reply in stage.replies.items():
            try:
                bundles[site] = [
                    Signed.from_bytes(b)
                    for b in field_bytes_list(
                        reply.result, Key.SIGNED_LIST, max_len=self.limits.control
                    )
                ]
            except (SecureAggError, ValueError) as exc:
                tracker.fail(site, f"share stage: {exc}")
        book = recipe.collect_envelopes(info, bundles, adverts=adverts, directory=directory)
        tracker.reject(book.rejected)
        return book

    def _unmask(
        self, round_: EncryptedRound, total: recipe.UploadSum, book: recipe.ShareBook
    ) -> AggregateMessage:
        """The consistency and release stages, then the masks removed from the sum (U3's
        uploads; a site that fails now is logged but stays in the sum)."""
        info, fields, tracker = round_.info, round_.fields, round_.tracker
        directory = self._identity_directory()
        survivors = list(total.contributors)
        stage = tracker.stage(
            MessageType.CONSISTENCY,
            {s: {**fields, Key.SURVIVORS: json.dumps(survivors)} for s in survivors},
            after_upload=True,
        )
        acks, rejected = recipe.collect_acks(
            info, tracker.signed(stage, Key.SIGNED), survivors=survivors, directory=directory
        )
        tracker.reject(rejected, after_upload=True)
        relayed = [acks[s].to_bytes() for s in sorted(acks)]
        stage = tracker.stage(
            MessageType.RELEASE,
            {s: {**fields, Key.RELAYED: relayed} for s in sorted(acks)},
            after_upload=True,
        )
        aggregate, rejected = recipe.aggregator_unmask(
            info,
            total,
            book=book,
            acks=acks,
            releases=tracker.signed(stage, Key.SIGNED),
            directory=directory,
        )
        tracker.reject(rejected, after_upload=True)
        return aggregate
