"""BFV layer: seeded uploads, parameters-only sums, and ciphertext bytes from untrusted peers."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fedseal.secure_agg import bfv
from fedseal.secure_agg.errors import ConfigurationError, InvalidCiphertext
from fedseal.secure_agg.params import BfvParams

PARAMS = BfvParams()


@pytest.fixture(scope="module")
def keys():
    secret = bfv.make_secret_context(PARAMS)
    cipher = bfv.SiteCipher(
        bfv.load_secret_context(bfv.secret_context_bytes(secret), PARAMS), PARAMS
    )
    public = bfv.load_public_context(bfv.public_context_bytes(secret), PARAMS)
    return cipher, public


def residues(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, PARAMS.plain_modulus, n, dtype=np.uint64)


def test_roundtrip_and_chunking(keys):
    cipher, _ = keys
    values = residues(2 * PARAMS.slots + 5)
    chunks = cipher.encrypt(values)
    assert len(chunks) == 3 == bfv.chunk_count(values.size, PARAMS)
    np.testing.assert_array_equal(cipher.decrypt(chunks, values.size), values)


def test_seeded_upload_is_about_half_a_full_ciphertext(keys):
    cipher, public = keys
    chunk = cipher.encrypt(residues(PARAMS.slots))
    total = bfv.CiphertextSum(public, PARAMS, PARAMS.slots)
    total.add(chunk)
    full = total.to_chunks()[0]
    assert len(chunk[0]) < 0.55 * len(full)
    assert len(chunk[0]) / PARAMS.slots < 2 * 4  # under 2x float32 per value


def test_sum_of_many_uploads_is_exact(keys):
    cipher, public = keys
    n = 5000
    uploads = [residues(n, seed) for seed in range(12)]
    total = bfv.CiphertextSum(public, PARAMS, n)
    for values in uploads:
        total.add(cipher.encrypt(values))
    correction = residues(n, 99)
    total.subtract_plain(correction)
    expected = (
        sum(u.astype(object) for u in uploads) - correction.astype(object)
    ) % PARAMS.plain_modulus
    np.testing.assert_array_equal(cipher.decrypt(total.to_chunks(), n), expected.astype(np.uint64))
    assert total.count == 12


def test_bad_upload_leaves_the_sum_untouched(keys):
    cipher, public = keys
    n = PARAMS.slots + 1
    a, b = residues(n, 1), residues(n, 2)
    total = bfv.CiphertextSum(public, PARAMS, n)
    total.add(cipher.encrypt(a))
    spoilt = cipher.encrypt(b)
    spoilt[1] = spoilt[1][:100]
    with pytest.raises(InvalidCiphertext):
        total.add(spoilt)
    with pytest.raises(InvalidCiphertext):
        total.add(spoilt[:1])
    np.testing.assert_array_equal(cipher.decrypt(total.to_chunks(), n), a)


def _good_chunk(keys) -> bytes:
    return keys[0].encrypt(residues(10))[0]


def _zstd_rle_bomb(blocks: int) -> bytes:
    """A valid zstd frame of `blocks` RLE blocks, 128 KiB each, with no declared content size."""
    descriptor = (17 - 10) << 3  # 128 KiB window
    out = bytearray(b"\x28\xb5\x2f\xfd") + bytes([0x00, descriptor])
    for i in range(blocks):
        last = 1 if i == blocks - 1 else 0
        out += ((128 * 1024) << 3 | 1 << 1 | last).to_bytes(3, "little") + b"\x00"
    return bytes(out)


def _with_header(body: bytes, compr: int = 2) -> bytes:
    return struct.pack("<HBBBBHQ", 0xA15E, 16, 4, 0, compr, 0, 16 + len(body)) + body


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda good: b"", id="empty"),
        pytest.param(lambda good: os.urandom(len(good)), id="random"),
        pytest.param(lambda good: good[: len(good) // 2], id="truncated"),
        pytest.param(lambda good: good[:16], id="header-only"),
        pytest.param(lambda good: good + b"\x00", id="trailing"),
        pytest.param(lambda good: b"\x00\x00" + good[2:], id="bad-magic"),
        pytest.param(lambda good: good[:5] + b"\x01" + good[6:], id="zlib-mode"),
        pytest.param(lambda good: good[:8] + struct.pack("<Q", 2**40) + good[16:], id="huge-size"),
        pytest.param(lambda good: _with_header(_zstd_rle_bomb(4000)), id="zstd-bomb"),
        pytest.param(lambda good: _with_header(bytes(200), compr=0), id="uncompressed-zeros"),
        pytest.param(lambda good: good * 3, id="oversized"),
    ],
)
def test_malformed_ciphertexts_raise_invalid_ciphertext(keys, make):
    cipher, public = keys
    data = make(_good_chunk(keys))
    total = bfv.CiphertextSum(public, PARAMS, 10)
    with pytest.raises(InvalidCiphertext):
        total.add([data])
    with pytest.raises(InvalidCiphertext):
        cipher.decrypt([data], 10)


def test_zstd_bomb_is_refused_before_seal():
    with pytest.raises(InvalidCiphertext, match="zstd"):
        bfv._precheck(_with_header(_zstd_rle_bomb(4000)), PARAMS)


def test_wrong_parameters_refused(keys):
    _, public = keys
    for other in (BfvParams(coeff_mod_bit_sizes=(54, 55)), BfvParams(plain_modulus=1073692673)):
        foreign = bfv.SiteCipher(bfv.make_secret_context(other), other).encrypt(residues(10) % 1000)
        with pytest.raises(InvalidCiphertext):
            bfv.CiphertextSum(public, PARAMS, 10).add(foreign)
        with pytest.raises(ConfigurationError):
            bfv.CiphertextSum(public, other, 10)


def test_unpack_chunks_is_strict():
    packed = bfv.pack_chunks([b"a", b"bc"])
    assert bfv.unpack_chunks(packed, n_chunks=2, params=PARAMS) == [b"a", b"bc"]
    for bad in (packed[:-1], packed + b"\x00", b"", b"garbage" * 10):
        with pytest.raises(InvalidCiphertext):
            bfv.unpack_chunks(bad, n_chunks=2, params=PARAMS)
    with pytest.raises(InvalidCiphertext):
        bfv.unpack_chunks(packed, n_chunks=3, params=PARAMS)


def test_exhausted_noise_budget_is_detected():
    params = BfvParams(coeff_mod_bit_sizes=(36, 55))  # ~1 bit of fresh budget left at t = 2^30
    cipher = bfv.SiteCipher(bfv.make_secret_context(params), params)
    chunk = cipher.encrypt(np.full(10, params.plain_modulus - 1, dtype=np.uint64))
    public = bfv.load_public_context(
        bfv.public_context_bytes(bfv.make_secret_context(params)), params
    )
    total = bfv.CiphertextSum(public, params, 10)
    for _ in range(64):
        total.add(chunk)
    with pytest.raises(InvalidCiphertext, match="noise"):
        cipher.decrypt(total.to_chunks(), 10)


@pytest.mark.parametrize("coeff", [(48, 55), (54, 55), (44, 55)])
def test_noise_model_is_conservative(coeff):
    """The planner's estimate never exceeds the budget SEAL measures after the additions."""
    params = BfvParams(coeff_mod_bit_sizes=coeff)
    cipher = bfv.SiteCipher(bfv.make_secret_context(params), params)
    public = bfv.load_public_context(
        bfv.public_context_bytes(bfv.make_secret_context(params)), params
    )
    total = bfv.CiphertextSum(public, params, params.slots)
    gen = np.random.default_rng(5)
    for n in range(1, 33):
        values = gen.integers(0, params.plain_modulus, params.slots, dtype=np.uint64)
        total.add(cipher.encrypt(values))
        if n in (1, 4, 16, 32):
            measured = cipher.noise_budget(total.to_chunks()[0])
            assert measured >= params.noise_budget_estimate(n), (n, measured)


