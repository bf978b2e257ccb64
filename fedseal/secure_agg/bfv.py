"""BFV through TenSEAL: seeded symmetric uploads, parameters-only aggregation, guarded loading.

* Sites hold the federation's secret key, so they encrypt SYMMETRICALLY with SEAL's seeded form
  (`tenseal.sealapi`, ``Encryptor.encrypt_symmetric``): the second polynomial of a fresh ciphertext
  is replaced by its PRNG seed, which halves the upload. TenSEAL's own vectors do not keep the seed.
* The aggregator holds a parameters-only context (no public, relinearisation, Galois or secret key):
  it can load and add ciphertexts and subtract plaintexts, and nothing else. It adds each upload
  as it arrives, so its memory does not grow with the number of sites.
* Ciphertext bytes come from untrusted peers. They are checked in Python before SEAL sees them
  (SEAL header, sizes, the zstd frame's declared and block sizes, so a decompression bomb is
  refused), then loaded under SEAL's own validation, then checked against the expected parameters.
  Every failure is `InvalidCiphertext`.

sealapi serialises only to file paths; the bytes go through an anonymous in-memory file
(``memfd_create``), never the disk. Platforms without memfd fall back to a private temporary file,
which only ever holds ciphertexts. BFV encryption randomness is SEAL's own (OS-seeded) generator.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi

from ._wire import Reader, frame, text
from .bfv_params import BfvParams
from .errors import ConfigurationError, InvalidCiphertext

__all__ = [
    "CiphertextSum",
    "SiteCipher",
    "chunk_count",
    "load_public_context",
    "load_secret_context",
    "make_secret_context",
    "max_ciphertext_bytes",
    "max_context_bytes",
    "pack_chunks",
    "public_context_bytes",
    "secret_context_bytes",
    "unpack_chunks",
]

_SEAL_MAGIC = 0xA15E
_SEAL_HEADER = struct.Struct("<HBBBBHQ")
_COMPR_NONE = 0
_COMPR_ZSTD = 2
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_BLOCK_MAX = 128 * 1024
_VECTOR_TAG = b"fedseal/bfv-vector/v1"


# --------------------------------------------------------------------------- in-memory file


@contextmanager
def _memfile() -> Iterator[tuple[int, str]]:
    """An anonymous file (fd, path) for sealapi's path-only save/load."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("fedseal-bfv", os.MFD_CLOEXEC)
        try:
            yield fd, f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
    else:  # pragma: no cover - non-Linux
        with tempfile.TemporaryDirectory(prefix="fedseal-bfv-") as folder:
            path = os.path.join(folder, "buf")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                yield fd, path
            finally:
                os.close(fd)


def _save(obj: Any) -> bytes:
    with _memfile() as (fd, path):
        obj.save(path)
        return os.pread(fd, os.fstat(fd).st_size, 0)


def _load_into(obj: Any, seal_context: Any, data: bytes, file: tuple[int, str]) -> None:
    fd, path = file
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    obj.load(seal_context, path)


# --------------------------------------------------------------------------- contexts


def _reference_parms_id(params: BfvParams) -> list[int]:
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.BFV)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(
        sealapi.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_mod_bit_sizes))
    )
    parms.set_plain_modulus(params.plain_modulus)
    context = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():
        raise ConfigurationError(f"SEAL rejects {params}: {context.parameters_error_message()}")
    return list(context.first_parms_id())


def _check_context(context: ts.Context, params: BfvParams) -> None:
    seal_context = context.seal_context().data
    if list(seal_context.first_parms_id()) != _reference_parms_id(params):
        raise ConfigurationError(f"the BFV context was not made with {params}")


def make_secret_context(params: BfvParams) -> ts.Context:
    """The federation key: a BFV context holding the secret key (custodian site only)."""
    _reference_parms_id(params)  # fail early, with SEAL's reason, on parameters SEAL refuses
    return ts.context(
        ts.SCHEME_TYPE.BFV,
        poly_modulus_degree=params.poly_modulus_degree,
        plain_modulus=params.plain_modulus,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        n_threads=1,
    )


def secret_context_bytes(context: ts.Context) -> bytes:
    """Parameters and secret key only: what the custodian seals to each site."""
    if not context.is_private():
        raise ConfigurationError("context holds no secret key")
    data: bytes = context.serialize(
        save_public_key=False, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
    )
    return data


