"""What every party knows and checks about a round: its description, a site's identity, and the
bindings and checks the site and aggregator stages share."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .._wire import frame, text
from ..errors import (
    ConfigurationError,
    InsufficientSurvivors,
    InvalidMessage,
    SecureAggError,
)
from ..graph import NeighbourGraph, harary_graph, round_seed
from ..messages import (
    ConsistencyAck,
    KeyAdvert,
    ShareKind,
    Signed,
    Stage,
)
from ..params import Mode, ProtocolParams

__all__ = ["Directory", "RoundInfo", "SiteIdentity", "unanimous"]

#: Enrolled sites: site id -> raw Ed25519 identity public key.
Directory = Mapping[str, bytes]


_CEREMONY_ROUND = 0


@dataclass(frozen=True)
class RoundInfo:
    """What every party knows about a round before it starts."""

    run_id: str
    round_no: int
    params: ProtocolParams
    sampled: tuple[str, ...]

    def __post_init__(self) -> None:
        sampled = tuple(sorted(self.sampled))
        object.__setattr__(self, "sampled", sampled)
        if len(set(sampled)) != len(sampled) or not sampled:
            raise ConfigurationError("sampled sites must be distinct and non-empty")
        if len(sampled) > self.params.n_sites:
            raise ConfigurationError(
                f"{len(sampled)} sites sampled, but the headroom was planned for "
                f"{self.params.n_sites}"
            )
        if self.params.mode is Mode.HE_SS and len(sampled) < self.params.threshold:
            raise InsufficientSurvivors(
                f"{len(sampled)} sites sampled, fewer than the threshold k={self.params.threshold}"
            )

    @property
    def mode(self) -> Mode:
        return self.params.mode

    @cached_property
    def graph(self) -> NeighbourGraph | None:
        """The round's SecAgg+ neighbour graph, or None for all pairs.

        Derived from public round data only (`graph.round_seed`), so every party computes the
        same graph and nobody hands out neighbourhoods.
        """
        degree = self.params.neighbours
        if not degree or len(self.sampled) <= degree + 1:
            return None
        seed = round_seed(self.run_id, self.round_no, self.sampled)
        return harary_graph(self.sampled, degree=degree, seed=seed)

    def holders(self, owner: str) -> frozenset[str]:
        """Sites that may hold shares of `owner`'s secrets and mask with it (itself included)."""
        graph = self.graph
        return frozenset(self.sampled) if graph is None else graph.closed(owner)

    @property
    def secret_threshold(self) -> int:
        """Shares needed to reconstruct one site's secret: k, or the neighbourhood threshold."""
        return self.params.threshold if self.graph is None else self.params.neighbour_threshold

    def share_index(self, owner: str, holder: str, advertised: Iterable[str]) -> int:
        """1-based Shamir index of `holder` for `owner`'s secrets.

        All pairs: the holder's position among the advertised sites (U1). Neighbour graph: its
        position in the owner's closed neighbourhood, which does not depend on U1.
        """
        return self.share_indices(owner, advertised)[holder]

    def share_indices(self, owner: str, advertised: Iterable[str]) -> dict[str, int]:
        """`share_index` of every holder of `owner`'s shares (the same map for every owner with
        all pairs)."""
        graph = self.graph
        order = sorted(advertised) if graph is None else sorted(graph.closed(owner))
        return {site: index for index, site in enumerate(order, 1)}

    def share_count(self, owner: str, advertised: Iterable[str]) -> int:
        """How many shares `owner` makes (indices 1..count)."""
        graph = self.graph
        return len(set(advertised)) if graph is None else len(graph.closed(owner))


@dataclass(frozen=True)
class SiteIdentity:
    """A site's id and long-term Ed25519 signing key."""

    site_id: str
    identity_key: Ed25519PrivateKey


def _need(condition: bool, what: str) -> None:
    if not condition:
        raise ConfigurationError(what)


def unanimous(info: RoundInfo, members: Collection[str]) -> bool:
    """Whether no site of the round may drop out: the threshold k equals the number of pinned
    members (all pairs masked). Then the only survivor set U3 an honest site accepts is all
    members, and no honest site ever releases a mask-key share of the round, so each site can
    release its seed shares with its upload: no consistency or release stage (docs/protocol.md,
    "Unanimous rounds")."""
    return (
        info.mode is Mode.HE_SS
        and info.graph is None
        and info.params.threshold == len(set(members))
        and set(info.sampled) == set(members)
    )


