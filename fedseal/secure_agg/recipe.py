"""One round of secure aggregation, for `client/` and `coordinator/` to call: modes behind one API.

The pipeline is the same in every mode::

    site_prepare_upload -> aggregator_sum -> aggregator_unmask -> site_decrypt_aggregate

``plain`` sums quantised residues in the clear, ``he`` sums BFV ciphertexts, ``he+ss`` sums BFV
ciphertexts of SecAgg-masked vectors and needs the key stages first::

    site_advertise -> collect_adverts -> site_share_keys -> collect_envelopes
    -> (upload, sum) -> site_consistency -> collect_acks -> site_release_shares -> (unmask)

A function given inputs of another mode raises `ConfigurationError`: there is no silent fallback
to a weaker mode. A bad message from one site raises a `SecureAggError` (or is listed in a
``rejected`` mapping) without disturbing what was already accepted, so the round goes on without it.
Below the threshold ``k`` of survivors, `InsufficientSurvivors`: abort the round, apply nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import bfv, keys, masking, quantise, shamir
from ._wire import frame, text
from .errors import (
    ConfigurationError,
    InsufficientSurvivors,
    InvalidCiphertext,
    InvalidMessage,
    InvalidShare,
    SecureAggError,
)
from .graph import NeighbourGraph, harary_graph, round_seed
from .messages import (
    AggregateMessage,
    ConsistencyAck,
    KeyAdvert,
    SealedFederationKey,
    ShareEnvelope,
    ShareKind,
    ShareRelease,
    Signed,
    Stage,
    Upload,
)
from .params import BfvParams, Mode, ProtocolParams
from .prg import RandBytes

__all__ = [
    "Aggregate",
    "Directory",
    "PreparedUpload",
    "RoundInfo",
    "ShareBook",
    "SiteIdentity",
    "SiteRound",
    "UploadSum",
    "adverts_for",
    "aggregator_load_context",
    "aggregator_sum",
    "aggregator_unmask",
    "collect_acks",
    "collect_adverts",
    "collect_envelopes",
    "custodian_public_context",
    "custodian_seal_federation_key",
    "site_advertise",
    "site_consistency",
    "site_decrypt_aggregate",
    "site_open_federation_key",
    "site_prepare_upload",
    "site_release_shares",
    "site_share_keys",
]

#: Enrolled sites: site id -> raw Ed25519 identity public key.
Directory = Mapping[str, bytes]

_CEREMONY_ROUND = 0


@dataclass(frozen=True)
class RoundInfo:
    """What every party knows about a round before it starts."""

    run_id: str
    round_no: int
    params: ProtocolParams
    sampled: tuple[str, ...]

    def __post_init__(self) -> None:
        sampled = tuple(sorted(self.sampled))
        object.__setattr__(self, "sampled", sampled)
        if len(set(sampled)) != len(sampled) or not sampled:
            raise ConfigurationError("sampled sites must be distinct and non-empty")
        if len(sampled) > self.params.n_sites:
            raise ConfigurationError(
                f"{len(sampled)} sites sampled, but the headroom was planned for "
                f"{self.params.n_sites}"
            )
        if self.params.mode is Mode.HE_SS and len(sampled) < self.params.threshold:
            raise InsufficientSurvivors(
                f"{len(sampled)} sites sampled, fewer than the threshold k={self.params.threshold}"
            )

    @property
    def mode(self) -> Mode:
        return self.params.mode

    @cached_property
    def graph(self) -> NeighbourGraph | None:
        """The round's SecAgg+ neighbour graph, or None for all pairs.

        Derived from public round data only (`graph.round_seed`), so every party computes the
        same graph and nobody hands out neighbourhoods.
        """
        degree = self.params.neighbours
        if not degree or len(self.sampled) <= degree + 1:
            return None
        seed = round_seed(self.run_id, self.round_no, self.sampled)
        return harary_graph(self.sampled, degree=degree, seed=seed)

    def holders(self, owner: str) -> frozenset[str]:
        """Sites that may hold shares of `owner`'s secrets and mask with it (itself included)."""
        graph = self.graph
        return frozenset(self.sampled) if graph is None else graph.closed(owner)

    @property
    def secret_threshold(self) -> int:
        """Shares needed to reconstruct one site's secret: k, or the neighbourhood threshold."""
        return self.params.threshold if self.graph is None else self.params.neighbour_threshold

    def share_index(self, owner: str, holder: str, advertised: Iterable[str]) -> int:
        """1-based Shamir index of `holder` for `owner`'s secrets.

        All pairs: the holder's position among the advertised sites (U1). Neighbour graph: its
        position in the owner's closed neighbourhood, which does not depend on U1.
        """
        graph = self.graph
        order = sorted(advertised) if graph is None else sorted(graph.closed(owner))
        return order.index(holder) + 1

    def share_count(self, owner: str, advertised: Iterable[str]) -> int:
        """How many shares `owner` makes (indices 1..count)."""
        graph = self.graph
        return len(set(advertised)) if graph is None else len(graph.closed(owner))


