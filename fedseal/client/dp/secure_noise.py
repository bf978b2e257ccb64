"""DP-SGD's randomness from a cryptographic generator: Poisson batch draws and Gaussian noise.

A DP guarantee holds only if whoever sees the released gradient cannot predict the noise or the
batch membership. torch's generators are MT19937 (Philox on a GPU): statistically sound, but
their whole future output follows from their state or seed, so they are not for secrets. Here
every byte comes from a ChaCha20 keystream (`cryptography`'s ChaCha20 encrypting zeros) under a
fresh 256-bit key from `os.urandom`: a maintained stream cipher used as a CSPRNG, as the Linux
kernel's own generator uses it. It is rekeyed from the OS in a forked child
(which must not repeat its parent's stream) and after 2**32 bytes.

Why not `os.urandom` for every byte: one DP step of the head adapter on the largest hospital
(8,470 noise values and 10,000 Poisson draws, 148 kB) took 290 us of `os.urandom` (~500 MB/s)
against 28 us of ChaCha20 (~5 GB/s), next to a plain step of ~1.5 ms on one CPU thread. With
ChaCha20, `bench/bench_regime.py --step-time` gives a DP step 1.22-1.25x a plain one (1.02-1.16x
with torch's generator, on the same machine); most of the difference is Box-Muller's float64
log, cos and sin, which any source of bytes would pay.

Uniforms are 53-bit: (k + 1) / 2**53 for the top 53 bits k of a 64-bit word, in (0, 1], so a
logarithm is always finite. A coin with probability p is the integer test w < floor(p * 2**64)
on a 64-bit word (never above p). Normals are Box-Muller in float64 (both outputs of each pair
used), scaled by `std` and only then cast to the tensor's dtype and device. Nothing here reads or
advances torch's or numpy's global generators.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["SecureRandom"]

_KEY_BYTES = 32
_NONCE_BYTES = 12
_REKEY_AFTER = 2**32
"""Keystream bytes per key: far below the 2**38 bytes a 32-bit ChaCha20 block counter allows."""
_MANTISSA = 53
_TWO_PI = 2.0 * math.pi


class SecureRandom:
    """Uniform and standard-normal draws from a ChaCha20 keystream keyed from `os.urandom`.

    One instance per training call is enough; instances never share a key, and a forked process
    rekeys before its first draw. Safe to share between threads (draws are serialised).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rekey()

    def _rekey(self) -> None:
        # RFC 7539 layout: 4-byte little-endian block counter (from 0), then a 12-byte nonce.
        # The key is fresh, so the nonce need not be unique; it is random anyway.
        nonce = bytes(4) + os.urandom(_NONCE_BYTES)
        cipher = Cipher(algorithms.ChaCha20(os.urandom(_KEY_BYTES), nonce), mode=None)
        self._encryptor = cipher.encryptor()
        self._used = 0
        self._pid = os.getpid()

    def random_bytes(self, n: int) -> bytes:
        """`n` bytes of keystream."""
        if n < 0:
            raise ValueError(f"cannot draw {n} bytes")
        with self._lock:
            if self._pid != os.getpid() or self._used + n > _REKEY_AFTER:
                self._rekey()
            self._used += n
            return self._encryptor.update(bytes(n))

    def _words(self, n: int) -> np.ndarray:
        return np.frombuffer(self.random_bytes(8 * n), dtype=np.uint64)

    def _uniform64(self, n: int) -> np.ndarray:
        top = (self._words(n) >> np.uint64(64 - _MANTISSA)).astype(np.float64)
        top += 1.0
        top *= 2.0**-_MANTISSA
        return top

    def uniform(self, n: int) -> torch.Tensor:
        """`n` independent uniforms in (0, 1] at 53-bit resolution, float64 on the CPU."""
        if n < 0:
            raise ValueError(f"cannot draw {n} values")
        return torch.from_numpy(self._uniform64(n))

    def bernoulli(self, n: int, p: float) -> torch.Tensor:
        """`n` independent coin flips, True with probability `p` (to within 2**-64), on the CPU.

        A 64-bit word w is True iff w < floor(p * 2**64): an integer comparison, no floats."""
        if n < 0:
            raise ValueError(f"cannot draw {n} values")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if p == 1.0:
            return torch.ones(n, dtype=torch.bool)
        threshold = np.uint64(int(p * 2.0**64))
        return torch.from_numpy(self._words(n) < threshold)

    def normal(
        self,
        shape: Sequence[int] | torch.Size,
        std: float = 1.0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """A tensor of independent N(0, std²) draws (Box-Muller in float64, then cast)."""
        if not (math.isfinite(std) and std >= 0):
            raise ValueError(f"std must be finite and >= 0, got {std}")
        size = tuple(int(d) for d in shape)
        count = math.prod(size)
        if std == 0 or count == 0:
            return torch.zeros(size, device=device, dtype=dtype)
        pairs = (count + 1) // 2
        u = self._uniform64(2 * pairs)
        # std * sqrt(-2 ln u1), u1 in (0, 1]; numpy's log and sqrt are the faster ones here
        radius = u[:pairs]
        np.log(radius, out=radius)
        radius *= -2.0
        np.sqrt(radius, out=radius)
        radius *= std
        scale = torch.from_numpy(radius)
        angle = torch.from_numpy(u[pairs:]).mul_(_TWO_PI)  # and torch's cos and sin
        z = torch.empty(2 * pairs, dtype=torch.float64)
        torch.cos(angle, out=z[:pairs]).mul_(scale)
        torch.sin(angle, out=z[pairs:]).mul_(scale)
        return z[:count].view(size).to(device=device, dtype=dtype)
