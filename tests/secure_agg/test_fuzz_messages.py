"""Fuzz: every secure-aggregation decoder, fed random and mutated bytes.

Each call either succeeds or raises the layer's own error (`InvalidMessage`, `InvalidShare`,
`InvalidCiphertext`, `ConfigurationError`, all `SecureAggError`), never another exception and
never a hang. Mutations are also re-signed with the sender's real key, so the decoders behind
the signature check (ciphertexts, share releases, aggregates) see authenticated garbage too.
"""

from __future__ import annotations

import contextlib

import pytest
from fuzzing import FUZZ, FUZZ_SLOW, mutated, no_hang, random_or_mutated
from hypothesis import given
from hypothesis import strategies as st
from secagg_harness import Federation, rng

from fedseal.secure_agg import bfv, keys, recipe
from fedseal.secure_agg.errors import (
    ConfigurationError,
    InvalidCiphertext,
    InvalidMessage,
    InvalidShare,
    SecureAggError,
)
from fedseal.secure_agg.messages import (
    AggregateMessage,
    ConsistencyAck,
    KeyAdvert,
    SealedFederationKey,
    ShareEnvelope,
    ShareRelease,
    Signed,
    Stage,
    Upload,
)
from fedseal.secure_agg.params import Mode, params_from_json, params_to_json
from fedseal.secure_agg.shamir import Share

ROUND = 1


@pytest.fixture(scope="module")
def fed() -> Federation:
    return Federation(3, Mode.HE_SS, vector_length=200, run_id="fuzz")


@pytest.fixture(scope="module")
def samples(fed: Federation) -> dict[str, object]:
    """One valid message of every kind, from a real he+ss round."""
    captured: dict[str, object] = {}

    def keep(stage, site, message):
        captured.setdefault(stage, message)
        return message

    outcome = fed.run_round(ROUND, tamper=keep)
    site = fed.ids[0]
    upload: Signed = outcome.uploads[site]
    envelopes = captured["share"]
    info = fed.info(ROUND)
    sealed = recipe.custodian_seal_federation_key(
        bfv.make_secret_context(fed.params.bfv),
        custodian=fed.identities[site],
        run_id=fed.run_id,
        recipients={site: keys.public_bytes(fed.sealing[site])},
        randbytes=rng("fuzz-seal"),
    )[site]
    return {
        "upload": upload,
        "advert": captured["advertise"],
        "envelope": envelopes[0],
        "ack": captured["ack"],
        "release": captured["release"],
        "sealed": sealed,
        "aggregate": outcome.message,
        "info": info,
    }


DECODERS = {
    "signed": (Signed, lambda s: s["upload"].to_bytes()),
    "advert": (KeyAdvert, lambda s: s["advert"].body),
    "envelope": (ShareEnvelope, lambda s: s["envelope"].body),
    "upload": (Upload, lambda s: s["upload"].body),
    "ack": (ConsistencyAck, lambda s: s["ack"].body),
    "release": (ShareRelease, lambda s: s["release"].body),
    "sealed": (SealedFederationKey, lambda s: s["sealed"].body),
    "aggregate": (AggregateMessage, lambda s: s["aggregate"].to_bytes()),
}


@pytest.mark.parametrize("kind", sorted(DECODERS))
@FUZZ
@given(data=st.data())
def test_message_decoders_raise_only_invalid_message(samples, kind, data):
    cls, valid = DECODERS[kind]
    raw = data.draw(random_or_mutated(valid(samples)))
    with no_hang(), contextlib.suppress(InvalidMessage):
        cls.from_bytes(raw)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=80), st.integers(), st.text(max_size=40), st.none()))
def test_share_decoder_raises_only_invalid_share(raw):
    with contextlib.suppress(InvalidShare):
        Share.from_bytes(raw)


@FUZZ
@given(data=st.data())
def test_sealed_boxes_and_public_keys(fed, samples, data):
    site = fed.ids[0]
    sealed = SealedFederationKey.from_bytes(samples["sealed"].body).sealed
    raw = data.draw(random_or_mutated(sealed))
    with pytest.raises(InvalidMessage):  # any change to a sealed box fails authentication
        if raw == sealed:
            raise InvalidMessage()
        keys.open_sealed(
            fed.sealing[site],
            raw,
            run_id=fed.run_id,
            recipient_id=site,
            context=b"\x00\x00\x00\x07site-00",
        )
    key = data.draw(st.binary(max_size=40))
    for load in (keys.load_identity_public, keys.load_agreement_public):
        with contextlib.suppress(InvalidMessage):
            load(key)


