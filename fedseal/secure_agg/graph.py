"""SecAgg+ neighbour graphs (Bell et al., CCS 2020): sparse masking and sharing for large rounds.

With all pairs, every site expands a mask per peer and Shamir-shares to every peer: per-site work
grows with ``n`` and the coordinator's unmasking with ``n²``. SecAgg+ restricts both to the
neighbours of a site in a ``d``-regular graph with ``d = O(log n)``: a Harary graph ``H(d, n)``
(each node joined to the ``d/2`` nearest nodes on each side of a cycle) laid over a random
permutation of the sampled sites.

The permutation comes from a public seed that every party derives from the round itself
(`round_seed`: run, round, sampled sites), so all sites compute the same graph and the
coordinator cannot hand different neighbourhoods to different sites. The order is a keyed hash
(HMAC-SHA256) of each site id; no general-purpose RNG is involved.

`secure_degree` picks ``(d, t)`` from the risk the operator accepts, as in Bell et al.: with a
fraction ``γ`` of colluding sites and ``δ`` of dropouts, a union bound over the sites keeps the
chance that some neighbourhood holds ``t`` colluders (secrecy), that some dropped site keeps fewer
than ``t`` honest survivors among its neighbours (correctness), or that the honest survivors'
graph falls apart (secrecy of partial sums) below ``2^-security_bits`` or ``2^-correctness_bits``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ._wire import frame, text
from .errors import ConfigurationError

__all__ = [
    "NeighbourGraph",
    "harary_graph",
    "neighbour_threshold",
    "round_seed",
    "secure_degree",
]

_SEED_TAG = b"fedseal/secagg-graph-seed/v1"
_ORDER_TAG = b"fedseal/secagg-graph-order/v1"


def round_seed(run_id: str, round_no: int, sampled: Iterable[str]) -> bytes:
    """The round's public graph seed: SHA-256 over run, round and the sorted sampled sites."""
    sites = sorted(sampled)
    return hashlib.sha256(
        _SEED_TAG + frame(text(run_id), text(round_no), text(len(sites)), *map(text, sites))
    ).digest()


@dataclass(frozen=True)
class NeighbourGraph:
    """An undirected graph over the sampled sites; `neighbours[s]` never contains `s`."""

    sites: tuple[str, ...]
    degree: int
    neighbours: Mapping[str, frozenset[str]]

    def of(self, site: str) -> frozenset[str]:
        """The neighbours of `site` (without itself)."""
        return self.neighbours[site]

    def closed(self, site: str) -> frozenset[str]:
        """`site` and its neighbours: the holders of its Shamir shares."""
        return self.neighbours[site] | {site}


def _order(sites: Iterable[str], seed: bytes) -> list[str]:
    """A permutation of `sites` keyed by `seed` (sorting by HMAC; ties broken by the id)."""
    return sorted(
        sites,
        key=lambda s: (hmac.new(seed, _ORDER_TAG + text(s), hashlib.sha256).digest(), s),
    )


def harary_graph(sites: Iterable[str], *, degree: int, seed: bytes) -> NeighbourGraph:
    """Harary graph ``H(degree, n)`` over the sites in the order given by `seed`.

    `degree` must be even; at ``degree >= n - 1`` the graph is complete (all pairs). The graph is
    symmetric, connected (it contains the cycle) and every node has exactly `degree` neighbours.
    """
    given = list(sites)
    ordered_ids = sorted(set(given))
    if len(ordered_ids) != len(given):
        raise ConfigurationError("sites must be distinct")
    if not isinstance(seed, bytes) or len(seed) < 16:
        raise ConfigurationError("graph seed must be at least 16 bytes")
    if degree < 2 or degree % 2:
        raise ConfigurationError(f"neighbour degree must be even and at least 2; got {degree}")
    n = len(ordered_ids)
    if degree >= n - 1:
        neighbours = {s: frozenset(ordered_ids) - {s} for s in ordered_ids}
        return NeighbourGraph(tuple(ordered_ids), n - 1, neighbours)
    ring = _order(ordered_ids, seed)
    half = degree // 2
    adjacency: dict[str, set[str]] = {s: set() for s in ring}
    for position, site in enumerate(ring):
        for step in range(1, half + 1):
            other = ring[(position + step) % n]
            adjacency[site].add(other)
            adjacency[other].add(site)
    return NeighbourGraph(
        tuple(ordered_ids), degree, {s: frozenset(a) for s, a in adjacency.items()}
    )


