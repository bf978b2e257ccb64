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


def _add_signed(acc: np.ndarray, mask: np.ndarray, sign: int, modulus: int) -> None:
    if sign > 0:
        acc += mask
    else:
        acc += np.uint64(modulus) - mask  # mask < modulus, so this is -mask mod t, non-negative
    np.remainder(acc, np.uint64(modulus), out=acc)


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
    if modulus >= 2**62:
        raise ValueError("modulus too large for uint64 mask arithmetic")
    acc = x.copy()
    mask = expand_mask(
        self_seed, x.size, modulus, purpose=Purpose.SELF_MASK, run_id=run_id, round_no=round_no
    )
    _add_signed(acc, mask, 1, modulus)
    for peer_id in sorted(pair_seeds):
        mask = expand_mask(
            pair_seeds[peer_id],
            x.size,
            modulus,
            purpose=Purpose.PAIR_MASK,
            run_id=run_id,
            round_no=round_no,
        )
        _add_signed(acc, mask, pair_sign(site_id, peer_id), modulus)
    return acc


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
    if modulus >= 2**62:
        raise ValueError("modulus too large for uint64 mask arithmetic")
    acc = np.zeros(length, dtype=np.uint64)
    for site_id in sorted(survivor_self_seeds):
        mask = expand_mask(
            survivor_self_seeds[site_id],
            length,
            modulus,
            purpose=Purpose.SELF_MASK,
            run_id=run_id,
            round_no=round_no,
        )
        _add_signed(acc, mask, 1, modulus)
    for survivor, dropped in sorted(dropped_pair_seeds):
        if survivor in survivor_self_seeds and dropped in survivor_self_seeds:
            raise ValueError(f"site {dropped!r} is listed both as survivor and as dropped")
        mask = expand_mask(
            dropped_pair_seeds[(survivor, dropped)],
            length,
            modulus,
            purpose=Purpose.PAIR_MASK,
            run_id=run_id,
            round_no=round_no,
        )
        _add_signed(acc, mask, pair_sign(survivor, dropped), modulus)
    return acc
