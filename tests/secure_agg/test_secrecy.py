"""Secrecy as checks that can fail: the coordinator cannot decrypt, a site sees only masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tenseal as ts

from fedseal.secure_agg import bfv
from fedseal.secure_agg.errors import ConfigurationError
from fedseal.secure_agg.messages import Upload
from fedseal.secure_agg.params import BfvParams, Mode

BUCKETS = 64


def chi_square_uniform(values: np.ndarray, modulus: int) -> float:
    """Pearson's statistic of `values` (residues mod `modulus`) against the uniform distribution."""
    buckets = (values.astype(object) * BUCKETS // modulus).astype(np.int64)
    counts = np.bincount(buckets, minlength=BUCKETS)
    expected = values.size / BUCKETS
    return float(((counts - expected) ** 2 / expected).sum())


def chi_square_critical(df: int, z: float = 3.09) -> float:
    """Upper 0.999 quantile of chi-square(df), Wilson-Hilferty approximation."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


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
