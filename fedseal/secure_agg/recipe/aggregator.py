"""The aggregator's stages of one round: collect and check what sites send, sum the uploads, and
remove the masks of the survivors (never decrypting anything)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tenseal as ts

from .. import bfv, keys, masking, shamir
from ..errors import (
    ConfigurationError,
    InsufficientSurvivors,
    InvalidMessage,
    InvalidShare,
    SecureAggError,
)
from ..messages import (
    AggregateMessage,
    KeyAdvert,
    ShareEnvelope,
    ShareKind,
    ShareRelease,
    Signed,
    Stage,
    Upload,
)
from ..params import Mode
from .round import (
    Directory,
    RoundInfo,
    _decode_residues,
    _encode_residues,
    _need,
    _neighbourhood_check,
    _seed_context,
    _share_digest,
    _threshold_check,
    _verify_acks,
    _verify_adverts,
)

__all__ = [
    "ShareBook",
    "UploadSum",
    "adverts_for",
    "aggregator_sum",
    "aggregator_unmask",
    "collect_acks",
    "collect_adverts",
    "collect_envelopes",
]


def collect_adverts(
    info: RoundInfo, messages: Sequence[Signed], *, directory: Directory
) -> tuple[dict[str, Signed], dict[str, str]]:
    """Verified adverts to relay to every site (U1), and the rejected senders with reasons."""
    _need(info.mode is Mode.HE_SS, f"key advertisement is an he+ss stage, mode is {info.mode}")
    verified, rejected = _verify_adverts(info, messages, directory)
    accepted = {site: message for site, (message, _) in verified.items()}
    _threshold_check(len(accepted), info, "sites advertised keys")
    return accepted, rejected


def adverts_for(info: RoundInfo, adverts: Mapping[str, Signed], site: str) -> list[Signed]:
    """The adverts to relay to `site`: all of U1, or its neighbours' with a neighbour graph."""
    mine = info.holders(site)
    return [adverts[s] for s in sorted(adverts) if s in mine]


@dataclass(frozen=True)
class ShareBook:
    """The coordinator's record of the share stage: who shared (U2), routing and share digests."""

    adverts: Mapping[str, KeyAdvert]
    envelopes: Mapping[str, Mapping[str, Signed]]  # owner -> holder -> signed envelope
    digests: Mapping[tuple[str, str], tuple[bytes, bytes]]  # (owner, holder) -> digests
    rejected: Mapping[str, str]

    @property
    def senders(self) -> tuple[str, ...]:
        """U2: the sites whose shares reached every advertised site."""
        return tuple(sorted(self.envelopes))

    def for_recipient(self, holder: str) -> list[Signed]:
        """Envelopes to relay to `holder`: one per site in U2 that shared with it."""
        return [
            self.envelopes[owner][holder]
            for owner in self.senders
            if holder in self.envelopes[owner]
        ]

    def owners_held_by(self, holder: str) -> set[str]:
        """Sites of U2 whose shares `holder` holds (all of U2 with all pairs)."""
        return {owner for owner in self.senders if holder in self.envelopes[owner]}


def collect_envelopes(
    info: RoundInfo,
    bundles: Mapping[str, Sequence[Signed]],
    *,
    adverts: Mapping[str, Signed],
    directory: Directory,
) -> ShareBook:
    """Check each sender's envelopes (one per advertised site, all signed); keep complete ones."""
    verified, bad = _verify_adverts(info, list(adverts.values()), directory)
    if bad:
        raise InvalidMessage()
    parsed = {site: advert for site, (_, advert) in verified.items()}
    envelopes: dict[str, dict[str, Signed]] = {}
    digests: dict[tuple[str, str], tuple[bytes, bytes]] = {}
    rejected: dict[str, str] = {}
    for sender, messages in sorted(bundles.items()):
        try:
            if sender not in parsed:
                raise InvalidMessage()
            mine: dict[str, Signed] = {}
            mine_digests = {}
            for message in messages:
                if message.sender != sender:
                    raise InvalidMessage()
                body = message.verify(
                    directory, run_id=info.run_id, round_no=info.round_no, stage=Stage.SHARE
                )
                envelope = ShareEnvelope.from_bytes(body)
                if envelope.recipient not in parsed or envelope.recipient in mine:
                    raise InvalidMessage()
                mine[envelope.recipient] = message
                mine_digests[(sender, envelope.recipient)] = (
                    envelope.self_seed_digest,
                    envelope.mask_key_digest,
                )
            if set(mine) != set(parsed) & info.holders(sender):
                raise InvalidMessage("envelopes missing for some advertised sites")
            envelopes[sender] = mine
            digests.update(mine_digests)
        except SecureAggError as exc:
            rejected[sender] = str(exc)
    _threshold_check(len(envelopes), info, "sites shared their keys")
    return ShareBook(parsed, envelopes, digests, rejected)