FUZZ = textwrap.dedent(
    """
    import random, sys
    import numpy as np
    from fedseal.secure_agg import bfv
    from fedseal.secure_agg.errors import InvalidCiphertext
    from fedseal.secure_agg.params import BfvParams
    params = BfvParams()
    secret = bfv.make_secret_context(params)
    cipher = bfv.SiteCipher(secret, params)
    public = bfv.load_public_context(bfv.public_context_bytes(secret), params)
    good = cipher.encrypt(np.arange(100, dtype=np.uint64))[0]
    rnd = random.Random(int(sys.argv[1]))
    outcomes = {"ok": 0, "refused": 0}
    for i in range(int(sys.argv[2])):
        data = bytearray(good)
        how = i % 4
        if how == 0:
            for _ in range(rnd.randint(1, 8)):
                j = rnd.randrange(len(data)); data[j] ^= 1 << rnd.randrange(8)
        elif how == 1:
            data = data[: rnd.randrange(len(data))]
        elif how == 2:
            j = rnd.randrange(16, 40); data[j] = rnd.randrange(256)
        else:
            j = rnd.randrange(len(data)); data[j:j + 64] = rnd.randbytes(64)
        try:
            bfv.CiphertextSum(public, params, 100).add([bytes(data)])
            cipher.decrypt([bytes(data)], 100)
            outcomes["ok"] += 1
        except InvalidCiphertext:
            outcomes["refused"] += 1
    print(outcomes)
    """
)


def test_fuzzed_ciphertexts_never_crash_the_process():
    """Mutated bytes either load or raise InvalidCiphertext; a segfault would fail this test."""
    result = subprocess.run(
        [sys.executable, "-c", FUZZ, "7", "400"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused" in result.stdout
