"""Wire formats of the protocol messages, and the signed envelope every site message travels in.

A `Signed` message names its sender and stage and carries an Ed25519 signature over (run, round,
stage, sender, body). Run and round are not on the wire: the receiver supplies the ones it expects,
so a message replayed from another run, round or stage fails verification like a forgery.
Parsing is strict (every field length-prefixed, no trailing bytes); malformed bytes raise
`InvalidMessage`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._wire import Reader, frame, text
from .errors import InvalidMessage
from .keys import KEY_BYTES, SIGNATURE_BYTES, sign_message, verify_message
from .params import Mode
from .shamir import SHARE_BYTES

__all__ = [
    "AggregateMessage",
    "ConsistencyAck",
    "KeyAdvert",
    "SealedFederationKey",
    "ShareEnvelope",
    "ShareKind",
    "ShareRelease",
    "Signed",
    "Stage",
    "Upload",
]

_ID_MAX = 256
_T = TypeVar("_T")


class Stage(StrEnum):
    """Protocol stage; part of every signature (its domain tag).

    Each he+ss stage has the word of the site stage that carries it
    (`fedseal.contract.wire.MessageType`'s action: this package imports nothing of fedseal,
    so a contract test holds the two equal); the key ceremony spans keygen and install.
    """

    KEY_CEREMONY = "key-ceremony"
    ADVERTISE = "advertise"
    SHARE = "share"
    TRAIN = "train"  # the masked, encrypted upload that the train stage sends
    CONSISTENCY = "consistency"
    RELEASE = "release"  # the shares a site releases so the coordinator can unmask


class ShareKind(StrEnum):
    """Which secret a released share is of; a holder releases one kind per owner, never both."""

    SELF_SEED = "self-seed"
    MASK_KEY = "mask-key"


def _parse(parse: Callable[[Reader], _T], data: bytes) -> _T:
    try:
        reader = Reader(data)
        out = parse(reader)
        reader.end()
    except (ValueError, TypeError, UnicodeDecodeError):
        raise InvalidMessage() from None
    return out


def _fixed(reader: Reader, size: int) -> bytes:
    raw = reader.field(size)
    if len(raw) != size:
        raise ValueError("wrong field size")
    return raw


def _count(reader: Reader) -> int:
    """A list's length field (at most 65535 entries)."""
    count = reader.integer()
    if not 0 <= count <= 65535:
        raise ValueError("count")
    return count


def _ids(ids: tuple[str, ...]) -> tuple[bytes, ...]:
    """The fields of a list of site ids: its length, then each id."""
    return (text(len(ids)), *(text(s) for s in ids))


def _read_ids(reader: Reader) -> tuple[str, ...]:
    """Inverse of `_ids`."""
    return tuple(reader.text(_ID_MAX) for _ in range(_count(reader)))


@dataclass(frozen=True)
class Signed:
    """A body signed by its sender for one stage of one round of one run."""

    sender: str
    stage: Stage
    body: bytes
    signature: bytes

    @classmethod
    def create(
        cls,
        identity_key: Ed25519PrivateKey,
        *,
        sender: str,
        stage: Stage,
        body: bytes,
        run_id: str,
        round_no: int,
    ) -> Signed:
        """Sign `body` for (run, round, stage, sender)."""
        signature = sign_message(
            identity_key, run_id=run_id, round_no=round_no, stage=stage, sender=sender, payload=body
        )
        return cls(sender, Stage(stage), body, signature)

    def verify(
        self, directory: Mapping[str, bytes], *, run_id: str, round_no: int, stage: Stage
    ) -> bytes:
        """Return the body if the sender is enrolled and signed it for exactly this binding."""
        public = directory.get(self.sender)
        if public is None or self.stage != stage:
            raise InvalidMessage()
        verify_message(
            public,
            self.signature,
            run_id=run_id,
            round_no=round_no,
            stage=stage,
            sender=self.sender,
            payload=self.body,
        )
        return self.body

    def to_bytes(self) -> bytes:
        """Wire form."""
        return frame(
            b"fedseal/signed/v1", text(self.sender), text(self.stage), self.body, self.signature
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, max_body: int = 1 << 31) -> Signed:
        """Parse the wire form; malformed bytes raise `InvalidMessage`."""

        def parse(r: Reader) -> Signed:
            if r.field(32) != b"fedseal/signed/v1":
                raise ValueError("tag")
            sender = r.text(_ID_MAX)
            stage = Stage(r.text(64))
            body = r.field(max_body)
            return cls(sender, stage, body, _fixed(r, SIGNATURE_BYTES))

        return _parse(parse, data)