@dataclass(frozen=True)
class SiteIdentity:
    """A site's id and long-term Ed25519 signing key."""

    site_id: str
    identity_key: Ed25519PrivateKey


def _need(condition: bool, what: str) -> None:
    if not condition:
        raise ConfigurationError(what)


def _threshold_check(count: int, info: RoundInfo, what: str) -> None:
    if count < info.params.threshold:
        raise InsufficientSurvivors(
            f"{count} {what}, fewer than the threshold k={info.params.threshold}: abort the round"
        )


def _neighbourhood_check(count: int, info: RoundInfo, what: str) -> None:
    """Per-owner check: k with all pairs, the neighbourhood threshold with a neighbour graph."""
    needed = info.secret_threshold
    if count < needed:
        raise InsufficientSurvivors(
            f"{count} {what}, fewer than the {needed} needed to reconstruct: abort the round"
        )


# --------------------------------------------------------------------------- key ceremony


def custodian_seal_federation_key(
    context: ts.Context,
    *,
    custodian: SiteIdentity,
    run_id: str,
    recipients: Mapping[str, bytes],
    randbytes: RandBytes,
) -> dict[str, Signed]:
    """Seal the secret BFV context to each site's X25519 sealing key, signed by the custodian."""
    secret = bfv.secret_context_bytes(context)
    out = {}
    for site_id, sealing_public in sorted(recipients.items()):
        sealed = keys.seal(
            sealing_public,
            secret,
            run_id=run_id,
            recipient_id=site_id,
            randbytes=randbytes,
            context=frame(text(custodian.site_id)),
        )
        out[site_id] = Signed.create(
            custodian.identity_key,
            sender=custodian.site_id,
            stage=Stage.KEY_CEREMONY,
            body=SealedFederationKey(site_id, sealed).to_bytes(),
            run_id=run_id,
            round_no=_CEREMONY_ROUND,
        )
    return out


def site_open_federation_key(
    message: Signed,
    *,
    site_id: str,
    sealing_key: X25519PrivateKey,
    custodian_id: str,
    directory: Directory,
    run_id: str,
    params: BfvParams,
) -> bfv.SiteCipher:
    """Check the custodian's signature, open the sealed context and return this site's cipher."""
    if message.sender != custodian_id:
        raise InvalidMessage()
    body = message.verify(
        directory, run_id=run_id, round_no=_CEREMONY_ROUND, stage=Stage.KEY_CEREMONY
    )
    envelope = SealedFederationKey.from_bytes(body)
    if envelope.recipient != site_id:
        raise InvalidMessage()
    secret = keys.open_sealed(
        sealing_key,
        envelope.sealed,
        run_id=run_id,
        recipient_id=site_id,
        context=frame(text(custodian_id)),
    )
    return bfv.SiteCipher(bfv.load_secret_context(secret, params), params)