@FUZZ
@given(data=st.data())
def test_protocol_parameters_from_json(fed, data):
    valid = params_to_json(fed.params)
    text = data.draw(
        st.one_of(
            st.text(max_size=200),
            mutated(valid.encode()).map(lambda b: b.decode("utf-8", "replace")),
            st.sampled_from(
                (
                    "[" * 5000,
                    valid.replace("4096", "1e999"),
                    valid.replace('"plain_modulus":', '"plain_modulus":' + "9" * 4000 + ","),
                    valid.replace("200", "-1"),
                    valid.replace("[48,55]", "[48,55,{}]"),
                )
            ),
        )
    )
    with no_hang(10), contextlib.suppress(ConfigurationError):
        params_from_json(text)


@FUZZ_SLOW
@given(data=st.data())
def test_context_bytes(fed, data):
    public = bfv.public_context_bytes(fed.context)
    raw = data.draw(random_or_mutated(public, max_random=256))
    with no_hang():
        for load in (bfv.load_public_context, bfv.load_secret_context):
            with contextlib.suppress(ConfigurationError):
                load(raw, fed.params.bfv)


@FUZZ_SLOW
@given(data=st.data())
def test_ciphertext_vectors(fed, samples, data):
    payload = Upload.from_bytes(samples["upload"].body).payload
    raw = data.draw(mutated(payload))
    params = fed.params
    with no_hang():
        try:
            chunks = bfv.unpack_chunks(raw, n_chunks=params.n_ciphertexts, params=params.bfv)
            bfv.CiphertextSum(fed.context, params.bfv, params.padded_length).add(chunks)
            fed.ciphers[fed.ids[1]].decrypt(chunks, params.padded_length)
        except InvalidCiphertext:
            pass


def _resigned(fed: Federation, message: Signed, body: bytes, stage: Stage) -> Signed:
    return Signed.create(
        fed.identities[message.sender].identity_key,
        sender=message.sender,
        stage=stage,
        body=body,
        run_id=fed.run_id,
        round_no=ROUND,
    )


@FUZZ_SLOW
@given(data=st.data(), resign=st.booleans())
def test_uploads_signed_or_not_reach_the_sum_or_are_refused(fed, samples, data, resign):
    upload: Signed = samples["upload"]
    info = samples["info"]
    if resign:
        message = _resigned(fed, upload, data.draw(mutated(upload.body)), Stage.TRAIN)
    else:
        try:
            message = Signed.from_bytes(data.draw(mutated(upload.to_bytes())))
        except InvalidMessage:
            return
    total = recipe.UploadSum(info, directory=fed.directory, context=fed.context)
    with no_hang():
        try:
            total.add(message)
        except SecureAggError:
            assert upload.sender in total.rejected


@FUZZ_SLOW
@given(data=st.data())
def test_aggregates_from_the_coordinator(fed, samples, data):
    raw = data.draw(mutated(samples["aggregate"].to_bytes()))
    with no_hang():
        try:
            message = AggregateMessage.from_bytes(raw)
            recipe.site_decrypt_aggregate(samples["info"], message, cipher=fed.ciphers[fed.ids[0]])
        except SecureAggError:
            pass


@FUZZ
@given(data=st.data())
def test_authenticated_but_malformed_key_stage_bodies(fed, samples, data):
    """Adverts, acks and releases with mangled bodies under valid signatures."""
    info = samples["info"]
    advert = samples["advert"]
    forged = _resigned(fed, advert, data.draw(mutated(advert.body)), Stage.ADVERTISE)
    accepted, rejected = recipe.round._verify_adverts(info, [forged], fed.directory)
    assert forged.sender in accepted or forged.sender in rejected
    release = samples["release"]
    body = data.draw(mutated(release.body))
    with contextlib.suppress(InvalidMessage):
        ShareRelease.from_bytes(body)
    ack = samples["ack"]
    forged_ack = _resigned(fed, ack, data.draw(mutated(ack.body)), Stage.CONSISTENCY)
    accepted, rejected = recipe.round._verify_acks(
        info, [forged_ack], tuple(info.sampled), fed.directory
    )
    assert forged_ack.sender in accepted or forged_ack.sender in rejected