def _threshold_check(count: int, info: RoundInfo, what: str) -> None:
    if count < info.params.threshold:
        raise InsufficientSurvivors(
            f"{count} {what}, fewer than the threshold k={info.params.threshold}: abort the round"
        )


def _neighbourhood_check(count: int, info: RoundInfo, what: str) -> None:
    """Per-owner check: k with all pairs, the neighbourhood threshold with a neighbour graph."""
    needed = info.secret_threshold
    if count < needed:
        raise InsufficientSurvivors(
            f"{count} {what}, fewer than the {needed} needed to reconstruct: abort the round"
        )


# --------------------------------------------------------------------------- key ceremony


def _share_digest(
    share: bytes, *, info: RoundInfo, owner: str, holder: str, kind: ShareKind
) -> bytes:
    return hashlib.sha256(
        b"fedseal/share-digest/v1"
        + frame(
            text(info.run_id), text(info.round_no), text(owner), text(holder), text(kind), share
        )
    ).digest()


def _share_digests(
    seed_share: bytes, key_share: bytes, *, info: RoundInfo, owner: str, holder: str
) -> tuple[bytes, bytes]:
    """The digests an envelope carries of `holder`'s shares of `owner`'s self-mask seed and mask
    key, in that order: the owner computes them, the holder and the coordinator check them."""
    return (
        _share_digest(seed_share, info=info, owner=owner, holder=holder, kind=ShareKind.SELF_SEED),
        _share_digest(key_share, info=info, owner=owner, holder=holder, kind=ShareKind.MASK_KEY),
    )


def _seed_context(info: RoundInfo, owner: str) -> bytes:
    return frame(text(info.run_id), text(info.round_no), text(owner))


def _envelope_context(info: RoundInfo, sender: str) -> bytes:
    return frame(text(info.round_no), text(sender))


def _verify_adverts(
    info: RoundInfo, messages: Sequence[Signed], directory: Directory
) -> tuple[dict[str, tuple[Signed, KeyAdvert]], dict[str, str]]:
    accepted: dict[str, tuple[Signed, KeyAdvert]] = {}
    rejected: dict[str, str] = {}
    for message in messages:
        try:
            if message.sender not in info.sampled or message.sender in accepted:
                raise InvalidMessage()
            body = message.verify(
                directory, run_id=info.run_id, round_no=info.round_no, stage=Stage.ADVERTISE
            )
            accepted[message.sender] = (message, KeyAdvert.from_bytes(body))
        except SecureAggError as exc:
            rejected[message.sender] = str(exc)
    return accepted, rejected


def _encode_residues(values: np.ndarray, modulus: int) -> bytes:
    dtype = "<u4" if modulus <= 2**32 else "<u8"
    return np.asarray(values, dtype=np.uint64).astype(dtype).tobytes()


def _decode_residues(data: bytes, length: int, modulus: int) -> np.ndarray:
    width = 4 if modulus <= 2**32 else 8
    if len(data) != length * width:
        raise InvalidMessage()
    values = np.frombuffer(data, dtype="<u4" if width == 4 else "<u8").astype(np.uint64)
    if np.any(values >= np.uint64(modulus)):
        raise InvalidMessage()
    return values


def _verify_acks(
    info: RoundInfo, acks: Sequence[Signed], survivors: tuple[str, ...], directory: Directory
) -> tuple[dict[str, Signed], dict[str, str]]:
    accepted: dict[str, Signed] = {}
    rejected: dict[str, str] = {}
    expected = ConsistencyAck(survivors).to_bytes()
    members = frozenset(survivors)
    for ack in acks:
        try:
            if ack.sender not in members or ack.sender in accepted:
                raise InvalidMessage()
            body = ack.verify(
                directory, run_id=info.run_id, round_no=info.round_no, stage=Stage.CONSISTENCY
            )
            if body != expected:
                raise InvalidMessage()
            accepted[ack.sender] = ack
        except SecureAggError as exc:
            rejected[ack.sender] = str(exc)
    return accepted, rejected