def custodian_public_context(
    context: ts.Context, *, custodian: SiteIdentity, run_id: str
) -> Signed:
    """The parameters-only context for the coordinator, signed by the custodian."""
    return Signed.create(
        custodian.identity_key,
        sender=custodian.site_id,
        stage=Stage.KEY_CEREMONY,
        body=bfv.public_context_bytes(context),
        run_id=run_id,
        round_no=_CEREMONY_ROUND,
    )


def aggregator_load_context(
    message: Signed, *, custodian_id: str, directory: Directory, run_id: str, params: BfvParams
) -> ts.Context:
    """Verify and load the coordinator's context; refuses one that holds a secret key."""
    if message.sender != custodian_id:
        raise InvalidMessage()
    body = message.verify(
        directory, run_id=run_id, round_no=_CEREMONY_ROUND, stage=Stage.KEY_CEREMONY
    )
    return bfv.load_public_context(body, params)


# --------------------------------------------------------------------------- he+ss: site side


def _share_digest(
    share: bytes, *, info: RoundInfo, owner: str, holder: str, kind: ShareKind
) -> bytes:
    return hashlib.sha256(
        b"fedseal/share-digest/v1"
        + frame(
            text(info.run_id), text(info.round_no), text(owner), text(holder), text(kind), share
        )
    ).digest()


def _seed_context(info: RoundInfo, owner: str) -> bytes:
    return frame(text(info.run_id), text(info.round_no), text(owner))


def _envelope_context(info: RoundInfo, sender: str) -> bytes:
    return frame(text(info.round_no), text(sender))


@dataclass
class SiteRound:
    """A site's secrets and view of one he+ss round. Never leaves the site."""

    info: RoundInfo
    me: SiteIdentity
    share_key: X25519PrivateKey = field(repr=False)
    mask_key: X25519PrivateKey = field(repr=False)
    self_seed: bytes = field(repr=False)
    advert: KeyAdvert
    peers: dict[str, KeyAdvert] = field(default_factory=dict)  # U1, verified
    held: dict[str, tuple[shamir.Share, shamir.Share]] = field(  # shares held for U2
        default_factory=dict, repr=False
    )
    survivors: tuple[str, ...] | None = None  # U3, fixed once acknowledged
    released: bool = False

    @property
    def site_id(self) -> str:
        return self.me.site_id

    def holder_index(self, site_id: str, owner: str | None = None) -> int:
        """Share index of a holder of `owner`'s secrets (default: this site's own)."""
        return self.info.share_index(owner or self.site_id, site_id, self.peers)


def site_advertise(
    info: RoundInfo, me: SiteIdentity, *, randbytes: RandBytes
) -> tuple[SiteRound, Signed]:
    """Fresh per-round keys and self-mask seed; the signed advert goes to the coordinator."""
    _need(info.mode is Mode.HE_SS, f"key advertisement is an he+ss stage, mode is {info.mode}")
    _need(me.site_id in info.sampled, f"site {me.site_id!r} is not sampled this round")
    share_key = keys.generate_agreement_key(randbytes)
    mask_key = keys.generate_agreement_key(randbytes)
    self_seed = randbytes(shamir.SECRET_BYTES)
    advert = KeyAdvert(
        keys.public_bytes(share_key),
        keys.public_bytes(mask_key),
        shamir.seed_commitment(self_seed, context=_seed_context(info, me.site_id)),
    )
    state = SiteRound(info, me, share_key, mask_key, self_seed, advert)
    message = Signed.create(
        me.identity_key,
        sender=me.site_id,
        stage=Stage.ADVERTISE,
        body=advert.to_bytes(),
        run_id=info.run_id,
        round_no=info.round_no,
    )
    return state, message


def _verify_adverts(
    info: RoundInfo, messages: Sequence[Signed], directory: Directory
) -> tuple[dict[str, tuple[Signed, KeyAdvert]], dict[str, str]]:
    accepted: dict[str, tuple[Signed, KeyAdvert]] = {}
    rejected: dict[str, str] = {}
    for message in messages:
        try:
            if message.sender not in info.sampled or message.sender in accepted:
                raise InvalidMessage()
            body = message.verify(
                directory, run_id=info.run_id, round_no=info.round_no, stage=Stage.ADVERTISE
            )
            accepted[message.sender] = (message, KeyAdvert.from_bytes(body))
        except SecureAggError as exc:
            rejected[message.sender] = str(exc)
    return accepted, rejected


