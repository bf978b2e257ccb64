"""Secrecy as checks that can fail: the coordinator cannot decrypt, a site sees only masks."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
from secagg_harness import BUCKETS, chi_square_critical, chi_square_uniform, rng

from fedseal.secure_agg import bfv, keys, masking, recipe, shamir
from fedseal.secure_agg import messages as messages_
from fedseal.secure_agg.errors import ConfigurationError, InsufficientSurvivors
from fedseal.secure_agg.messages import ShareKind, ShareRelease, Signed, Stage, Upload
from fedseal.secure_agg.params import BfvParams, Mode, default_threshold
from fedseal.secure_agg.shamir import Share


def test_aggregator_context_cannot_decrypt(federation):
    fed = federation(3, Mode.HE_SS)
    assert fed.context.is_private() is False
    assert fed.context.has_public_key() is False
    with pytest.raises(ValueError):
        fed.context.secret_key()
    with pytest.raises(ConfigurationError):
        bfv.SiteCipher(fed.context, fed.params.bfv)
    # TenSEAL's own paths refuse too: no encryption, no decryption
    with pytest.raises(ValueError):
        ts.bfv_vector(fed.context, [1, 2, 3])
    other = bfv.make_secret_context(fed.params.bfv)
    vector = ts.bfv_vector_from(fed.context, ts.bfv_vector(other, [1, 2, 3]).serialize())
    with pytest.raises(ValueError):
        vector.decrypt()


def test_public_context_is_parameters_only():
    params = BfvParams()
    secret = bfv.make_secret_context(params)
    public = bfv.public_context_bytes(secret)
    assert len(public) < 1024
    with pytest.raises(ConfigurationError):
        bfv.load_public_context(bfv.secret_context_bytes(secret), params)
    with pytest.raises(ConfigurationError):
        bfv.load_secret_context(public, params)


def _decrypt_upload(fed, upload_message, reader: str) -> np.ndarray:
    upload = Upload.from_bytes(upload_message.body)
    chunks = bfv.unpack_chunks(
        upload.payload, n_chunks=fed.params.n_ciphertexts, params=fed.params.bfv
    )
    return fed.ciphers[reader].decrypt(chunks, fed.params.padded_length)


def test_colluding_site_sees_only_a_uniform_masked_vector(federation):
    """Coordinator hands site-02's ciphertext to site-00, which holds the secret key."""
    fed = federation(5, Mode.HE_SS, vector_length=20_000)
    outcome = fed.run_round(1)
    np.testing.assert_array_equal(outcome.aggregate.sums, outcome.expected_sums)  # sum is right
    seen = _decrypt_upload(fed, outcome.uploads["site-02"], reader="site-00")
    t = fed.params.bfv.plain_modulus
    statistic = chi_square_uniform(seen, t)
    assert statistic < chi_square_critical(BUCKETS - 1), statistic
    # and nothing of the quantised update survives: no correlation with it
    updates, _ = fed.updates(1)
    centred = np.where(seen > t // 2, seen.astype(np.float64) - t, seen.astype(np.float64))
    corr = np.corrcoef(centred[:-1], updates["site-02"])[0, 1]
    assert abs(corr) < 0.05


def test_without_masks_the_same_check_fails(federation):
    """The `he` mode (NVFlare-style) leaks the update to any key holder: the test can fail."""
    fed = federation(5, Mode.HE, vector_length=20_000)
    outcome = fed.run_round(1)
    seen = _decrypt_upload(fed, outcome.uploads["site-02"], reader="site-00")
    statistic = chi_square_uniform(seen, fed.params.bfv.plain_modulus)
    assert statistic > chi_square_critical(BUCKETS - 1)


def _uploaded_round(fed):
    """Round 1 of `fed` up to the uploads: every site advertised, shared and uploaded."""
    info = fed.info(1)
    states, adverts = {}, []
    for s in fed.ids:
        states[s], message = recipe.site_advertise(info, fed.identities[s], randbytes=rng(s))
        adverts.append(message)
    accepted, _ = recipe.collect_adverts(info, adverts, directory=fed.directory)
    bundles = {
        s: recipe.site_share_keys(
            states[s], list(accepted.values()), directory=fed.directory, randbytes=rng(s, 2)
        )
        for s in fed.ids
    }
    book = recipe.collect_envelopes(info, bundles, adverts=accepted, directory=fed.directory)
    updates, weights = fed.updates(1)
    uploads = {
        s: recipe.site_prepare_upload(
            info,
            fed.identities[s],
            updates[s],
            weight=weights[s],
            randbytes=rng("upload", s, 1),
            cipher=fed.ciphers[s],
            secagg=states[s],
            envelopes=book.for_recipient(s),
            directory=fed.directory,
        ).message
        for s in fed.ids
    }
    return info, states, uploads


def _colluder_ack(fed, colluder: str, u3) -> Signed:
    """The colluding site's signature over any survivor set the coordinator asks for."""
    return Signed.create(
        fed.identities[colluder].identity_key,
        sender=colluder,
        stage=Stage.CONSISTENCY,
        body=messages_.ConsistencyAck(u3).to_bytes(),
        run_id=fed.run_id,
        round_no=1,
    )


def _lying_coordinator_attack(fed) -> np.ndarray:
    """The coordinator tells {00, 01} that everyone survived and {02, 03} that site-00 dropped;
    site-04 colludes and signs both survivor sets. Returns site-00's unmasked upload."""
    info, states, uploads = _uploaded_round(fed)
    colluder = "site-04"
    u3_a, u3_b = tuple(fed.ids), ("site-02", "site-03", colluder)

    acks_a = [recipe.site_consistency(states[s], u3_a) for s in ("site-00", "site-01")]
    acks_a.append(_colluder_ack(fed, colluder, u3_a))
    acks_b = [recipe.site_consistency(states[s], u3_b) for s in ("site-02", "site-03")]
    acks_b.append(_colluder_ack(fed, colluder, u3_b))
    released = [
        recipe.site_release_shares(states[s], acks_a, directory=fed.directory)
        for s in ("site-00", "site-01")
    ] + [
        recipe.site_release_shares(states[s], acks_b, directory=fed.directory)
        for s in ("site-02", "site-03")
    ]
    seed_shares = [states[colluder].held["site-00"][0]]
    key_shares = [states[colluder].held["site-00"][1]]
    for message in released:
        for owner, kind, raw in ShareRelease.from_bytes(message.body).entries:
            if owner == "site-00":
                (seed_shares if kind is ShareKind.SELF_SEED else key_shares).append(
                    Share.from_bytes(raw)
                )
    k = fed.params.threshold
    advert = states[colluder].peers["site-00"]
    seed = shamir.reconstruct_seed(
        seed_shares[:k],
        threshold=k,
        commitment=advert.seed_commitment,
        context=recipe.round._seed_context(info, "site-00"),
    )
    mask_key = keys.load_agreement_private(
        shamir.reconstruct_agreement_key(key_shares[:k], threshold=k, public_key=advert.mask_public)
    )
    seen = _decrypt_upload(fed, uploads["site-00"], reader=colluder)
    t = fed.params.bfv.plain_modulus
    pair_seeds = {
        peer: keys.pairwise_seed(
            mask_key,
            states[colluder].peers[peer].mask_public,
            own_id="site-00",
            peer_id=peer,
            run_id=fed.run_id,
            round_no=1,
        )
        for peer in fed.ids[1:]
    }
    zero = np.zeros(seen.size, dtype=np.uint64)
    masks = masking.mask_input(
        zero,
        site_id="site-00",
        self_seed=seed,
        pair_seeds=pair_seeds,
        modulus=t,
        run_id=fed.run_id,
        round_no=1,
    )
    return (seen.astype(object) - masks.astype(object)) % t


def test_lying_coordinator_with_a_colluder_needs_2k_at_most_n_plus_c(federation):
    """The documented bound: with k = 3 of 5, the coordinator plus ONE colluding site recover an
    honest site's update by showing two survivor sets; with k > (n + c)/2 = 3 they cannot."""
    fed = federation(5, Mode.HE_SS, threshold=3)
    recovered = _lying_coordinator_attack(fed)
    updates, weights = fed.updates(1)
    expected = fed.expected(fed.info(1), ["site-00"], updates, weights)[0]
    t = fed.params.bfv.plain_modulus
    np.testing.assert_array_equal(recovered[:-1], (expected.astype(object)) % t)

    safe = federation(5, Mode.HE_SS, threshold=default_threshold(5, max_colluding=1))
    with pytest.raises(InsufficientSurvivors):
        _lying_coordinator_attack(safe)


# Seven sites, k = 5 = the least for one colluder (k > (7 + 1)/2); site-06 colludes (it holds
# the BFV key, as every site does). The coordinator shows each honest site its own survivor set
# of k, each leaving out two of {03, 04, 05}, so that every one of them is "dropped" for four
# honest holders while 00, 01 and 02 are alive for all six.
SMALL_SUM = ("site-00", "site-01", "site-02")
PER_SITE_U3 = {
    "site-00": ("site-03", "site-04"),
    "site-01": ("site-04", "site-05"),
    "site-02": ("site-03", "site-05"),
    "site-03": ("site-04", "site-05"),
    "site-04": ("site-03", "site-05"),
    "site-05": ("site-03", "site-04"),
}  # honest site -> the two sites its survivor set leaves out


def test_per_site_survivor_sets_get_no_release_while_the_consistency_stage_binds(federation):
    """The defence: each honest site signs one set and releases only after k signatures over
    it; every set above has its own site's, one other honest site's and the colluder's."""
    fed = federation(7, Mode.HE_SS, threshold=default_threshold(7, max_colluding=1))
    _, states, _ = _uploaded_round(fed)
    colluder = "site-06"
    shown = {h: tuple(s for s in fed.ids if s not in out) for h, out in PER_SITE_U3.items()}
    acks = {h: recipe.site_consistency(states[h], u3) for h, u3 in shown.items()}
    for h, u3 in shown.items():
        relayed = [acks[o] for o in shown if shown[o] == u3]
        relayed.append(_colluder_ack(fed, colluder, u3))
        assert len(relayed) == 3 < fed.params.threshold
        with pytest.raises(InsufficientSurvivors):
            recipe.site_release_shares(states[h], relayed, directory=fed.directory)


def test_releasing_on_an_unconfirmed_survivor_set_would_unmask_a_sum_of_three(federation):
    """Why rounds that mask all pairs keep the consistency stage: if each honest site released
    on the survivor set it was shown (per owner the seed share, or the key share if the owner
    "dropped"), no owner would lose both secrets (that needs 2k <= n + c), yet the coordinator
    and one colluder would unmask the sum of three honest updates. With one set confirmed by k
    signatures, a sum needs k - c = 4 honest survivors, as when sites truly drop out."""
    fed = federation(7, Mode.HE_SS, threshold=default_threshold(7, max_colluding=1))
    info, states, uploads = _uploaded_round(fed)
    colluder, k, t = "site-06", fed.params.threshold, fed.params.bfv.plain_modulus
    seeds: dict[str, list[Share]] = {o: [states[colluder].held[o][0]] for o in fed.ids[:6]}
    key_shares: dict[str, list[Share]] = {o: [states[colluder].held[o][1]] for o in fed.ids[:6]}
    for holder, left_out in PER_SITE_U3.items():  # what each honest release would carry
        for owner in fed.ids[:6]:
            seed_share, key_share = states[holder].held[owner]
            (key_shares[owner] if owner in left_out else seeds[owner]).append(
                key_share if owner in left_out else seed_share
            )
    assert all(len(seeds[o]) >= k for o in SMALL_SUM)
    assert all(len(key_shares[o]) >= k for o in ("site-03", "site-04", "site-05"))
    assert all(min(len(seeds[o]), len(key_shares[o])) < k for o in fed.ids[:6])

    peers = states[colluder].peers
    pair_seeds: dict[str, dict[str, bytes]] = {o: {} for o in SMALL_SUM}
    for dropped in ("site-03", "site-04", "site-05"):
        mask_key = keys.load_agreement_private(
            shamir.reconstruct_agreement_key(
                key_shares[dropped][:k], threshold=k, public_key=peers[dropped].mask_public
            )
        )
        for owner in SMALL_SUM:
            pair_seeds[owner][dropped] = keys.pairwise_seed(
                mask_key,
                peers[owner].mask_public,
                own_id=dropped,
                peer_id=owner,
                run_id=fed.run_id,
                round_no=1,
            )
    for owner in SMALL_SUM:  # the colluder's own pairs
        pair_seeds[owner][colluder] = keys.pairwise_seed(
            states[colluder].mask_key,
            peers[owner].mask_public,
            own_id=colluder,
            peer_id=owner,
            run_id=fed.run_id,
            round_no=1,
        )
    total = sum(_decrypt_upload(fed, uploads[o], reader=colluder).astype(object) for o in SMALL_SUM)
    for owner in SMALL_SUM:  # pair masks inside the three cancel in the sum
        seed = shamir.reconstruct_seed(
            seeds[owner][:k],
            threshold=k,
            commitment=peers[owner].seed_commitment,
            context=recipe.round._seed_context(info, owner),
        )
        length = total.size
        total -= masking.mask_input(
            np.zeros(length, dtype=np.uint64),
            site_id=owner,
            self_seed=seed,
            pair_seeds=pair_seeds[owner],
            modulus=t,
            run_id=fed.run_id,
            round_no=1,
        ).astype(object)
    updates, weights = fed.updates(1)
    expected = fed.expected(info, list(SMALL_SUM), updates, weights)[0]
    np.testing.assert_array_equal((total % t)[:-1], expected.astype(object) % t)
