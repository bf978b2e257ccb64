"""Protocol parameters, validated once at run start so a round can never wrap or fail to decrypt.

Two things can silently corrupt an exact integer aggregate:

* the plaintext sum wraps modulo the BFV plain modulus ``t`` (the weighted, quantised updates of all
  sampled sites plus their sample counts must stay inside the centred range of ``Z_t``); and
* the BFV noise outgrows the coefficient modulus after the aggregator adds the ciphertexts.

`plan` picks the largest power-of-two fixed-point scale that keeps the first impossible and checks
the second with a measured noise model; an instance of `ProtocolParams` is safe by construction.
`params_to_json` / `params_from_json` are its canonical text form, re-validated on receipt. The
BFV parameters themselves are `bfv_params.BfvParams` (re-exported here, with their constants).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from .bfv_params import (
    DEFAULT_PLAIN_MODULUS,
    FRESH_NOISE_BITS,
    HE_STANDARD_MAX_COEFF_BITS,
    BfvParams,
)
from .errors import ConfigurationError, WrapAroundRisk
from .graph import neighbour_threshold, secure_degree

__all__ = [
    "DEFAULT_CORRUPT_FRACTION",
    "DEFAULT_DROPOUT_FRACTION",
    "DEFAULT_PLAIN_MODULUS",
    "FRESH_NOISE_BITS",
    "HE_STANDARD_MAX_COEFF_BITS",
    "MAX_SITES",
    "MAX_VECTOR_LENGTH",
    "NOISE_MARGIN_BITS",
    "SPARSE_ABOVE",
    "BfvParams",
    "Mode",
    "ProtocolParams",
    "default_threshold",
    "params_from_json",
    "params_to_json",
    "plan",
]

#: Above this many sites `plan` uses a SecAgg+ neighbour graph instead of all pairs (when the
#: degree that meets the risk bounds is smaller than all pairs); at or below it, all pairs.
SPARSE_ABOVE = 50

#: The risk a neighbour graph is sized for by default (`graph.secure_degree`): at most this
#: fraction of the sampled sites colluding with the coordinator, and at most this fraction dropping.
DEFAULT_CORRUPT_FRACTION = 0.1
DEFAULT_DROPOUT_FRACTION = 0.1

#: Noise budget (bits) left after the aggregator's additions and one plaintext subtraction.
NOISE_MARGIN_BITS = 4


class Mode(StrEnum):
    """Protocol mode, chosen per run and recorded; never downgraded silently."""

    PLAIN = "plain"  # FedAvg in the clear (quantised integers), for comparison and debugging
    HE = "he"  # BFV only: the NVFlare-style threat model (any site can decrypt any upload)
    HE_SS = "he+ss"  # BFV + SecAgg masks with Shamir-shared seeds (the default)


def default_threshold(n_sites: int, max_colluding: int = 0) -> int:
    """Smallest threshold ``k > (n_sites + max_colluding) / 2``.

    ``k > n/2`` is the minimum. Against a coordinator that lies about who dropped out while
    colluding with ``c`` sites, an honest site's self-mask seed and mask key can both be
    reconstructed (from two disjoint groups shown different survivor sets) once ``2k <= n + c``;
    so ``k > (n + c)/2`` is what keeps individual updates hidden from such a coalition
    (``k > 2n/3`` tolerates ``c < n/3``, as in Bonawitz et al. 2017).
    """
    if not 0 <= max_colluding < n_sites:
        raise ConfigurationError(f"max_colluding must be in 0..{n_sites - 1}; got {max_colluding}")
    k = (n_sites + max_colluding) // 2 + 1
    if k > n_sites:
        raise ConfigurationError(
            f"no threshold tolerates {max_colluding} colluding sites among {n_sites}"
        )
    return k


MAX_VECTOR_LENGTH = 2**31
"""Largest update vector a run may plan for (a bound for decoders, far above any adapter)."""
MAX_SITES = 65535
"""Largest federation: Shamir share indices are 16-bit."""


@dataclass(frozen=True)
class ProtocolParams:
    """Everything both sides must agree on for a run; validated in full on construction.

    ``scale`` maps a weighted update coordinate ``n·Δ`` (``|Δ| ≤ clip``, ``1 ≤ n ≤ max_weight``)
    to the integer ``round(scale·n·Δ)``; the vector carries ``n`` in one extra slot.

    ``neighbours`` (even, 0 = all pairs) is the degree of the SecAgg+ neighbour graph and
    ``neighbour_threshold`` the Shamir threshold within a site's neighbourhood of
    ``neighbours + 1`` holders; ``threshold`` stays the least number of survivors of every stage.
    """

    vector_length: int
    clip: float
    scale: float
    max_weight: int
    n_sites: int
    threshold: int
    mode: Mode = Mode.HE_SS
    bfv: BfvParams = field(default_factory=BfvParams)
    neighbours: int = 0
    neighbour_threshold: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode(self.mode))
        self._check_graph()
        if not 1 <= self.vector_length <= MAX_VECTOR_LENGTH:
            raise ConfigurationError(
                f"vector_length must be in 1..{MAX_VECTOR_LENGTH}; got {self.vector_length}"
            )
        if not 1 <= self.n_sites <= MAX_SITES:
            raise ConfigurationError(f"n_sites must be in 1..{MAX_SITES}; got {self.n_sites}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigurationError(f"clip must be a positive finite number; got {self.clip}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigurationError(f"scale must be a positive finite number; got {self.scale}")
        if self.max_weight < 1:
            raise ConfigurationError(f"max_weight must be at least 1; got {self.max_weight}")
        if self.n_sites < (2 if self.mode is Mode.HE_SS else 1):
            raise ConfigurationError(
                f"n_sites must be at least {2 if self.mode is Mode.HE_SS else 1} in mode "
                f"{self.mode}; got {self.n_sites}"
            )
        if not self.n_sites // 2 < self.threshold <= self.n_sites:
            raise ConfigurationError(
                f"threshold k={self.threshold} must be more than half of the {self.n_sites} "
                f"sampled sites and at most {self.n_sites} (k in {self.n_sites // 2 + 1}.."
                f"{self.n_sites})"
            )
        _check_headroom(
            self.bfv.plain_modulus, self.clip, self.scale, self.max_weight, self.n_sites
        )
        budget = self.bfv.noise_budget_estimate(self.n_sites + 1)
        if self.mode is not Mode.PLAIN and budget < NOISE_MARGIN_BITS:
            raise ConfigurationError(
                f"BFV noise budget after summing {self.n_sites} sites would be about "
                f"{budget:.1f} bits (< {NOISE_MARGIN_BITS}): data modulus {self.bfv.data_bits} "
                f"bits is too small for plain modulus {self.bfv.plain_modulus}; use larger data "
                f"primes or a smaller plain modulus"
            )

    def _check_graph(self) -> None:
        d, t = self.neighbours, self.neighbour_threshold
        if d == 0 and t == 0:
            return
        if self.mode is not Mode.HE_SS:
            raise ConfigurationError(f"a neighbour graph is an he+ss feature, mode is {self.mode}")
        if d < 2 or d % 2 or d >= self.n_sites - 1:
            raise ConfigurationError(
                f"neighbour degree must be even, at least 2 and below {self.n_sites - 1} "
                f"(all pairs); got {d}"
            )
        if not neighbour_threshold(d) <= t <= d + 1:
            raise ConfigurationError(
                f"neighbour threshold must be a majority of the {d + 1} holders of a "
                f"neighbourhood ({neighbour_threshold(d)}..{d + 1}); got {t}"
            )

    @property
    def padded_length(self) -> int:
        """Slots used on the wire: the update coordinates plus one for the sample count."""
        return self.vector_length + 1

    @property
    def n_ciphertexts(self) -> int:
        """Ciphertexts per upload."""
        return -(-self.padded_length // self.bfv.slots)

    @property
    def max_abs_coordinate_sum(self) -> int:
        """Largest |sum| a coordinate of the aggregate can take (stochastic rounding included)."""
        return self.n_sites * math.ceil(self.max_weight * self.clip * self.scale)

    @property
    def max_total_weight(self) -> int:
        """Largest value the sample-count slot of the aggregate can take."""
        return self.n_sites * self.max_weight


def _check_headroom(t: int, clip: float, scale: float, max_weight: int, n_sites: int) -> None:
    half = (t - 1) // 2
    if n_sites * max_weight > half:
        raise WrapAroundRisk(
            f"sample counts can sum to {n_sites} sites x {max_weight} = {n_sites * max_weight}, "
            f"more than (t-1)/2 = {half} for plain modulus t={t}"
        )
    product = max_weight * clip * scale
    if not math.isfinite(product):
        raise WrapAroundRisk(f"max_weight x clip x scale = {product} is not a finite number")
    per_site = math.ceil(product)
    if n_sites * per_site > half:
        raise WrapAroundRisk(
            f"weighted quantised coordinates can sum to {n_sites} sites x ceil({max_weight} x "
            f"{clip} x {scale}) = {n_sites * per_site}, more than (t-1)/2 = {half} for plain "
            f"modulus t={t}; lower the scale, the clip bound or the max sample count"
        )


def plan(
    *,
    vector_length: int,
    clip: float,
    max_weight: int,
    n_sites: int,
    mode: Mode = Mode.HE_SS,
    bfv: BfvParams | None = None,
    threshold: int | None = None,
    scale: float | None = None,
    min_levels: int = 256,
    max_colluding: int = 0,
    sparse_above: int = SPARSE_ABOVE,
    neighbours: int | None = None,
    corrupt_fraction: float = DEFAULT_CORRUPT_FRACTION,
    dropout_fraction: float = DEFAULT_DROPOUT_FRACTION,
) -> ProtocolParams:
    """Choose (or check) the fixed-point scale so the sum of all sampled sites cannot wrap mod t.

    `max_colluding` is the number of sites assumed to collude with a malicious coordinator; the
    default threshold is then ``(n_sites + max_colluding) // 2 + 1`` (see `default_threshold`).
    Without `bfv`, uses `BfvParams()` (48-bit data prime, up to ~250 sites) or, for larger
    federations, a 54-bit data prime (up to ~16,000 sites at t≈2^30).

    Without `scale`, picks the largest power of two with
    ``n_sites · ceil(max_weight · clip · scale) ≤ (t-1)/2``. `min_levels` is the least number of
    quantisation levels a weight-1 coordinate must get over ``[0, clip]``: below it the update
    would drown in rounding noise, and the configuration is refused.

    In he+ss with more than `sparse_above` sites, sites mask and share only with their neighbours
    in a SecAgg+ graph: of degree `neighbours` if given, else the smallest degree that keeps the
    failure bounds of `graph.secure_degree` for `corrupt_fraction` (at least
    ``max_colluding / n_sites``) and `dropout_fraction`; all pairs when no smaller degree does.
    """
    if bfv is None:  # smallest default data prime whose noise budget covers the federation
        bfv = BfvParams()
        if bfv.noise_budget_estimate(n_sites + 1) < NOISE_MARGIN_BITS:
            bfv = BfvParams(coeff_mod_bit_sizes=(54, 55))
    if threshold is None:
        threshold = default_threshold(n_sites, max_colluding)
    elif 2 * threshold <= n_sites + max_colluding:
        raise ConfigurationError(
            f"threshold k={threshold} does not exceed (n + c)/2 = ({n_sites} + {max_colluding})/2"
        )
    if not (math.isfinite(clip) and clip > 0):
        raise ConfigurationError(f"clip must be a positive finite number; got {clip}")
    if max_weight < 1 or n_sites < 1:
        raise ConfigurationError(
            f"max_weight and n_sites must be at least 1; got {max_weight}, {n_sites}"
        )
    t = bfv.plain_modulus
    if scale is None:
        half = (t - 1) // 2
        per_site = half // n_sites  # largest allowed ceil(max_weight · clip · scale)
        raw = per_site / (max_weight * clip)
        if raw <= 0:
            raise WrapAroundRisk(
                f"no scale fits: {n_sites} sites x max weight {max_weight} leave no headroom "
                f"under (t-1)/2 = {half}"
            )
        scale = 2.0 ** math.floor(math.log2(raw))
        while n_sites * math.ceil(max_weight * clip * scale) > half:  # float edge cases
            scale /= 2
    levels = clip * scale
    if levels < min_levels:
        raise WrapAroundRisk(
            f"scale {scale} gives only {levels:.1f} levels over [0, clip={clip}] (need "
            f"{min_levels}): {n_sites} sites x max weight {max_weight} use too much of plain "
            f"modulus t={t}; use a larger t, fewer sites, or a smaller max sample count"
        )
    degree, neighbourhood_k = _plan_graph(
        n_sites,
        Mode(mode),
        sparse_above=sparse_above,
        neighbours=neighbours,
        corrupt_fraction=max(corrupt_fraction, max_colluding / n_sites),
        dropout_fraction=dropout_fraction,
    )
    return ProtocolParams(
        vector_length=vector_length,
        clip=clip,
        scale=scale,
        max_weight=max_weight,
        n_sites=n_sites,
        threshold=threshold,
        mode=mode,
        bfv=bfv,
        neighbours=degree,
        neighbour_threshold=neighbourhood_k,
    )


def _plan_graph(
    n_sites: int,
    mode: Mode,
    *,
    sparse_above: int,
    neighbours: int | None,
    corrupt_fraction: float,
    dropout_fraction: float,
) -> tuple[int, int]:
    """(degree, neighbourhood threshold) of the SecAgg+ graph, or (0, 0) for all pairs."""
    if mode is not Mode.HE_SS or n_sites <= sparse_above:
        return 0, 0
    if neighbours is not None:
        if neighbours >= n_sites - 1:
            return 0, 0
        return neighbours, neighbour_threshold(neighbours)
    chosen = secure_degree(
        n_sites, corrupt_fraction=corrupt_fraction, dropout_fraction=dropout_fraction
    )
    return chosen if chosen is not None else (0, 0)


def params_to_json(params: ProtocolParams) -> str:
    """The canonical text form both sides exchange, so they build identical parameters."""
    import json

    graph = (
        {"neighbours": params.neighbours, "neighbour_threshold": params.neighbour_threshold}
        if params.neighbours
        else {}  # all pairs: the form of runs planned before neighbour graphs existed
    )
    return json.dumps(
        {
            **graph,
            "vector_length": params.vector_length,
            "clip": params.clip,
            "scale": params.scale,
            "max_weight": params.max_weight,
            "n_sites": params.n_sites,
            "threshold": params.threshold,
            "mode": str(params.mode),
            "bfv": {
                "poly_modulus_degree": params.bfv.poly_modulus_degree,
                "coeff_mod_bit_sizes": list(params.bfv.coeff_mod_bit_sizes),
                "plain_modulus": params.bfv.plain_modulus,
            },
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def params_from_json(text_form: str) -> ProtocolParams:
    """Parse and fully re-validate parameters received from another party.

    Strict: integers must be JSON integers (no booleans, no floats), numbers finite, and the text
    short; anything else is `ConfigurationError`, never another exception.
    """
    import json

    if not isinstance(text_form, str) or len(text_form) > _PARAMS_JSON_MAX:
        raise ConfigurationError("malformed protocol parameters: not a short JSON text")
    try:
        raw = json.loads(text_form)
        bfv_raw = raw["bfv"]
        return ProtocolParams(
            vector_length=_json_int(raw["vector_length"]),
            clip=_json_float(raw["clip"]),
            scale=_json_float(raw["scale"]),
            max_weight=_json_int(raw["max_weight"]),
            n_sites=_json_int(raw["n_sites"]),
            threshold=_json_int(raw["threshold"]),
            mode=Mode(raw["mode"]),
            bfv=BfvParams(
                poly_modulus_degree=_json_int(bfv_raw["poly_modulus_degree"]),
                coeff_mod_bit_sizes=tuple(_json_int(b) for b in bfv_raw["coeff_mod_bit_sizes"]),
                plain_modulus=_json_int(bfv_raw["plain_modulus"]),
            ),
            neighbours=_json_int(raw.get("neighbours", 0)),
            neighbour_threshold=_json_int(raw.get("neighbour_threshold", 0)),
        )
    except ConfigurationError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise ConfigurationError(f"malformed protocol parameters: {reason}") from None


_PARAMS_JSON_MAX = 4096


def _json_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _json_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)