def site_share_keys(
    state: SiteRound, adverts: Sequence[Signed], *, directory: Directory, randbytes: RandBytes
) -> list[Signed]:
    """Verify the relayed adverts, Shamir-share b_i and the mask key, seal one envelope per site."""
    info = state.info
    verified, rejected = _verify_adverts(info, adverts, directory)
    if rejected or state.site_id not in verified:
        raise InvalidMessage()  # the coordinator relays verified adverts only
    mine = info.holders(state.site_id)
    peers = {site: advert for site, (_, advert) in verified.items() if site in mine}
    if peers[state.site_id] != state.advert:
        raise InvalidMessage()
    if info.graph is None:
        _threshold_check(len(peers), info, "sites advertised keys")
    else:  # only the coordinator sees U1 whole; it checks k there
        _neighbourhood_check(len(peers), info, f"neighbours of {state.site_id!r} advertised keys")
    state.peers = peers
    order = sorted(peers)
    k = info.secret_threshold
    count = info.share_count(state.site_id, peers)
    seed_shares = shamir.split_secret(state.self_seed, n=count, k=k)
    key_shares = shamir.split_secret(keys.private_bytes(state.mask_key), n=count, k=k)
    out = []
    for holder in order:
        index = state.holder_index(holder) - 1
        seed_share, key_share = seed_shares[index], key_shares[index]
        sealed = keys.seal(
            peers[holder].share_public,
            seed_share.to_bytes() + key_share.to_bytes(),
            run_id=info.run_id,
            recipient_id=holder,
            randbytes=randbytes,
            context=_envelope_context(info, state.site_id),
        )
        envelope = ShareEnvelope(
            holder,
            sealed,
            _share_digest(
                seed_share.to_bytes(),
                info=info,
                owner=state.site_id,
                holder=holder,
                kind=ShareKind.SELF_SEED,
            ),
            _share_digest(
                key_share.to_bytes(),
                info=info,
                owner=state.site_id,
                holder=holder,
                kind=ShareKind.MASK_KEY,
            ),
        )
        out.append(
            Signed.create(
                state.me.identity_key,
                sender=state.site_id,
                stage=Stage.SHARE_KEYS,
                body=envelope.to_bytes(),
                run_id=info.run_id,
                round_no=info.round_no,
            )
        )
    return out


def _receive_envelopes(state: SiteRound, envelopes: Sequence[Signed], directory: Directory) -> None:
    info = state.info
    me = state.site_id
    held: dict[str, tuple[shamir.Share, shamir.Share]] = {}
    for message in envelopes:
        owner = message.sender
        if owner not in state.peers or owner in held:
            raise InvalidMessage()
        body = message.verify(
            directory, run_id=info.run_id, round_no=info.round_no, stage=Stage.SHARE_KEYS
        )
        envelope = ShareEnvelope.from_bytes(body)
        if envelope.recipient != me:
            raise InvalidMessage()
        plain = keys.open_sealed(
            state.share_key,
            envelope.sealed,
            run_id=info.run_id,
            recipient_id=me,
            context=_envelope_context(info, owner),
        )
        if len(plain) != 2 * shamir.SHARE_BYTES:
            raise InvalidMessage()
        try:
            seed_share = shamir.Share.from_bytes(plain[: shamir.SHARE_BYTES])
            key_share = shamir.Share.from_bytes(plain[shamir.SHARE_BYTES :])
        except InvalidShare:
            raise InvalidMessage() from None
        digests_ok = hmac.compare_digest(
            envelope.self_seed_digest,
            _share_digest(
                seed_share.to_bytes(), info=info, owner=owner, holder=me, kind=ShareKind.SELF_SEED
            ),
        ) and hmac.compare_digest(
            envelope.mask_key_digest,
            _share_digest(
                key_share.to_bytes(), info=info, owner=owner, holder=me, kind=ShareKind.MASK_KEY
            ),
        )
        my_index = state.holder_index(me, owner)
        if not digests_ok or seed_share.index != my_index or key_share.index != my_index:
            raise InvalidMessage()
        held[owner] = (seed_share, key_share)
    if me not in held:
        raise InvalidMessage()
    if info.graph is None:
        _threshold_check(len(held), info, "sites shared their keys")
    else:  # fewer would leave this site's own secrets unrecoverable
        _neighbourhood_check(len(held), info, f"neighbours of {me!r} shared their keys")
    state.held = held


