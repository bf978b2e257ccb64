"""A site's stages of one round: advertise keys, share seeds, prepare the upload, sign the
survivor set, release shares, and decrypt the aggregate."""

from __future__ import annotations

import hmac
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .. import bfv, keys, masking, quantise, shamir
from ..errors import (
    ConfigurationError,
    InvalidCiphertext,
    InvalidMessage,
    InvalidShare,
)
from ..messages import (
    AggregateMessage,
    ConsistencyAck,
    KeyAdvert,
    ShareEnvelope,
    ShareKind,
    ShareRelease,
    Signed,
    Stage,
    Upload,
)
from ..params import Mode
from ..prg import RandBytes
from .round import (
    Directory,
    RoundInfo,
    SiteIdentity,
    _decode_residues,
    _encode_residues,
    _envelope_context,
    _need,
    _neighbourhood_check,
    _seed_context,
    _share_digests,
    _threshold_check,
    _verify_acks,
    _verify_adverts,
    unanimous,
)

__all__ = [
    "Aggregate",
    "PreparedUpload",
    "SiteRound",
    "site_advertise",
    "site_consistency",
    "site_decrypt_aggregate",
    "site_prepare_upload",
    "site_release_shares",
    "site_release_unanimous",
    "site_share_keys",
]


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
    me = state.site_id
    indices = info.share_indices(me, peers)
    out = []
    for holder in order:
        index = indices[holder] - 1
        seed_share, key_share = seed_shares[index], key_shares[index]
        sealed = keys.seal(
            peers[holder].share_public,
            seed_share.to_bytes() + key_share.to_bytes(),
            run_id=info.run_id,
            recipient_id=holder,
            randbytes=randbytes,
            context=_envelope_context(info, state.site_id),
        )
        digests = _share_digests(
            seed_share.to_bytes(), key_share.to_bytes(), info=info, owner=me, holder=holder
        )
        envelope = ShareEnvelope(holder, sealed, *digests)
        out.append(
            Signed.create(
                state.me.identity_key,
                sender=state.site_id,
                stage=Stage.SHARE,
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
            directory, run_id=info.run_id, round_no=info.round_no, stage=Stage.SHARE
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
        seed_digest, key_digest = _share_digests(
            seed_share.to_bytes(), key_share.to_bytes(), info=info, owner=owner, holder=me
        )
        digests_ok = hmac.compare_digest(
            envelope.self_seed_digest, seed_digest
        ) and hmac.compare_digest(envelope.mask_key_digest, key_digest)
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
        stage=Stage.TRAIN,
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
    return _release(state)


def site_release_unanimous(state: SiteRound, *, members: Collection[str]) -> Signed:
    """The release of a round no site may drop out of, sent with the site's own upload.

    Only when `unanimous(info, members)` for the site's own pinned members (the round's `k`
    fixed when it was advertised) and the site holds shares of every member. Then the only
    survivor set an honest site ever accepts is all members, so every owner's release is its
    self-mask seed share and no honest site ever releases a mask-key share of the round: the
    seeds unmask nothing but the sum of all uploads, and releasing them before U3 is known
    gives nothing away (docs/protocol.md, "Unanimous rounds"). Once per round, as
    `site_release_shares`, and never after signing another survivor set.
    """
    u3 = tuple(sorted(set(members)))
    if (
        not unanimous(state.info, members)
        or set(state.held) != set(u3)
        or state.released
        or (state.survivors is not None and state.survivors != u3)
    ):
        raise InvalidMessage()
    state.survivors = u3
    return _release(state)


def _release(state: SiteRound) -> Signed:
    """Per owner held, the share of `b_j` if `j` is in U3, else of `s_j`'s key; marks the round
    released (one release per round)."""
    info = state.info
    assert state.survivors is not None
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
        stage=Stage.RELEASE,
        body=ShareRelease(tuple(entries)).to_bytes(),
        run_id=info.run_id,
        round_no=info.round_no,
    )


# --------------------------------------------------------------------------- he+ss: coordinator


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
