"""`he+ss` mode: BFV encryption of SecAgg-masked updates with Shamir-shared seeds.

One round (Bonawitz et al. 2017, with every message signed and bound to run, round and stage):
advertise → share → train and upload (masked, encrypted) → consistency → release → unmask. The
coordinator ends with `Enc(Σ n_i·Δ_i ‖ Σ n_i)` and never a plaintext. The run start (key
ceremony) and the upload stage are `he`'s (`HeAggregation`); fewer than `k` survivors abort the
round.

Key batches (docs/protocol.md, "Key batches"): the advertise and share stages of a round with no
keys yet make the keys of the next `key_rounds` rounds at once, each round's adverts and
envelopes its own (fresh secrets, signed for that round) and collected into that round's
`ShareBook`; the later rounds of the batch go straight to train, consistency and release. Every
round of a batch has the batch's sampled set; a site of it that is not connected at a later
round is that round's dropout.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flwr.serverapp import Grid

from fedseal.contract.limits import MAX_KEY_ROUNDS
from fedseal.contract.message_fields import field_bytes_list, field_int_list, split_by_counts
from fedseal.contract.wire import Key, MessageType
from fedseal.coordinator.protocols.base import AggregationResult, RoundRequest, RunContext
from fedseal.coordinator.protocols.he import EncryptedRound, HeAggregation
from fedseal.coordinator.protocols.tracker import StageTracker
from fedseal.secure_agg import recipe
from fedseal.secure_agg.errors import InsufficientSurvivors, SecureAggError
from fedseal.secure_agg.graph import round_seed
from fedseal.secure_agg.messages import AggregateMessage, Signed
from fedseal.secure_agg.params import MAX_SITES

__all__ = ["SecureAggregation"]

log = logging.getLogger("fedseal.coordinator")


class SecureAggregation(HeAggregation):
    """`he+ss`: BFV encryption of SecAgg-masked updates with Shamir-shared seeds."""

    mode = "he+ss"
    min_sites = 2
    honest_majority = True

    def __init__(self) -> None:
        super().__init__()
        self.key_rounds = 1
        self._keyed: dict[int, tuple[str, ...]] = {}  # round -> its key batch's sampled set
        self._books: dict[int, recipe.ShareBook] = {}  # later rounds of the batch, by round
        self._batch_nodes: dict[str, int] = {}  # each site's Flower node when the batch was keyed

    def prepare_run(self, grid: Grid, run: RunContext) -> None:
        if not 1 <= run.key_rounds <= MAX_KEY_ROUNDS:
            raise RuntimeError(f"key-rounds must be between 1 and {MAX_KEY_ROUNDS}")
        self.key_rounds = run.key_rounds
        super().prepare_run(grid, run)

    def round_sample(self, round_number: int) -> list[str] | None:
        """A round keyed by a batch has the batch's sampled set (those not connected drop)."""
        sampled = self._keyed.get(round_number)
        return None if sampled is None else list(sampled)

    def _round_sites(self, request: RoundRequest) -> list[str]:
        """A round keyed by a batch keeps the batch's sampled set, even where the round loop
        left a site out of the record (its privacy budget is spent): a dropout to the masks."""
        keyed = self._keyed.get(request.round_number)
        return super()._round_sites(request) if keyed is None else list(keyed)

    def _round(self, round_: EncryptedRound) -> AggregationResult:
        """Its key batch's book (advertise and share first if the round has none), then
        `he`'s upload, then consistency and release to unmask."""
        book = self._book(round_)
        uploaders = [s for s in book.senders if s in round_.request.nodes]
        if len(uploaders) < round_.info.params.threshold:
            raise InsufficientSurvivors(
                f"{len(uploaders)} sites of the round's key batch are connected, fewer than the "
                f"threshold k={round_.info.params.threshold}"
            )
        configs = self._train_configs(round_, uploaders)
        for site in uploaders:
            configs[site][Key.RELAYED] = [e.to_bytes() for e in book.for_recipient(site)]
        total, start_digest = self._uploads(round_, configs, uploaders)
        return self._finish(round_, self._unmask(round_, total, book), start_digest)

    def _book(self, round_: EncryptedRound) -> recipe.ShareBook:
        """The round's share book: kept from its key batch, or made by a new batch from here.

        A new batch also starts here when the batch left this round no book (below `k` at its
        advertise or share stage) or a site of the batch reconnected since (a restarted site
        lost its secrets): no site has used this round's keys yet, so each accepts fresh ones
        in place of the unused (docs/protocol.md, "Key batches")."""
        number = round_.info.round_no
        for old in [r for r in self._keyed if r < number]:
            self._keyed.pop(old)
            self._books.pop(old, None)
        keyed = self._keyed.get(number)
        if keyed is None:
            return self._key_batch(round_)
        book = self._books.pop(number, None)
        nodes = round_.request.nodes
        moved = sorted(s for s in keyed if s in nodes and nodes[s] != self._batch_nodes.get(s))
        if book is None or moved:
            why = f"{', '.join(moved)} reconnected since" if moved else "it has no keys of k sites"
            log.info("round %d: its key batch is keyed again from here (%s)", number, why)
            for later in [r for r in self._keyed if r >= number]:
                self._keyed.pop(later)
                self._books.pop(later, None)
            return self._key_batch(round_)
        log.info("round %d: keys from its key batch (%d sites shared)", number, len(book.senders))
        return book

    def _key_batch(self, round_: EncryptedRound) -> recipe.ShareBook:
        """The advertise and share stages for this round and the next `key_rounds - 1` of the
        run: one message each per site, per-round adverts and envelopes, one book per round.
        Returns this round's book and keeps the others'; a later round whose keys did not
        reach `k` sites keeps none."""
        info = round_.info
        last = max(round_.request.plan.rounds, info.round_no)
        rounds = list(range(info.round_no, min(info.round_no + self.key_rounds - 1, last) + 1))
        infos = {r: recipe.RoundInfo(info.run_id, r, info.params, info.sampled) for r in rounds}
        if len(rounds) > 1:
            log.info("round %d: key batch for rounds %d..%d", rounds[0], rounds[0], rounds[-1])
        if info.graph is not None:
            log.info(
                "round %d: SecAgg+ neighbour graph, degree %d, seed %s",
                round_.request.round_number,
                info.graph.degree,
                round_seed(info.run_id, info.round_no, info.sampled).hex()[:16],
            )
        adverts = self._advertise(round_, infos)
        if info.round_no not in adverts:  # as without a batch: no share stage below k
            raise InsufficientSurvivors(f"fewer than k={info.params.threshold} sites advertised")
        books = self._share_stage(round_, infos, adverts)
        self._books.update({r: b for r, b in books.items() if r != info.round_no})
        if info.round_no not in books:  # below k at the advertise or the share stage
            raise InsufficientSurvivors(
                f"fewer than k={info.params.threshold} sites advertised and shared keys"
            )
        return books[info.round_no]

    def _advertise(
        self, round_: EncryptedRound, infos: dict[int, recipe.RoundInfo]
    ) -> dict[int, dict[str, Signed]]:
        """The advertise stage: U1 of each round of the batch (a round below `k` has none and
        aborts). Once a site answered, every round of the batch counts as keyed."""
        tracker, first = round_.tracker, round_.info.round_no
        rounds = list(infos)
        batch = len(rounds) > 1
        fields = {**round_.fields, Key.KEY_ROUNDS: rounds} if batch else round_.fields
        stage = tracker.stage(MessageType.ADVERTISE, dict.fromkeys(round_.reachable, fields))
        if stage.replies:  # the sites that answered hold keys of every round of the batch now
            self._keyed.update(dict.fromkeys(rounds, round_.info.sampled))
            self._batch_nodes = dict(round_.request.nodes)
        messages: dict[int, list[Signed]] = {r: [] for r in rounds}
        if not batch:
            messages[first] = tracker.signed(stage, Key.SIGNED)
        for site, reply in stage.replies.items() if batch else ():
            try:
                signed = [
                    Signed.from_bytes(b)
                    for b in field_bytes_list(
                        reply.result,
                        Key.SIGNED_LIST,
                        max_items=len(rounds),
                        max_len=self.limits.control,
                    )
                ]
                if len(signed) != len(rounds):
                    raise ValueError(f"{len(signed)} adverts for {len(rounds)} rounds")
            except (SecureAggError, ValueError) as exc:
                tracker.fail(site, f"advertise stage: {exc}")
                continue
            for r, message in zip(rounds, signed, strict=True):
                messages[r].append(message)
        adverts: dict[int, dict[str, Signed]] = {}
        directory = self._identity_directory()
        for r in rounds:
            try:
                adverts[r], rejected = recipe.collect_adverts(
                    infos[r], messages[r], directory=directory
                )
            except InsufficientSurvivors:
                log.warning("round %d: its key batch's adverts are below k; it aborts", r)
                continue
            _reject(tracker, r, first, rejected)
        return adverts

    def _share_stage(
        self,
        round_: EncryptedRound,
        infos: dict[int, recipe.RoundInfo],
        adverts: dict[int, dict[str, Signed]],
    ) -> dict[int, recipe.ShareBook]:
        """The share stage: each site of some round's U1 gets, per such round, that round's
        adverts (all of U1, or its neighbours'); its envelopes make each round's book (U2)."""
        tracker, first = round_.tracker, round_.info.round_no
        batch = len(infos) > 1
        advertised = sorted(set().union(*adverts.values()))
        listed = {s: [r for r in adverts if s in adverts[r]] for s in advertised}
        configs: dict[str, dict[str, Any]] = {}
        for site, rounds in listed.items():
            relayed = [
                [m.to_bytes() for m in recipe.adverts_for(infos[r], adverts[r], site)]
                for r in rounds
            ]
            configs[site] = {**round_.fields, Key.RELAYED: [b for part in relayed for b in part]}
            if batch:
                configs[site][Key.KEY_ROUNDS] = rounds
                configs[site][Key.RELAYED_COUNTS] = [len(part) for part in relayed]
        stage = tracker.stage(MessageType.SHARE, configs)
        bundles: dict[int, dict[str, list[Signed]]] = {r: {} for r in adverts}
        for site, reply in stage.replies.items():
            rounds = listed[site]
            try:
                signed = [
                    Signed.from_bytes(b)
                    for b in field_bytes_list(
                        reply.result,
                        Key.SIGNED_LIST,
                        max_items=MAX_SITES * len(rounds),
                        max_len=self.limits.control,
                    )
                ]
                parts = [signed]
                if batch:
                    counts = field_int_list(reply.result, Key.SIGNED_COUNTS, max_items=len(rounds))
                    if len(counts) != len(rounds):
                        raise ValueError(f"{len(counts)} envelope counts for {len(rounds)} rounds")
                    parts = split_by_counts(signed, counts)
            except (SecureAggError, ValueError) as exc:
                tracker.fail(site, f"share stage: {exc}")
                continue
            for r, part in zip(rounds, parts, strict=True):
                bundles[r][site] = part
        books: dict[int, recipe.ShareBook] = {}
        directory = self._identity_directory()
        for r in adverts:
            try:
                books[r] = recipe.collect_envelopes(
                    infos[r], bundles[r], adverts=adverts[r], directory=directory
                )
            except InsufficientSurvivors:
                log.warning("round %d: its key batch's envelopes are below k; it aborts", r)
                continue
            _reject(tracker, r, first, books[r].rejected)
        return books

    def _unmask(
        self, round_: EncryptedRound, total: recipe.UploadSum, book: recipe.ShareBook
    ) -> AggregateMessage:
        """The masks removed from the sum (U3's uploads; a site that fails now is logged but
        stays in the sum): with the releases sent beside the uploads in a unanimous round,
        else after the consistency and release stages."""
        info, fields, tracker = round_.info, round_.fields, round_.tracker
        directory = self._identity_directory()
        survivors = list(total.contributors)
        early = {s: m for s, m in round_.early_releases.items() if s in survivors}
        if _unanimous(info, survivors, early):
            log.info(
                "round %d: unanimous (k = %d, every member): releases came with the uploads",
                info.round_no,
                info.params.threshold,
            )
            aggregate, rejected = recipe.aggregator_unmask(
                info,
                total,
                book=book,
                releases=list(early.values()),
                directory=directory,
                unanimous=True,
            )
            tracker.reject(rejected, after_upload=True)
            return aggregate
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
        # a site that sent its release with its upload has released (its manifest differs)
        targets = {s: {**fields, Key.RELAYED: relayed} for s in sorted(acks) if s not in early}
        releases = [early[s] for s in sorted(acks) if s in early]
        if targets:
            stage = tracker.stage(MessageType.RELEASE, targets, after_upload=True)
            releases += tracker.signed(stage, Key.SIGNED)
        aggregate, rejected = recipe.aggregator_unmask(
            info,
            total,
            book=book,
            acks=acks,
            releases=releases,
            directory=directory,
        )
        tracker.reject(rejected, after_upload=True)
        return aggregate


def _unanimous(info: recipe.RoundInfo, survivors: list[str], early: dict[str, Signed]) -> bool:
    """A round every sampled site uploaded in, `k` of them, all pairs masked, and each sent its
    share release with its upload (its own manifest makes the round unanimous)."""
    return (
        info.graph is None
        and len(survivors) == len(info.sampled) == info.params.threshold
        and set(survivors) == set(early)
    )


def _reject(tracker: StageTracker, number: int, first: int, rejected: dict[str, str]) -> None:
    """Refused key messages: the site fails the batch's first round; for a later round of the
    batch it is only left out of that round's sets (a dropout there), which is logged."""
    if number == first:
        tracker.reject(rejected)
        return
    for site, reason in rejected.items():
        log.warning("round %d (key batch): site %s: %s", number, site, reason or "refused")
