"""BFV encryption parameters, checked against what SEAL accepts before any key is made.

The coefficient modulus must stay within the HomomorphicEncryption.org table for 128-bit security,
the plain modulus must be a batching prime below the data modulus, and `noise_budget_estimate`
says what is left of the noise budget after a sum of fresh ciphertexts (the measured model the
planner in `params` relies on). No TenSEAL here: `bfv` turns these into SEAL contexts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_PLAIN_MODULUS",
    "FRESH_NOISE_BITS",
    "HE_STANDARD_MAX_COEFF_BITS",
    "BfvParams",
]

#: Largest total coefficient-modulus bit count for 128-bit classical security with a ternary secret
#: (HomomorphicEncryption.org standard, the table SEAL enforces with ``sec_level_type.tc128``).
HE_STANDARD_MAX_COEFF_BITS: dict[int, int] = {
    1024: 27,
    2048: 54,
    4096: 109,
    8192: 218,
    16384: 438,
    32768: 881,
}

#: A 30-bit prime with ``t ≡ 1 (mod 2·8192)``: batching works for every N up to 8192.
DEFAULT_PLAIN_MODULUS = 1073643521

#: Noise bits a fresh symmetric BFV ciphertext consumes above ``log2 t``. Measured: 5 bits for
#: N = 2048 … 16384 (SEAL's invariant noise budget); one bit is added as a safety margin.
FRESH_NOISE_BITS = 6


def _is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 3.3e24 (covers every plain modulus SEAL accepts)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    for p in small:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


@dataclass(frozen=True)
class BfvParams:
    """BFV encryption parameters (batching: one value per slot, ``poly_modulus_degree`` slots).

    The last coefficient prime is SEAL's special prime: ciphertexts carry only the others (the data
    primes), so the upload size tracks ``data_bits`` while security tracks the total.

    Default: N=4096, a 48-bit data prime, t≈2^30. SEAL's zstd stores each coefficient in a 64-bit
    word and codes bytes, so byte-aligned data primes are the cheapest: 48 bits give 6.9 B/value
    (1.73x float32) against 7.6 B for 54 bits, and leave about 10 bits of noise budget after ten
    sites (13 fresh, measured); 103 coefficient bits are within the 109 allowed at 128-bit security.
    """

    poly_modulus_degree: int = 4096
    coeff_mod_bit_sizes: tuple[int, ...] = (48, 55)
    plain_modulus: int = DEFAULT_PLAIN_MODULUS

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n not in HE_STANDARD_MAX_COEFF_BITS or n < 2048:
            raise ConfigurationError(
                f"poly_modulus_degree must be one of 2048, 4096, 8192, 16384, 32768; got {n}"
            )
        bits = tuple(self.coeff_mod_bit_sizes)
        object.__setattr__(self, "coeff_mod_bit_sizes", bits)
        if len(bits) < 2:
            raise ConfigurationError(
                "coeff_mod_bit_sizes needs a data prime and a special prime (at least 2 entries)"
            )
        if any(not isinstance(b, int) or not 17 <= b <= 60 for b in bits):
            raise ConfigurationError(f"each coefficient prime must have 17..60 bits; got {bits}")
        limit = HE_STANDARD_MAX_COEFF_BITS[n]
        if sum(bits) > limit:
            raise ConfigurationError(
                f"coefficient modulus of {sum(bits)} bits exceeds {limit} bits, the 128-bit "
                f"security limit of the HE standard for N={n}"
            )
        t = self.plain_modulus
        if isinstance(t, bool) or not isinstance(t, int) or not 2 <= t < 2**60:
            raise ConfigurationError(f"plain_modulus must be an integer in 2..2^60; got {t!r}")
        if not _is_prime(t) or t % (2 * n) != 1:
            raise ConfigurationError(
                f"plain_modulus {t} must be a prime congruent to 1 mod {2 * n} (batching)"
            )
        if t.bit_length() >= self.data_bits:
            raise ConfigurationError(
                f"plain_modulus of {t.bit_length()} bits leaves no room under a data modulus of "
                f"{self.data_bits} bits"
            )

    @property
    def slots(self) -> int:
        """Values per ciphertext."""
        return self.poly_modulus_degree

    @property
    def data_bits(self) -> int:
        """Bits of the modulus a ciphertext carries (all primes but the special one)."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    def noise_budget_estimate(self, additions: int) -> float:
        """Conservative noise budget (bits) left after summing `additions` fresh ciphertexts."""
        t_bits = math.log2(self.plain_modulus)
        return self.data_bits - t_bits - FRESH_NOISE_BITS - math.log2(max(additions, 1))
