"""Bad input from one party is refused with a clear error and the round goes on without it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from secagg_harness import rng

from fedseal.secure_agg import bfv, keys, recipe
from fedseal.secure_agg import messages as messages_
from fedseal.secure_agg.errors import (
    ConfigurationError,
    InvalidCiphertext,
    InvalidMessage,
    InvalidShare,
)
from fedseal.secure_agg.messages import ShareRelease, Signed, Stage, Upload
from fedseal.secure_agg.params import BfvParams, Mode
from fedseal.secure_agg.shamir import Share

OFFENDER = "site-02"


def keys_rng(label):
    return rng("bad-input", label)


def _resign(fed, message: Signed, body: bytes, *, round_no: int, stage: Stage | None = None):
    return Signed.create(
        fed.identities[message.sender].identity_key,
        sender=message.sender,
        stage=stage or message.stage,
        body=body,
        run_id=fed.run_id,
        round_no=round_no,
    )


def _round_without_offender(fed, round_no, tamper, stage="upload"):
    def hook(s, site, message):
        return tamper(message) if (s == stage and site == OFFENDER) else message

    outcome = fed.run_round(round_no, tamper=hook)
    np.testing.assert_array_equal(outcome.aggregate.sums, outcome.expected_sums)
    assert outcome.aggregate.total_weight == outcome.expected_weight
    return outcome


@pytest.mark.parametrize("mode", list(Mode))
def test_forged_upload_signature(federation, mode):
    fed = federation(5, mode)
    forger = fed.identities["site-00"].identity_key

    def forge(message):
        return Signed.create(
            forger,
            sender=message.sender,
            stage=message.stage,
            body=message.body,
            run_id=fed.run_id,
            round_no=1,
        )

    outcome = _round_without_offender(fed, 1, forge)
    assert OFFENDER not in outcome.contributors


@pytest.mark.parametrize("mode", list(Mode))
def test_missing_signature(federation, mode):
    fed = federation(5, mode)
    outcome = _round_without_offender(fed, 2, lambda m: dataclasses.replace(m, signature=b""))
    assert OFFENDER not in outcome.contributors


@pytest.mark.parametrize("mode", list(Mode))
def test_replay_from_an_earlier_round(federation, mode):
    fed = federation(5, mode)
    earlier = fed.run_round(3).uploads[OFFENDER]
    outcome = _round_without_offender(fed, 4, lambda m: earlier)
    assert OFFENDER not in outcome.contributors


def test_replay_from_another_stage(federation):
    fed = federation(5, Mode.HE_SS)
    # a genuine signed message of another stage, relabelled as an upload
    outcome = _round_without_offender(
        fed, 5, lambda m: dataclasses.replace(m, stage=Stage.ADVERTISE)
    )
    assert OFFENDER not in outcome.contributors
    outcome = _round_without_offender(
        fed,
        6,
        lambda m: _resign(fed, m, m.body, round_no=6, stage=Stage.CONSISTENCY),
    )
    assert OFFENDER not in outcome.contributors


def test_upload_made_for_a_weaker_mode_is_refused(federation):
    fed = federation(5, Mode.HE_SS)

    def downgrade(message):
        upload = Upload.from_bytes(message.body)
        return _resign(fed, message, Upload(Mode.HE, upload.payload).to_bytes(), round_no=7)

    outcome = _round_without_offender(fed, 7, downgrade)
    assert OFFENDER not in outcome.contributors


@pytest.mark.parametrize("mode", [Mode.HE, Mode.HE_SS])
@pytest.mark.parametrize(
    "corrupt",
    ["garbage", "truncated", "wrong-coeff", "wrong-t", "wrong-count", "empty"],
)
def test_bad_ciphertexts_are_refused(federation, mode, corrupt):
    fed = federation(5, mode)
    params = fed.params.bfv
    others = {
        "wrong-coeff": BfvParams(coeff_mod_bit_sizes=(54, 55)),
        "wrong-t": BfvParams(plain_modulus=1073692673),
    }

    def spoil(message):
        upload = Upload.from_bytes(message.body)
        chunks = bfv.unpack_chunks(upload.payload, n_chunks=fed.params.n_ciphertexts, params=params)
        if corrupt == "garbage":
            chunks[0] = bytes(range(256)) * 100
        elif corrupt == "truncated":
            chunks[-1] = chunks[-1][: len(chunks[-1]) // 2]
        elif corrupt in others:
            other = bfv.SiteCipher(bfv.make_secret_context(others[corrupt]), others[corrupt])
            chunks = other.encrypt(np.zeros(fed.params.padded_length, dtype=np.uint64))
        elif corrupt == "wrong-count":
            chunks = chunks[:-1]
        else:
            chunks = [b""] * len(chunks)
        payload = b"\x00garbage" if corrupt == "empty" else bfv.pack_chunks(chunks)
        return _resign(fed, message, Upload(upload.mode, payload).to_bytes(), round_no=8)

    def hook(stage, site, message):
        return spoil(message) if (stage == "upload" and site == OFFENDER) else message

    outcome = fed.run_round(8, tamper=hook)
    np.testing.assert_array_equal(outcome.aggregate.sums, outcome.expected_sums)
    assert OFFENDER not in outcome.contributors


def test_bad_ciphertext_error_is_invalid_ciphertext(federation):
    fed = federation(3, Mode.HE)
    info = fed.info(9)
    total = recipe.UploadSum(info, directory=fed.directory, context=fed.context)
    message = _resign(
        fed,
        Signed("site-01", Stage.TRAIN, b"", b""),
        Upload(Mode.HE, bfv.pack_chunks([b"\x5e\xa1" + bytes(100)])).to_bytes(),
        round_no=9,
    )
    with pytest.raises(InvalidCiphertext):
        total.add(message)
    assert total.contributors == ()
    assert "site-01" in total.rejected


def test_wrong_share_released(federation):
    fed = federation(5, Mode.HE_SS)

    def corrupt(message):
        release = ShareRelease.from_bytes(message.body)
        owner, kind, raw = release.entries[0]
        bad = raw[:-1] + bytes([raw[-1] ^ 1])
        entries = ((owner, kind, bad), *release.entries[1:])
        return _resign(fed, message, ShareRelease(entries).to_bytes(), round_no=10)

    outcome = _round_without_offender(fed, 10, corrupt, stage="release")
    assert OFFENDER in outcome.rejected
    assert "not valid" in outcome.rejected[OFFENDER]


def test_both_kinds_never_released(federation):
    """A release claiming the mask key of a survivor is refused as a bad share."""
    fed = federation(5, Mode.HE_SS)

    def greedy(message):
        release = ShareRelease.from_bytes(message.body)
        owner, _, raw = release.entries[0]
        entries = ((owner, messages_.ShareKind.MASK_KEY, raw), *release.entries[1:])
        return _resign(fed, message, ShareRelease(entries).to_bytes(), round_no=11)

    outcome = _round_without_offender(fed, 11, greedy, stage="release")
    assert OFFENDER in outcome.rejected


def test_forged_advert_is_dropped_before_relay(federation):
    fed = federation(5, Mode.HE_SS)
    outcome = fed.run_round(
        12,
        tamper=lambda stage, site, m: (
            dataclasses.replace(m, body=m.body[:-1] + b"\x00")
            if (stage == "advertise" and site == OFFENDER)
            else m
        ),
    )
    np.testing.assert_array_equal(outcome.aggregate.sums, outcome.expected_sums)
    assert OFFENDER not in outcome.contributors


def test_ack_over_another_survivor_set_is_refused(federation):
    fed = federation(5, Mode.HE_SS)
    outcome = fed.run_round(
        13,
        tamper=lambda stage, site, m: (
            _resign(fed, m, messages_.ConsistencyAck(("site-00",)).to_bytes(), round_no=13)
            if (stage == "ack" and site == OFFENDER)
            else m
        ),
    )
    # the offender's update is in (it uploaded) but it may not release shares
    np.testing.assert_array_equal(outcome.aggregate.sums, outcome.expected_sums)
    assert OFFENDER in outcome.contributors


def test_site_refuses_tampered_relayed_advert(federation):
    fed = federation(3, Mode.HE_SS)
    info = fed.info(14)
    states, adverts = {}, []
    for s in fed.ids:
        states[s], message = recipe.site_advertise(info, fed.identities[s], randbytes=keys_rng(s))
        adverts.append(message)
    adverts[1] = dataclasses.replace(adverts[1], body=adverts[0].body)
    with pytest.raises(InvalidMessage):
        recipe.site_share_keys(
            states["site-00"], adverts, directory=fed.directory, randbytes=keys_rng("x")
        )


def test_site_signs_one_survivor_set_and_releases_once(federation):
    fed = federation(3, Mode.HE_SS)
    info = fed.info(15)
    states, adverts = {}, []
    for s in fed.ids:
        states[s], message = recipe.site_advertise(info, fed.identities[s], randbytes=keys_rng(s))
        adverts.append(message)
    bundles = {
        s: recipe.site_share_keys(
            states[s], adverts, directory=fed.directory, randbytes=keys_rng(s + "share")
        )
        for s in fed.ids
    }
    accepted, _ = recipe.collect_adverts(info, adverts, directory=fed.directory)
    book = recipe.collect_envelopes(info, bundles, adverts=accepted, directory=fed.directory)
    for s in fed.ids:
        recipe.site_prepare_upload(
            info,
            fed.identities[s],
            np.zeros(fed.params.vector_length),
            weight=1,
            randbytes=keys_rng(s + "up"),
            cipher=fed.ciphers[s],
            secagg=states[s],
            envelopes=book.for_recipient(s),
            directory=fed.directory,
        )
    state = states["site-00"]
    ack = recipe.site_consistency(state, fed.ids)
    with pytest.raises(InvalidMessage):
        recipe.site_consistency(state, fed.ids[:2])  # a second, different survivor set
    acks = [ack] + [recipe.site_consistency(states[s], fed.ids) for s in fed.ids[1:]]
    recipe.site_release_shares(state, acks, directory=fed.directory)
    with pytest.raises(InvalidMessage):
        recipe.site_release_shares(state, acks, directory=fed.directory)


def test_coordinator_skipping_unmask_is_caught_by_sites(federation):
    fed = federation(3, Mode.HE_SS)
    outcome = fed.run_round(16)
    info = fed.info(16)
    total = recipe.aggregator_sum(
        info, outcome.uploads.values(), directory=fed.directory, context=fed.context
    )
    masked = messages_.AggregateMessage(Mode.HE_SS, total.contributors, total._payload())
    with pytest.raises(InvalidCiphertext):
        recipe.site_decrypt_aggregate(info, masked, cipher=fed.ciphers["site-00"])


def test_no_silent_fallback_between_modes(federation):
    fed = federation(3, Mode.HE_SS)
    info = fed.info(17)
    me = fed.identities["site-00"]
    zeros = np.zeros(fed.params.vector_length)
    with pytest.raises(ConfigurationError):  # he+ss without SecAgg state
        recipe.site_prepare_upload(
            info, me, zeros, weight=1, randbytes=keys_rng(1), cipher=fed.ciphers["site-00"]
        )
    with pytest.raises(ConfigurationError):  # he+ss without a cipher
        recipe.site_prepare_upload(info, me, zeros, weight=1, randbytes=keys_rng(2))
    with pytest.raises(ConfigurationError):  # coordinator without a context
        recipe.UploadSum(info, directory=fed.directory)
    plain = federation(3, Mode.PLAIN)
    with pytest.raises(ConfigurationError):  # plain given a cipher: refuse, do not ignore
        recipe.site_prepare_upload(
            plain.info(1), me, zeros, weight=1, randbytes=keys_rng(3), cipher=fed.ciphers["site-00"]
        )
    with pytest.raises(ConfigurationError):  # weight beyond the planned headroom
        recipe.site_prepare_upload(
            plain.info(1), me, zeros, weight=plain.params.max_weight + 1, randbytes=keys_rng(4)
        )


def test_shamir_share_garbage_is_invalid_share():
    with pytest.raises(InvalidShare):
        Share.from_bytes(b"\x00\x01" + b"x" * 10)


def test_sealed_federation_key_bound_to_recipient(federation):
    fed = federation(3, Mode.HE)
    secret = bfv.make_secret_context(fed.params.bfv)
    custodian = fed.identities["site-00"]
    sealed = recipe.custodian_seal_federation_key(
        secret,
        custodian=custodian,
        run_id=fed.run_id,
        recipients={s: keys.public_bytes(fed.sealing[s]) for s in fed.ids},
        randbytes=keys_rng("ceremony"),
    )
    common = {
        "custodian_id": "site-00",
        "directory": fed.directory,
        "params": fed.params.bfv,
    }
    with pytest.raises(InvalidMessage):  # site-02 cannot open site-01's box
        recipe.site_open_federation_key(
            sealed["site-01"],
            site_id="site-02",
            sealing_key=fed.sealing["site-02"],
            run_id=fed.run_id,
            **common,
        )
    with pytest.raises(InvalidMessage):  # nor can the right site in another run
        recipe.site_open_federation_key(
            sealed["site-01"],
            site_id="site-01",
            sealing_key=fed.sealing["site-01"],
            run_id="another-run",
            **common,
        )
    with pytest.raises(InvalidMessage):  # a key not from the custodian is refused
        recipe.site_open_federation_key(
            sealed["site-01"],
            site_id="site-01",
            sealing_key=fed.sealing["site-01"],
            run_id=fed.run_id,
            custodian_id="site-02",
            directory=fed.directory,
            params=fed.params.bfv,
        )


def test_forged_duplicate_advert_does_not_displace_the_genuine_one(federation):
    fed = federation(3, Mode.HE_SS)
    info = fed.info(18)
    states, adverts = {}, []
    for s in fed.ids:
        states[s], message = recipe.site_advertise(info, fed.identities[s], randbytes=keys_rng(s))
        adverts.append(message)
    forged = dataclasses.replace(adverts[1], body=adverts[0].body)
    accepted, rejected = recipe.collect_adverts(info, [*adverts, forged], directory=fed.directory)
    assert accepted["site-01"] is adverts[1]
    assert "site-01" in rejected


def test_site_round_repr_hides_secrets(federation):
    fed = federation(3, Mode.HE_SS)
    state, _ = recipe.site_advertise(fed.info(19), fed.identities["site-00"], randbytes=keys_rng(0))
    assert state.self_seed.hex() not in repr(state) and "self_seed" not in repr(state)