def neighbour_threshold(degree: int, max_colluding: int = 0) -> int:
    """Smallest Shamir threshold over a neighbourhood of ``degree + 1`` holders that is a
    majority of it and exceeds `max_colluding` corrupt holders: ``(d + 1 + c)//2 + 1``."""
    t = (degree + 1 + max_colluding) // 2 + 1
    if t > degree + 1:
        raise ConfigurationError(
            f"no neighbourhood threshold tolerates {max_colluding} colluders among {degree + 1}"
        )
    return t


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _hypergeometric_pmf(population: int, marked: int, draws: int) -> list[float]:
    """P[X = x] for x in 0..draws, X marked items in `draws` drawn without replacement."""
    log_total = _log_comb(population, draws)
    return [
        math.exp(_log_comb(marked, x) + _log_comb(population - marked, draws - x) - log_total)
        if x <= marked and draws - x <= population - marked
        else 0.0
        for x in range(draws + 1)
    ]


def secure_degree(
    n_sites: int,
    *,
    corrupt_fraction: float,
    dropout_fraction: float,
    security_bits: int = 40,
    correctness_bits: int = 20,
) -> tuple[int, int] | None:
    """Smallest even degree ``d`` and threshold ``t`` meeting the failure bounds, or None if only
    the complete graph does.

    Per site ``i`` (union bound over the ``n`` sites; neighbours are a uniformly random
    ``d``-subset of the others because the ring order is random):

    * secrecy: ``P[≥ t colluders among the neighbours of i] ≤ 2^-σ / n``;
    * correctness: ``P[< t honest survivors among the neighbours of i] ≤ 2^-η / n``;
    * the honest survivors stay connected (else the coordinator learns partial sums): ``H(d, n)``
      minus a set S splits only if S holds two disjoint runs of ``d/2`` consecutive ring nodes,
      bounded by ``n²/2 · ρ^d ≤ 2^-σ`` with ``ρ`` the fraction of sites colluding or dropped.

    ``t`` is the smallest majority of the ``d + 1`` holders that meets the secrecy bound.
    """
    if not 0 <= corrupt_fraction < 1 or not 0 <= dropout_fraction < 1:
        raise ConfigurationError("corrupt and dropout fractions must be in [0, 1)")
    if corrupt_fraction + dropout_fraction >= 1:
        raise ConfigurationError("corrupt and dropout fractions must sum to less than 1")
    others = n_sites - 1
    corrupt = math.ceil(corrupt_fraction * n_sites)
    bad = min(others, math.ceil((corrupt_fraction + dropout_fraction) * n_sites))
    rho = bad / max(others, 1)
    secrecy_target = 2.0**-security_bits / n_sites
    correctness_target = 2.0**-correctness_bits / n_sites
    for degree in range(2, others - 1, 2):
        if rho > 0 and n_sites**2 / 2 * rho**degree > 2.0**-security_bits:
            continue
        corrupt_pmf = _hypergeometric_pmf(others, min(corrupt, others), degree)
        good_pmf = _hypergeometric_pmf(others, others - bad, degree)
        for t in range(neighbour_threshold(degree), degree + 1):
            if sum(corrupt_pmf[t:]) > secrecy_target:
                continue
            if sum(good_pmf[:t]) <= correctness_target:
                return degree, t
            break  # a larger t only makes correctness worse
    return None