def collect_acks(
    info: RoundInfo, acks: Sequence[Signed], *, survivors: Sequence[str], directory: Directory
) -> tuple[dict[str, Signed], dict[str, str]]:
    """Survivors that signed the announced U3 (U4); relay these to every site in U4."""
    accepted, rejected = _verify_acks(info, acks, tuple(sorted(survivors)), directory)
    _threshold_check(len(accepted), info, "survivors confirmed the survivor set")
    return accepted, rejected


# --------------------------------------------------------------------------- sum and unmask


class UploadSum:
    """Streaming sum of uploads for one round: each upload is verified and added as it arrives.

    `add` raises a `SecureAggError` for a bad upload and leaves the sum untouched, so the caller
    logs it and goes on; `contributors` lists the uploads that were added (U3 in he+ss).
    """

    def __init__(
        self,
        info: RoundInfo,
        *,
        directory: Directory,
        context: ts.Context | None = None,
        expected: Iterable[str] | None = None,
    ) -> None:
        _need((context is None) == (info.mode is Mode.PLAIN), f"mode {info.mode}: context?")
        self.info = info
        self._directory = directory
        self._expected = frozenset(info.sampled if expected is None else expected)
        _need(self._expected <= set(info.sampled), "expected uploaders must be sampled sites")
        params = info.params
        self._plain: np.ndarray | None = None
        self._he = (
            None
            if context is None
            else bfv.CiphertextSum(context, params.bfv, params.padded_length)
        )
        self._contributors: set[str] = set()
        self.rejected: dict[str, str] = {}

    @property
    def contributors(self) -> tuple[str, ...]:
        return tuple(sorted(self._contributors))

    def add(self, message: Signed) -> None:
        """Verify one signed upload and add it; raise (and record) if it is refused."""
        try:
            self._add(message)
        except SecureAggError as exc:
            self.rejected[message.sender] = str(exc)
            raise

    def _add(self, message: Signed) -> None:
        info = self.info
        if message.sender not in self._expected or message.sender in self._contributors:
            raise InvalidMessage()
        body = message.verify(
            self._directory, run_id=info.run_id, round_no=info.round_no, stage=Stage.TRAIN
        )
        upload = Upload.from_bytes(body)
        if upload.mode is not info.mode:
            raise InvalidMessage()
        params = info.params
        if self._he is None:
            values = _decode_residues(
                upload.payload, params.padded_length, params.bfv.plain_modulus
            )
            if self._plain is None:
                self._plain = values.copy()
            else:
                self._plain += values
                np.remainder(self._plain, np.uint64(params.bfv.plain_modulus), out=self._plain)
        else:
            chunks = bfv.unpack_chunks(
                upload.payload, n_chunks=params.n_ciphertexts, params=params.bfv
            )
            self._he.add(chunks)
        self._contributors.add(message.sender)

    def _subtract(self, residual: np.ndarray) -> None:
        assert self._he is not None
        self._he.subtract_plain(residual)

    def _payload(self) -> bytes:
        if self._he is not None:
            return bfv.pack_chunks(self._he.to_chunks())
        assert self._plain is not None
        return _encode_residues(self._plain, self.info.params.bfv.plain_modulus)


def aggregator_sum(
    info: RoundInfo,
    uploads: Iterable[Signed],
    *,
    directory: Directory,
    context: ts.Context | None = None,
    expected: Iterable[str] | None = None,
) -> UploadSum:
    """Sum the uploads as they come (any iterable, e.g. a generator); bad ones are skipped.

    `context` is the parameters-only BFV context (he, he+ss) or None (plain); `expected` is the
    set allowed to upload (U2 in he+ss; all sampled sites otherwise). Refused uploads are in
    ``.rejected``.
    """
    total = UploadSum(info, directory=directory, context=context, expected=expected)
    for message in uploads:
        try:
            total.add(message)
        except SecureAggError:
            continue
    return total


def _collect_releases(
    info: RoundInfo,
    releases: Sequence[Signed],
    *,
    book: ShareBook,
    survivors: tuple[str, ...],
    confirmed: Iterable[str],
    directory: Directory,
) -> tuple[dict[str, dict[int, shamir.Share]], dict[str, dict[int, shamir.Share]], dict[str, str]]:
    u2 = set(book.senders)
    confirmed = set(confirmed)
    seeds: dict[str, dict[int, shamir.Share]] = {o: {} for o in survivors}
    mask_keys: dict[str, dict[int, shamir.Share]] = {o: {} for o in u2 - set(survivors)}
    rejected: dict[str, str] = {}
    seen: set[str] = set()
    indices: dict[str, dict[str, int]] = {}  # by owner; one map for all owners with all pairs

    def index_of(owner: str, holder: str) -> int:
        key = owner if info.graph is not None else ""
        if key not in indices:
            indices[key] = info.share_indices(owner, book.adverts)
        return indices[key][holder]

    for message in releases:
        holder = message.sender
        try:
            if holder not in confirmed or holder in seen:
                raise InvalidMessage()
            body = message.verify(
                directory, run_id=info.run_id, round_no=info.round_no, stage=Stage.RELEASE
            )
            release = ShareRelease.from_bytes(body)
            owners = [owner for owner, _, _ in release.entries]
            if set(owners) != book.owners_held_by(holder) or len(set(owners)) != len(owners):
                raise InvalidMessage()
            parsed = []
            for owner, kind, raw in release.entries:
                index = index_of(owner, holder)
                wanted = ShareKind.SELF_SEED if owner in seeds else ShareKind.MASK_KEY
                digest = book.digests[(owner, holder)][0 if wanted is ShareKind.SELF_SEED else 1]
                if kind is not wanted or not hmac.compare_digest(
                    digest, _share_digest(raw, info=info, owner=owner, holder=holder, kind=kind)
                ):
                    raise InvalidShare(f"share of {owner!r} released by {holder!r} is not valid")
                share = shamir.Share.from_bytes(raw)
                if share.index != index:
                    raise InvalidShare("share index does not match its holder")
                parsed.append((owner, kind, share))
            seen.add(holder)
            for owner, kind, share in parsed:
                (seeds if kind is ShareKind.SELF_SEED else mask_keys)[owner][share.index] = share
        except SecureAggError as exc:
            rejected[holder] = str(exc)
    return seeds, mask_keys, rejected