@dataclass(frozen=True)
class PreparedUpload:
    """A signed upload ready to send, and how many coordinates were clipped (for the operator)."""

    message: Signed
    n_clipped: int


def _encode_residues(values: np.ndarray, modulus: int) -> bytes:
    dtype = "<u4" if modulus <= 2**32 else "<u8"
    return np.asarray(values, dtype=np.uint64).astype(dtype).tobytes()


def _decode_residues(data: bytes, length: int, modulus: int) -> np.ndarray:
    width = 4 if modulus <= 2**32 else 8
    if len(data) != length * width:
        raise InvalidMessage()
    values = np.frombuffer(data, dtype="<u4" if width == 4 else "<u8").astype(np.uint64)
    if np.any(values >= np.uint64(modulus)):
        raise InvalidMessage()
    return values


def site_prepare_upload(
    info: RoundInfo,
    me: SiteIdentity,
    update: np.ndarray,
    *,
    weight: int,
    randbytes: RandBytes,
    cipher: bfv.SiteCipher | None = None,
    secagg: SiteRound | None = None,
    envelopes: Sequence[Signed] = (),
    directory: Directory | None = None,
) -> PreparedUpload:
    """Quantise ``weight·update`` (stochastic rounding), append the weight, then per mode:

    * plain: residues mod t in the clear (needs neither `cipher` nor `secagg`);
    * he: BFV-encrypted residues (needs `cipher`);
    * he+ss: masked, then encrypted (needs `cipher`, `secagg`, the relayed `envelopes` addressed
      to this site and the `directory` to verify them).
    """
    params = info.params
    mode = info.mode
    _need(me.site_id in info.sampled, f"site {me.site_id!r} is not sampled this round")
    _need((cipher is None) == (mode is Mode.PLAIN), f"mode {mode}: cipher given or missing")
    _need(
        (secagg is None) == (mode is not Mode.HE_SS),
        f"mode {mode}: SecAgg round state given or missing",
    )
    if not 1 <= weight <= params.max_weight:
        raise ConfigurationError(f"weight {weight} outside 1..{params.max_weight}")
    update = np.asarray(update, dtype=np.float64).ravel()
    if update.size != params.vector_length:
        raise ConfigurationError(
            f"update has {update.size} values, the run is planned for {params.vector_length}"
        )
    q = quantise.quantise_weighted(
        update, weight=weight, scale=params.scale, clip=params.clip, randbytes=randbytes
    )
    t = params.bfv.plain_modulus
    values = quantise.encode_mod(np.append(q.values, np.int64(weight)), t)
    if mode is Mode.PLAIN:
        payload = _encode_residues(values, t)
    else:
        assert cipher is not None
        _need(cipher.params == params.bfv, "cipher was made for other BFV parameters")
        if mode is Mode.HE_SS:
            assert secagg is not None
            _need(directory is not None, "he+ss needs the directory to verify envelopes")
            _need(
                secagg.info == info and secagg.site_id == me.site_id,
                "SecAgg state is for another round or site",
            )
            assert directory is not None
            _receive_envelopes(secagg, envelopes, directory)
            pair_seeds = {
                peer: keys.pairwise_seed(
                    secagg.mask_key,
                    secagg.peers[peer].mask_public,
                    own_id=me.site_id,
                    peer_id=peer,
                    run_id=info.run_id,
                    round_no=info.round_no,
                )
                for peer in secagg.held
                if peer != me.site_id
            }
            values = masking.mask_input(
                values,
                site_id=me.site_id,
                self_seed=secagg.self_seed,
                pair_seeds=pair_seeds,
                modulus=t,
                run_id=info.run_id,
                round_no=info.round_no,
            )
        payload = bfv.pack_chunks(cipher.encrypt(values))
    message = Signed.create(
        me.identity_key,
        sender=me.site_id,
        stage=Stage.MASKED_INPUT,
        body=Upload(mode, payload).to_bytes(),
        run_id=info.run_id,
        round_no=info.round_no,
    )
    return PreparedUpload(message, q.n_clipped)


