"""Fixed-point encoding of weighted updates into ``Z_t`` and back.

Stochastic rounding makes the quantised value an unbiased estimate of ``scale·n·Δ``, so the
quantisation error averages out over sites and rounds instead of drifting. Clipping bounds every
coordinate, which is what lets `params.plan` prove the sum cannot wrap; the number of clipped
coordinates is reported so a site can tell its operator when the clip bound is too tight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .prg import RandBytes, uniform_floats

__all__ = [
    "Quantised",
    "clip_values",
    "decode_centred",
    "dequantise_mean",
    "encode_mod",
    "quantise_weighted",
    "stochastic_round",
]


@dataclass(frozen=True)
class Quantised:
    """Integer coordinates ``round(scale·weight·clip(Δ))`` and how many coordinates were clipped."""

    values: np.ndarray  # int64
    n_clipped: int


def clip_values(values: np.ndarray, clip: float) -> tuple[np.ndarray, int]:
    """Clip to ``[-clip, clip]``; return the clipped array and the count of coordinates changed."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("update contains NaN or infinite values")
    n_clipped = int(np.count_nonzero(np.abs(values) > clip))
    return np.clip(values, -clip, clip), n_clipped


def stochastic_round(values: np.ndarray, randbytes: RandBytes) -> np.ndarray:
    """Round each value down or up with probability given by its fraction (unbiased), to int64."""
    values = np.asarray(values, dtype=np.float64)
    if np.any(np.abs(values) >= 2.0**62):
        raise ValueError("values too large for int64 fixed point")
    floor = np.floor(values)
    frac = values - floor
    u = uniform_floats(randbytes, values.size).reshape(values.shape)
    rounded: np.ndarray = floor.astype(np.int64) + (u < frac).astype(np.int64)
    return rounded


def quantise_weighted(
    update: np.ndarray, *, weight: int, scale: float, clip: float, randbytes: RandBytes
) -> Quantised:
    """Quantise ``weight·clip(update)`` at `scale` with stochastic rounding."""
    if weight < 1:
        raise ValueError(f"weight must be at least 1; got {weight}")
    clipped, n_clipped = clip_values(np.ravel(update), clip)
    return Quantised(stochastic_round(clipped * (weight * scale), randbytes), n_clipped)


def encode_mod(values: np.ndarray, modulus: int) -> np.ndarray:
    """Signed integers to their residues in ``[0, modulus)`` (uint64)."""
    values = np.asarray(values, dtype=np.int64)
    residues: np.ndarray = np.mod(values, np.int64(modulus)).astype(np.uint64)
    return residues


def decode_centred(values: np.ndarray, modulus: int) -> np.ndarray:
    """Residues mod `modulus` to signed integers in ``[-(modulus-1)/2, (modulus-1)/2]`` (int64)."""
    values = np.asarray(values, dtype=np.uint64) % np.uint64(modulus)
    signed = values.astype(np.int64)
    return np.where(values > np.uint64((modulus - 1) // 2), signed - np.int64(modulus), signed)


def dequantise_mean(sums: np.ndarray, total_weight: int, scale: float) -> np.ndarray:
    """Weighted mean ``Σ n_i·Δ_i / Σ n_i`` from the integer sums."""
    if total_weight < 1:
        raise ValueError(f"total weight must be at least 1; got {total_weight}")
    return np.asarray(sums, dtype=np.float64) / (scale * total_weight)