def aggregator_unmask(
    info: RoundInfo,
    total: UploadSum,
    *,
    book: ShareBook | None = None,
    acks: Mapping[str, Signed] | None = None,
    releases: Sequence[Signed] = (),
    directory: Directory | None = None,
    unanimous: bool = False,
) -> tuple[AggregateMessage, dict[str, str]]:
    """Finish the round: the aggregate to send back to the sites, and refused share releases.

    plain / he: nothing to unmask (pass no SecAgg material). he+ss: reconstruct b_j of every
    survivor and the mask key of every site that dropped after sharing, each from at least k
    digest-checked shares and checked against its commitment; expand the residual masks and
    subtract them homomorphically. The coordinator never sees a plaintext update or aggregate.
    `unanimous`: the releases came with the uploads (`site_release_unanimous`) in a round
    every sampled site uploaded in, `k` of them (pass no `acks`).
    """
    mode = info.mode
    _need(total.info == info, "the sum belongs to another round")
    survivors = total.contributors
    if mode is not Mode.HE_SS:
        _need(book is None and acks is None and not releases, f"mode {mode} has no unmasking")
        if not survivors:
            raise InsufficientSurvivors("no upload was accepted: abort the round")
        return AggregateMessage(mode, survivors, total._payload()), {}
    if unanimous:
        _need(acks is None, "a unanimous release has no acknowledgements")
        _need(
            info.graph is None and len(survivors) == len(info.sampled) == info.params.threshold,
            "a unanimous release needs every sampled site in U3, k of them, all pairs masked",
        )
    confirmed: Iterable[str] | None = survivors if unanimous else acks
    _need(
        book is not None and confirmed is not None and directory is not None,
        "he+ss unmasking needs the share book, the acknowledgements and the directory",
    )
    assert book is not None and confirmed is not None and directory is not None
    _threshold_check(len(survivors), info, "sites uploaded")
    if not set(survivors) <= set(book.senders):
        raise ConfigurationError("an upload was accepted from a site outside U2")
    seeds, mask_keys, rejected = _collect_releases(
        info, releases, book=book, survivors=survivors, confirmed=confirmed, directory=directory
    )
    k = info.secret_threshold
    for owner, shares in mask_keys.items():  # a dropout's neighbours first: the likelier abort
        _neighbourhood_check(
            len(shares), info, f"valid shares of the mask key of dropped site {owner!r}"
        )
    survivor_seeds = {}
    for owner, shares in seeds.items():
        _neighbourhood_check(len(shares), info, f"valid shares of the self-mask seed of {owner!r}")
        chosen = [shares[i] for i in sorted(shares)[:k]]
        survivor_seeds[owner] = shamir.reconstruct_seed(
            chosen,
            threshold=k,
            commitment=book.adverts[owner].seed_commitment,
            context=_seed_context(info, owner),
        )
    dropped_pairs = {}
    for owner, shares in mask_keys.items():
        chosen = [shares[i] for i in sorted(shares)[:k]]
        private = keys.load_agreement_private(
            shamir.reconstruct_agreement_key(
                chosen, threshold=k, public_key=book.adverts[owner].mask_public
            )
        )
        for survivor in sorted(set(survivors) & info.holders(owner)):
            dropped_pairs[(survivor, owner)] = keys.pairwise_seed(
                private,
                book.adverts[survivor].mask_public,
                own_id=owner,
                peer_id=survivor,
                run_id=info.run_id,
                round_no=info.round_no,
            )
    residual = masking.residual_mask(
        info.params.padded_length,
        modulus=info.params.bfv.plain_modulus,
        run_id=info.run_id,
        round_no=info.round_no,
        survivor_self_seeds=survivor_seeds,
        dropped_pair_seeds=dropped_pairs,
    )
    total._subtract(residual)
    return AggregateMessage(mode, survivors, total._payload()), rejected


# --------------------------------------------------------------------------- apply