def site_consistency(state: SiteRound, survivors: Sequence[str]) -> Signed:
    """Sign the survivor set U3 the coordinator announced; a site signs one set per round."""
    info = state.info
    u3 = tuple(sorted(set(survivors)))
    near = set(u3) & info.holders(state.site_id)  # all of U3 with all pairs
    if (
        len(u3) != len(survivors)
        or not set(u3) <= set(info.sampled)
        or not near <= set(state.held)
        or state.site_id not in u3
    ):
        raise InvalidMessage()
    if state.survivors is not None and state.survivors != u3:
        raise InvalidMessage()
    _threshold_check(len(u3), info, "sites uploaded")
    state.survivors = u3
    return Signed.create(
        state.me.identity_key,
        sender=state.site_id,
        stage=Stage.CONSISTENCY,
        body=ConsistencyAck(u3).to_bytes(),
        run_id=info.run_id,
        round_no=info.round_no,
    )


def _verify_acks(
    info: RoundInfo, acks: Sequence[Signed], survivors: tuple[str, ...], directory: Directory
) -> tuple[dict[str, Signed], dict[str, str]]:
    accepted: dict[str, Signed] = {}
    rejected: dict[str, str] = {}
    expected = ConsistencyAck(survivors).to_bytes()
    for ack in acks:
        try:
            if ack.sender not in survivors or ack.sender in accepted:
                raise InvalidMessage()
            body = ack.verify(
                directory, run_id=info.run_id, round_no=info.round_no, stage=Stage.CONSISTENCY
            )
            if body != expected:
                raise InvalidMessage()
            accepted[ack.sender] = ack
        except SecureAggError as exc:
            rejected[ack.sender] = str(exc)
    return accepted, rejected


def site_release_shares(
    state: SiteRound, acks: Sequence[Signed], *, directory: Directory
) -> Signed:
    """After at least k survivors signed the same U3: release, per owner, b-share or key-share.

    Owners in U3 get their self-mask seed share released, owners that dropped after sharing (in U2,
    not in U3) their mask-key share. Never both for one owner, and only once per round.
    """
    info = state.info
    if state.survivors is None or state.released:
        raise InvalidMessage()
    accepted, _ = _verify_acks(info, acks, state.survivors, directory)
    _threshold_check(len(accepted), info, "survivors confirmed the survivor set")
    entries = []
    for owner in sorted(state.held):
        seed_share, key_share = state.held[owner]
        if owner in state.survivors:
            entries.append((owner, ShareKind.SELF_SEED, seed_share.to_bytes()))
        else:
            entries.append((owner, ShareKind.MASK_KEY, key_share.to_bytes()))
    state.released = True
    return Signed.create(
        state.me.identity_key,
        sender=state.site_id,
        stage=Stage.UNMASK,
        body=ShareRelease(tuple(entries)).to_bytes(),
        run_id=info.run_id,
        round_no=info.round_no,
    )


