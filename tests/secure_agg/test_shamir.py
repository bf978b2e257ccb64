"""Shamir sharing: any k reconstruct, k-1 do not, a wrong share never yields a secret."""

from __future__ import annotations

import itertools

import pytest
from Crypto.Protocol.SecretSharing import Shamir
from hypothesis import given, settings
from hypothesis import strategies as st
from secagg_harness import rng

from fedseal.secure_agg import keys, shamir
from fedseal.secure_agg.errors import InsufficientSurvivors, InvalidShare
from fedseal.secure_agg.shamir import Share

CONTEXT = b"run-1|round-3|site-00"


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    n=st.integers(2, 12),
    data=st.data(),
)
def test_any_k_shares_reconstruct(secret, n, data):
    k = data.draw(st.integers(n // 2 + 1, n))
    shares = shamir.split_secret(secret, n=n, k=k)
    subset = data.draw(st.lists(st.sampled_from(shares), min_size=k, max_size=n, unique=True))
    commitment = shamir.seed_commitment(secret, context=CONTEXT)
    assert shamir.reconstruct_seed(subset, threshold=k, commitment=commitment, context=CONTEXT) == (
        secret
    )


@settings(max_examples=60, deadline=None)
@given(
    indices=st.lists(st.integers(1, shamir.MAX_SHARES), min_size=1, max_size=40, unique=True),
    data=st.data(),
)
def test_interpolation_is_pycryptodomes(indices, data):
    """Any points, not only a polynomial's shares: the same value as `Shamir.combine`."""
    shares = [Share(i, data.draw(st.binary(min_size=32, max_size=32))) for i in indices]
    expected = Shamir.combine([(s.index, s.value[:16]) for s in shares]) + Shamir.combine(
        [(s.index, s.value[16:]) for s in shares]
    )
    assert shamir._combine(shares, 1) == expected


def test_every_k_subset_of_ten():
    secret = bytes(range(32))
    shares = shamir.split_secret(secret, n=10, k=6)
    commitment = shamir.seed_commitment(secret, context=CONTEXT)
    for subset in itertools.combinations(shares, 6):
        assert (
            shamir.reconstruct_seed(subset, threshold=6, commitment=commitment, context=CONTEXT)
            == secret
        )


def test_k_minus_one_shares_do_not_give_the_secret():
    secret = bytes(range(32))
    shares = shamir.split_secret(secret, n=7, k=4)
    commitment = shamir.seed_commitment(secret, context=CONTEXT)
    with pytest.raises(InsufficientSurvivors):
        shamir.reconstruct_seed(shares[:3], threshold=4, commitment=commitment, context=CONTEXT)
    # interpolating k-1 points gives some other value, not the secret
    for subset in itertools.combinations(shares, 3):
        low = Shamir.combine([(s.index, s.value[:16]) for s in subset])
        high = Shamir.combine([(s.index, s.value[16:]) for s in subset])
        assert low != secret[:16] and high != secret[16:]


def test_tampered_share_is_detected_never_returned():
    secret = bytes(range(32))
    shares = shamir.split_secret(secret, n=5, k=3)
    commitment = shamir.seed_commitment(secret, context=CONTEXT)
    for position in range(3):
        for byte in (0, 17, 31):
            bad = list(shares[:3])
            value = bytearray(bad[position].value)
            value[byte] ^= 0x40
            bad[position] = Share(bad[position].index, bytes(value))
            with pytest.raises(InvalidShare):
                shamir.reconstruct_seed(bad, threshold=3, commitment=commitment, context=CONTEXT)
    # a share presented under another index is just as wrong
    moved = [Share(4, shares[0].value), shares[1], shares[2]]
    with pytest.raises(InvalidShare):
        shamir.reconstruct_seed(moved, threshold=3, commitment=commitment, context=CONTEXT)


def test_commitment_is_bound_to_its_context():
    secret = bytes(32)
    shares = shamir.split_secret(secret, n=3, k=2)
    commitment = shamir.seed_commitment(secret, context=CONTEXT)
    with pytest.raises(InvalidShare):
        shamir.reconstruct_seed(shares, threshold=2, commitment=commitment, context=b"other")


def test_mask_key_checked_against_public_key():
    key = keys.generate_agreement_key(rng("shamir-key"))
    other = keys.generate_agreement_key(rng("shamir-other"))
    shares = shamir.split_secret(keys.private_bytes(key), n=4, k=3)
    rebuilt = shamir.reconstruct_agreement_key(
        shares[1:], threshold=3, public_key=keys.public_bytes(key)
    )
    assert rebuilt == keys.private_bytes(key)
    with pytest.raises(InvalidShare):
        shamir.reconstruct_agreement_key(
            shares[1:], threshold=3, public_key=keys.public_bytes(other)
        )


def test_duplicate_indices_refused():
    shares = shamir.split_secret(bytes(32), n=4, k=2)
    with pytest.raises(InvalidShare):
        shamir.reconstruct_seed(
            [shares[0], shares[0]],
            threshold=2,
            commitment=shamir.seed_commitment(bytes(32), context=CONTEXT),
            context=CONTEXT,
        )


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x00\x00" + bytes(32), b"\x00\x01" + bytes(31), b"\x00\x01" + bytes(33), "x"],
)
def test_share_bytes_garbage(data):
    with pytest.raises(InvalidShare):
        Share.from_bytes(data)


def test_share_serialisation_roundtrip():
    for share in shamir.split_secret(bytes(range(32)), n=300, k=151)[::37]:
        assert Share.from_bytes(share.to_bytes()) == share
        assert len(share.to_bytes()) == shamir.SHARE_BYTES


def test_split_arguments_checked():
    with pytest.raises(ValueError):
        shamir.split_secret(bytes(16), n=3, k=2)
    with pytest.raises(ValueError):
        shamir.split_secret(bytes(32), n=2, k=3)