def public_context_bytes(context: ts.Context) -> bytes:
    """Parameters only (~0.1 KB): enough to load and add ciphertexts, never to decrypt."""
    data: bytes = context.serialize(
        save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    return data


def max_context_bytes(params: BfvParams) -> int:
    """Upper bound on a serialised context with a secret key (parameters, one key polynomial
    over every prime, protobuf framing): larger bytes are refused before TenSEAL parses them."""
    return params.poly_modulus_degree * len(params.coeff_mod_bit_sizes) * 8 + 64 * 1024


def _load_context(data: bytes, params: BfvParams) -> ts.Context:
    if not isinstance(data, bytes) or not data:
        raise ConfigurationError("context bytes are empty")
    limit = max_context_bytes(params)
    if len(data) > limit:
        raise ConfigurationError(f"context of {len(data)} bytes exceeds the limit of {limit}")
    try:
        return ts.context_from(data, n_threads=1)
    except Exception:  # TenSEAL raises ValueError or RuntimeError on bad streams
        raise ConfigurationError("context bytes do not parse as a TenSEAL context") from None


def load_secret_context(data: bytes, params: BfvParams) -> ts.Context:
    """A site's copy of the federation key; refuses one without a secret key or other parameters."""
    context = _load_context(data, params)
    if not context.is_private():
        raise ConfigurationError("expected a context with the secret key")
    _check_context(context, params)
    return context


def load_public_context(data: bytes, params: BfvParams) -> ts.Context:
    """The aggregator's context; refuses one that carries a secret key (it must never hold one)."""
    context = _load_context(data, params)
    if context.is_private():
        raise ConfigurationError("refusing a context that holds a secret key")
    _check_context(context, params)
    return context


# --------------------------------------------------------------------------- validation


def chunk_count(length: int, params: BfvParams) -> int:
    """Ciphertexts needed for `length` values."""
    return -(-length // params.slots)


def max_ciphertext_bytes(params: BfvParams) -> int:
    """Upper bound on one serialised two-polynomial ciphertext (uncompressed, plus metadata)."""
    data_primes = len(params.coeff_mod_bit_sizes) - 1
    return 2 * params.poly_modulus_degree * data_primes * 8 + 1024


def _check_zstd_frame(frame_bytes: memoryview, max_content: int) -> None:
    """Walk a zstd frame's headers; refuse it unless it can decompress to at most `max_content`."""
    if bytes(frame_bytes[:4]) != _ZSTD_MAGIC or len(frame_bytes) < 6:
        raise InvalidCiphertext("ciphertext is not a zstd frame")
    fhd = frame_bytes[4]
    fcs_flag, single, reserved, checksum, dict_flag = (
        fhd >> 6,
        (fhd >> 5) & 1,
        (fhd >> 3) & 1,
        (fhd >> 2) & 1,
        fhd & 3,
    )
    if reserved or dict_flag:
        raise InvalidCiphertext("unsupported zstd frame header")
    pos = 5
    window = None
    if not single:
        descriptor = frame_bytes[pos]
        pos += 1
        base = 1 << (10 + (descriptor >> 3))
        window = base + (base // 8) * (descriptor & 7)
    fcs_len = {0: 1 if single else 0, 1: 2, 2: 4, 3: 8}[fcs_flag]
    if pos + fcs_len > len(frame_bytes):
        raise InvalidCiphertext("truncated zstd frame header")
    if fcs_len:
        content = int.from_bytes(frame_bytes[pos : pos + fcs_len], "little")
        content += 256 if fcs_len == 2 else 0
        if content > max_content:
            raise InvalidCiphertext("zstd frame declares too much content")
        window = content if single else window
    pos += fcs_len
    if window is None or window > max(max_content, _ZSTD_BLOCK_MAX):
        raise InvalidCiphertext("zstd window too large")
    bound = 0
    while True:
        if pos + 3 > len(frame_bytes):
            raise InvalidCiphertext("truncated zstd block")
        header = int.from_bytes(frame_bytes[pos : pos + 3], "little")
        pos += 3
        last, kind, size = header & 1, (header >> 1) & 3, header >> 3
        if kind == 3 or size > _ZSTD_BLOCK_MAX:
            raise InvalidCiphertext("invalid zstd block")
        if kind == 0:  # raw
            pos += size
            bound += size
        elif kind == 1:  # RLE: one byte repeated `size` times
            pos += 1
            bound += size
        else:  # compressed: at most one block of output
            pos += size
            bound += min(window, _ZSTD_BLOCK_MAX)
        if pos > len(frame_bytes) or bound > max_content:
            raise InvalidCiphertext("zstd frame too large or truncated")
        if last:
            break
    pos += 4 if checksum else 0
    if pos != len(frame_bytes):
        raise InvalidCiphertext("trailing bytes after zstd frame")


def _precheck(data: bytes, params: BfvParams) -> None:
    """Checks on untrusted bytes before they reach SEAL's C++ loader."""
    if not isinstance(data, bytes | bytearray):
        raise InvalidCiphertext("ciphertext must be bytes")
    limit = max_ciphertext_bytes(params)
    if not _SEAL_HEADER.size < len(data) <= limit:
        raise InvalidCiphertext(f"ciphertext of {len(data)} bytes (limit {limit})")
    magic, header_size, major, _minor, compr, reserved, size = _SEAL_HEADER.unpack_from(data)
    if magic != _SEAL_MAGIC or header_size != _SEAL_HEADER.size or major != 4 or reserved:
        raise InvalidCiphertext("not a SEAL 4 ciphertext")
    if size != len(data):
        raise InvalidCiphertext("SEAL header size does not match the bytes")
    if compr == _COMPR_ZSTD:
        _check_zstd_frame(memoryview(data)[_SEAL_HEADER.size :], limit)
    elif compr != _COMPR_NONE:
        raise InvalidCiphertext("unsupported SEAL compression mode")


def _load_ciphertext(
    data: bytes, seal_context: Any, params: BfvParams, file: tuple[int, str]
) -> Any:
    """Check and load one ciphertext through `file` (a `_memfile`, reused across a vector)."""
    _precheck(data, params)
    ciphertext = sealapi.Ciphertext(seal_context)
    try:
        _load_into(ciphertext, seal_context, bytes(data), file)
    except Exception:  # SEAL's logic_error / runtime_error / invalid_argument via pybind11
        raise InvalidCiphertext("SEAL could not load the ciphertext") from None
    if (
        list(ciphertext.parms_id()) != list(seal_context.first_parms_id())
        or ciphertext.size() != 2
        or ciphertext.is_ntt_form()
        or ciphertext.is_transparent()
        or ciphertext.poly_modulus_degree() != params.poly_modulus_degree
        or not sealapi.is_valid_for(ciphertext, seal_context)
    ):
        raise InvalidCiphertext("ciphertext was made under other parameters")
    return ciphertext


def pack_chunks(chunks: Sequence[bytes]) -> bytes:
    """One byte string for a list of serialised ciphertexts."""
    return frame(_VECTOR_TAG, text(len(chunks)), *chunks)


def unpack_chunks(data: bytes, *, n_chunks: int, params: BfvParams) -> list[bytes]:
    """Inverse of `pack_chunks`; the count must be exactly `n_chunks`, else `InvalidCiphertext`."""
    try:
        reader = Reader(data)
        if reader.field(64) != _VECTOR_TAG or reader.integer() != n_chunks:
            raise ValueError("wrong tag or count")
        chunks = [reader.field(max_ciphertext_bytes(params)) for _ in range(n_chunks)]
        reader.end()
    except (ValueError, TypeError):
        raise InvalidCiphertext("malformed ciphertext vector") from None
    return chunks


# --------------------------------------------------------------------------- site side


class SiteCipher:
    """Encrypts (seeded, symmetric) and decrypts with the federation's secret key."""

    def __init__(self, context: ts.Context, params: BfvParams) -> None:
        if not context.is_private():
            raise ConfigurationError("a site cipher needs the secret key")
        _check_context(context, params)
        self.params = params
        self._seal_context = context.seal_context().data
        secret_key = context.secret_key().data
        self._encryptor = sealapi.Encryptor(self._seal_context, secret_key)
        self._decryptor = sealapi.Decryptor(self._seal_context, secret_key)
        self._encoder = sealapi.BatchEncoder(self._seal_context)

    def encrypt(self, values: np.ndarray) -> list[bytes]:
        """Encrypt residues mod t, `slots` per ciphertext (the last one zero-padded)."""
        values = np.asarray(values, dtype=np.uint64)
        if values.ndim != 1 or values.size == 0:
            raise ValueError("values must be a non-empty 1-D array")
        if np.any(values >= np.uint64(self.params.plain_modulus)):
            raise ValueError("values must be reduced mod the plain modulus")
        slots = self.params.slots
        out = []
        for start in range(0, values.size, slots):
            chunk = values[start : start + slots]
            plain = sealapi.Plaintext()
            self._encoder.encode(chunk.tolist(), plain)
            out.append(_save(self._encryptor.encrypt_symmetric(plain)))
        return out

    def noise_budget(self, data: bytes) -> int:
        """Bits of noise budget left in one serialised ciphertext (0: it no longer decrypts)."""
        with _memfile() as file:
            ciphertext = _load_ciphertext(data, self._seal_context, self.params, file)
        return int(self._decryptor.invariant_noise_budget(ciphertext))

    def decrypt(self, chunks: Sequence[bytes], length: int) -> np.ndarray:
        """Decrypt to residues in ``[0, t)``; refuses ciphertexts whose noise budget is spent."""
        if len(chunks) != chunk_count(length, self.params):
            raise InvalidCiphertext("wrong number of ciphertexts for the vector length")
        parts = []
        with _memfile() as file:
            for data in chunks:
                ciphertext = _load_ciphertext(data, self._seal_context, self.params, file)
                if self._decryptor.invariant_noise_budget(ciphertext) <= 0:
                    raise InvalidCiphertext("ciphertext noise budget exhausted")
                plain = sealapi.Plaintext()
                self._decryptor.decrypt(ciphertext, plain)
                parts.append(np.asarray(self._encoder.decode_uint64(plain), dtype=np.uint64))
        return np.concatenate(parts)[:length]


# --------------------------------------------------------------------------- aggregator side


class CiphertextSum:
    """Running homomorphic sum of uploads, with a parameters-only context.

    `add` validates a whole upload before touching the sum, so a bad upload is refused without
    corrupting the aggregate and the round can go on without its sender.
    """

    def __init__(self, context: ts.Context, params: BfvParams, length: int) -> None:
        _check_context(context, params)
        self.params = params
        self.length = length
        self.n_chunks = chunk_count(length, params)
        self._seal_context = context.seal_context().data
        self._evaluator = sealapi.Evaluator(self._seal_context)
        self._encoder = sealapi.BatchEncoder(self._seal_context)
        self._acc: list[Any] | None = None
        self.count = 0

    def add(self, chunks: Sequence[bytes]) -> None:
        """Add one site's ciphertexts (all validated first)."""
        if len(chunks) != self.n_chunks:
            raise InvalidCiphertext(
                f"{len(chunks)} ciphertexts, expected {self.n_chunks} for {self.length} values"
            )
        with _memfile() as file:
            loaded = [_load_ciphertext(c, self._seal_context, self.params, file) for c in chunks]
        if self._acc is None:
            self._acc = loaded
        else:
            for acc, ciphertext in zip(self._acc, loaded, strict=True):
                self._evaluator.add_inplace(acc, ciphertext)
        self.count += 1

    def subtract_plain(self, values: np.ndarray) -> None:
        """Subtract a plaintext vector of residues mod t (the residual masks) from the sum."""
        if self._acc is None:
            raise ValueError("nothing to subtract from: no upload was added")
        values = np.asarray(values, dtype=np.uint64)
        if values.shape != (self.length,) or np.any(values >= np.uint64(self.params.plain_modulus)):
            raise ValueError("values must be residues mod t of the vector's length")
        slots = self.params.slots
        for i, acc in enumerate(self._acc):
            chunk = values[i * slots : (i + 1) * slots]
            if not np.any(chunk):
                continue
            plain = sealapi.Plaintext()
            self._encoder.encode(chunk.tolist(), plain)
            self._evaluator.sub_plain_inplace(acc, plain)

    def to_chunks(self) -> list[bytes]:
        """The encrypted sum, serialised (full form: twice a seeded upload)."""
        if self._acc is None:
            raise ValueError("no upload was added")
        return [_save(acc) for acc in self._acc]