# --------------------------------------------------------------------------- he+ss: coordinator


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
                    directory, run_id=info.run_id, round_no=info.round_no, stage=Stage.SHARE_KEYS
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
        self._contributors: list[str] = []
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
            self._directory, run_id=info.run_id, round_no=info.round_no, stage=Stage.MASKED_INPUT
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
        self._contributors.append(message.sender)

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
    for message in releases:
        holder = message.sender
        try:
            if holder not in confirmed or holder in seen:
                raise InvalidMessage()
            body = message.verify(
                directory, run_id=info.run_id, round_no=info.round_no, stage=Stage.UNMASK
            )
            release = ShareRelease.from_bytes(body)
            owners = [owner for owner, _, _ in release.entries]
            if set(owners) != book.owners_held_by(holder) or len(set(owners)) != len(owners):
                raise InvalidMessage()
            parsed = []
            for owner, kind, raw in release.entries:
                index = info.share_index(owner, holder, book.adverts)
                wanted = ShareKind.SELF_SEED if owner in survivors else ShareKind.MASK_KEY
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
) -> tuple[AggregateMessage, dict[str, str]]:
    """Finish the round: the aggregate to send back to the sites, and refused share releases.

    plain / he: nothing to unmask (pass no SecAgg material). he+ss: reconstruct b_j of every
    survivor and the mask key of every site that dropped after sharing, each from at least k
    digest-checked shares and checked against its commitment; expand the residual masks and
    subtract them homomorphically. The coordinator never sees a plaintext update or aggregate.
    """
    mode = info.mode
    _need(total.info == info, "the sum belongs to another round")
    survivors = total.contributors
    if mode is not Mode.HE_SS:
        _need(book is None and acks is None and not releases, f"mode {mode} has no unmasking")
        if not survivors:
            raise InsufficientSurvivors("no upload was accepted: abort the round")
        return AggregateMessage(mode, survivors, total._payload()), {}
    _need(
        book is not None and acks is not None and directory is not None,
        "he+ss unmasking needs the share book, the acknowledgements and the directory",
    )
    assert book is not None and acks is not None and directory is not None
    _threshold_check(len(survivors), info, "sites uploaded")
    if not set(survivors) <= set(book.senders):
        raise ConfigurationError("an upload was accepted from a site outside U2")
    seeds, mask_keys, rejected = _collect_releases(
        info, releases, book=book, survivors=survivors, confirmed=acks, directory=directory
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


@dataclass(frozen=True)
class Aggregate:
    """The decrypted round result: integer sums, total weight, and who contributed."""

    sums: np.ndarray  # int64, Σ round(scale·n_i·Δ_i)
    total_weight: int  # Σ n_i
    contributors: tuple[str, ...]
    scale: float

    def mean(self) -> np.ndarray:
        """The weighted FedAvg update ``Σ n_i·Δ_i / Σ n_i`` (float64)."""
        return quantise.dequantise_mean(self.sums, self.total_weight, self.scale)


def site_decrypt_aggregate(
    info: RoundInfo, message: AggregateMessage, *, cipher: bfv.SiteCipher | None = None
) -> Aggregate:
    """Decrypt (he modes) and decode the aggregate; refuse one outside the planned range."""
    params = info.params
    mode = info.mode
    _need(message.mode is mode, f"aggregate made in mode {message.mode}, the run is {mode}")
    _need((cipher is None) == (mode is Mode.PLAIN), f"mode {mode}: cipher given or missing")
    contributors = message.contributors
    if not contributors or not set(contributors) <= set(info.sampled):
        raise InvalidMessage()
    if len(set(contributors)) != len(contributors):
        raise InvalidMessage()
    if mode is Mode.HE_SS:
        _threshold_check(len(contributors), info, "contributors")
    t = params.bfv.plain_modulus
    if cipher is None:
        values = _decode_residues(message.payload, params.padded_length, t)
    else:
        chunks = bfv.unpack_chunks(
            message.payload, n_chunks=params.n_ciphertexts, params=params.bfv
        )
        values = cipher.decrypt(chunks, params.padded_length)
    signed = quantise.decode_centred(values, t)
    sums, total_weight = signed[:-1], int(signed[-1])
    n = len(contributors)
    bound = n * math.ceil(params.max_weight * params.clip * params.scale)
    if not 1 <= total_weight <= n * params.max_weight or np.any(np.abs(sums) > bound):
        raise InvalidCiphertext(
            "aggregate outside the planned range: masks did not cancel or data is corrupt"
        )
    return Aggregate(sums, total_weight, contributors, params.scale)