@dataclass(frozen=True)
class KeyAdvert:
    """Per-round public keys of a site and its commitment to its self-mask seed."""

    share_public: bytes  # X25519: recipients seal Shamir shares to it
    mask_public: bytes  # X25519: pairwise mask seeds; the commitment for the shared mask key
    seed_commitment: bytes  # SHA-256 commitment to b_i

    def to_bytes(self) -> bytes:
        return frame(self.share_public, self.mask_public, self.seed_commitment)

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyAdvert:
        return _parse(
            lambda r: cls(_fixed(r, KEY_BYTES), _fixed(r, KEY_BYTES), _fixed(r, 32)), data
        )


@dataclass(frozen=True)
class ShareEnvelope:
    """Shares of the sender's two secrets for one holder, sealed to the holder's share key.

    The digests let the coordinator check each share the holder later releases, so a holder that
    releases a wrong share is identified and dropped instead of silently spoiling a reconstruction.
    """

    recipient: str
    sealed: bytes
    self_seed_digest: bytes
    mask_key_digest: bytes

    def to_bytes(self) -> bytes:
        return frame(text(self.recipient), self.sealed, self.self_seed_digest, self.mask_key_digest)

    @classmethod
    def from_bytes(cls, data: bytes) -> ShareEnvelope:
        return _parse(
            lambda r: cls(r.text(_ID_MAX), r.field(4096), _fixed(r, 32), _fixed(r, 32)), data
        )


@dataclass(frozen=True)
class Upload:
    """A site's contribution: the mode it was made for and its payload (ciphertexts or residues)."""

    mode: Mode
    payload: bytes

    def to_bytes(self) -> bytes:
        return frame(text(self.mode), self.payload)

    @classmethod
    def from_bytes(cls, data: bytes) -> Upload:
        return _parse(lambda r: cls(Mode(r.text(16)), r.field()), data)


@dataclass(frozen=True)
class ConsistencyAck:
    """A survivor's signed view of the survivor set, before any share is released."""

    survivors: tuple[str, ...]

    def to_bytes(self) -> bytes:
        return frame(*_ids(self.survivors))

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsistencyAck:
        return _parse(lambda r: cls(_read_ids(r)), data)


@dataclass(frozen=True)
class ShareRelease:
    """Shares a holder releases for unmasking: (owner, kind, share bytes) per owner."""

    entries: tuple[tuple[str, ShareKind, bytes], ...]

    def to_bytes(self) -> bytes:
        return frame(
            text(len(self.entries)),
            *(frame(text(o), text(k), s) for o, k, s in self.entries),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ShareRelease:
        def parse(r: Reader) -> ShareRelease:
            entries = []
            for _ in range(_count(r)):
                inner = Reader(r.field(_ID_MAX + 128))
                entry = (inner.text(_ID_MAX), ShareKind(inner.text(32)), _fixed(inner, SHARE_BYTES))
                inner.end()
                entries.append(entry)
            return cls(tuple(entries))

        return _parse(parse, data)


@dataclass(frozen=True)
class SealedFederationKey:
    """The federation's secret BFV context sealed by the custodian to one site."""

    recipient: str
    sealed: bytes

    def to_bytes(self) -> bytes:
        return frame(text(self.recipient), self.sealed)

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedFederationKey:
        return _parse(lambda r: cls(r.text(_ID_MAX), r.field(1 << 26)), data)


@dataclass(frozen=True)
class AggregateMessage:
    """What the coordinator sends back to the sites: the (encrypted) sum and who contributed."""

    mode: Mode
    contributors: tuple[str, ...]
    payload: bytes

    def to_bytes(self) -> bytes:
        return frame(text(self.mode), *_ids(self.contributors), self.payload)

    @classmethod
    def from_bytes(cls, data: bytes) -> AggregateMessage:
        return _parse(lambda r: cls(Mode(r.text(16)), _read_ids(r), r.field()), data)
