"""SecAgg masking in ``Z_t`` and the unmasking algebra (Bonawitz et al. 2017).

A site uploads ``y_i = x_i + PRG(b_i) + Σ_{j ∈ N(i)} σ(i, j)·PRG(s_ij)  (mod t)`` with
``σ(i, j) = +1`` if ``i < j`` else ``-1``: over any set of survivors the pairwise terms cancel in
pairs, and one uniform mask term alone hides ``x_i`` perfectly. Once survivors are known, the
residual to subtract is ``Σ_{j alive} PRG(b_j)`` plus, for each dropped ``d`` and each alive
neighbour ``j`` of ``d``, the term ``σ(j, d)·PRG(s_jd)`` that ``j`` added and ``d`` never cancelled.

Every function takes the neighbour sets explicitly, so a SecAgg+ sparse graph needs no change here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .prg import Purpose, expand_mask

__all__ = ["mask_input", "pair_sign", "residual_mask"]


def pair_sign(site_id: str, peer_id: str) -> int:
    """+1 if `site_id` sorts before `peer_id`, else -1: the ends of a pair get opposite signs."""
    if site_id == peer_id:
        raise ValueError("a site is not its own peer")
    return 1 if site_id < peer_id else -1


class _MaskSum:
    """``Σ ± PRG(seed)  (mod t)`` over many masks, reduced once at the end.

    A subtracted mask is added as ``t - mask``, so every term is at most ``t``; the uint64 sum
    takes ``2^64 / t - 1`` terms before it could overflow (at least three, as t < 2^62), and is
    folded mod ``t`` only when that room runs out and in `result`. A remainder over the whole
    vector after every mask was most of the unmasking's numpy time.
    """

    def __init__(self, length: int, modulus: int, *, run_id: str, round_no: int) -> None:
        if modulus >= 2**62:
            raise ValueError("modulus too large for uint64 mask arithmetic")
        self._length, self._modulus = length, modulus
        self._run_id, self._round_no = run_id, round_no
        self._room = (2**64 - 1) // modulus - 1
        self._sum = np.zeros(length, dtype=np.uint64)
        self._terms = 0

    def add(self, seed: bytes, sign: int, purpose: Purpose) -> None:
        """Add (sign +1) or subtract (sign -1) the mask `seed` expands to for `purpose`."""
        mask = expand_mask(
            seed,
            self._length,
            self._modulus,
            purpose=purpose,
            run_id=self._run_id,
            round_no=self._round_no,
        )
        if sign < 0:
            np.subtract(np.uint64(self._modulus), mask, out=mask)  # -mask mod t, in (0, t]
        if self._terms >= self._room:
            np.remainder(self._sum, np.uint64(self._modulus), out=self._sum)
            self._terms = 1
        self._sum += mask
        self._terms += 1

    def result(self, start: np.ndarray | None = None) -> np.ndarray:
        """``start + Σ ± masks  (mod t)``; `start` (residues mod t) is not modified."""
        t = np.uint64(self._modulus)
        out = np.remainder(self._sum, t)
        if start is not None:
            out += start
            np.remainder(out, t, out=out)
        return out


def mask_input(
    values: np.ndarray,
    *,
    site_id: str,
    self_seed: bytes,
    pair_seeds: Mapping[str, bytes],
    modulus: int,
    run_id: str,
    round_no: int,
) -> np.ndarray:
    """``y = x + PRG(b) + Σ_j σ(site, j)·PRG(s_j)  (mod t)`` for residues `values` in ``[0, t)``.

    `pair_seeds` maps each neighbour's id to the pairwise seed shared with it.
    """
    x = np.asarray(values, dtype=np.uint64)
    if x.ndim != 1:
        raise ValueError("values must be a 1-D array")
    if np.any(x >= np.uint64(modulus)):
        raise ValueError("values must be reduced mod t")
    if site_id in pair_seeds:
        raise ValueError("a site cannot have a pairwise seed with itself")
    total = _MaskSum(x.size, modulus, run_id=run_id, round_no=round_no)
    total.add(self_seed, 1, Purpose.SELF_MASK)
    for peer_id in sorted(pair_seeds):
        total.add(pair_seeds[peer_id], pair_sign(site_id, peer_id), Purpose.PAIR_MASK)
    return total.result(x)


def residual_mask(
    length: int,
    *,
    modulus: int,
    run_id: str,
    round_no: int,
    survivor_self_seeds: Mapping[str, bytes],
    dropped_pair_seeds: Mapping[tuple[str, str], bytes],
) -> np.ndarray:
    """Mask left in the sum of the survivors' uploads (residues mod t, to subtract).

    `survivor_self_seeds` maps each survivor to its reconstructed ``b_j``; `dropped_pair_seeds` maps
    ``(survivor j, dropped d)`` to ``s_jd``, recomputed from d's reconstructed mask key, for every
    dropped neighbour of every survivor.
    """
    total = _MaskSum(length, modulus, run_id=run_id, round_no=round_no)
    for site_id in sorted(survivor_self_seeds):
        total.add(survivor_self_seeds[site_id], 1, Purpose.SELF_MASK)
    for survivor, dropped in sorted(dropped_pair_seeds):
        if survivor in survivor_self_seeds and dropped in survivor_self_seeds:
            raise ValueError(f"site {dropped!r} is listed both as survivor and as dropped")
        total.add(
            dropped_pair_seeds[(survivor, dropped)], pair_sign(survivor, dropped), Purpose.PAIR_MASK
        )
    return total.result()
