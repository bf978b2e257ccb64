"""How large a message may be, checked before any of its fields is parsed.

Every boundary that reads bytes from another process (the coordinator reading sites' replies, a
site reading the coordinator's messages, a site's worker reading its local socket) measures what
arrived against a limit for that kind of message first, and refuses it whole when it is larger:
a hostile or broken peer cannot make the reader decode, decompress or allocate more than the
limit allows. The limits are per message kind: uploads and aggregates scale with the adapter,
key-stage messages are small.

It imports only the stage names (`wire`) and does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedseal.contract.wire import MessageType

__all__ = [
    "DEFAULT_CONTROL_BYTES",
    "DEFAULT_KEY_ROUNDS",
    "DEFAULT_SITE_MESSAGE_BYTES",
    "MAX_KEY_ROUNDS",
    "MessageTooLarge",
    "ReplyLimits",
    "SiteLimits",
    "check_size",
    "encrypted_upload_bound",
    "plain_upload_bound",
    "record_size",
]

MIB = 1 << 20
DEFAULT_CONTROL_BYTES = 4 * MIB
"""Identify, advertise, share, consistency, release and apply messages: keys, signatures, names
and metrics only (a share reply holds ~300 bytes per site, so thousands of sites fit)."""
DEFAULT_SITE_MESSAGE_BYTES = 256 * MIB
"""What a site accepts in a train, apply or key message: aggregates (a site that missed rounds
gets one per missed round to catch up) and the sealed federation key."""
MAX_KEY_ROUNDS = 64
"""Most rounds one key batch may key at once (an advertise or share stage listing its rounds;
docs/protocol.md, "Key batches"): its messages are at most this many times a round's."""
DEFAULT_KEY_ROUNDS = 8
"""Rounds a run's key batch keys unless the run says otherwise: the batch's later rounds skip
the advertise and share stages, and a site that restarts mid-batch has the rest keyed anew."""
_KEY_STAGES = frozenset({MessageType.ADVERTISE, MessageType.SHARE})
_SLACK = 64 * 1024  # statements, digests, names and framing around a payload
_SCALAR_BYTES = 8


class MessageTooLarge(ValueError):
    """A message larger than the limit for its kind; refused before any field is parsed."""

    def __init__(self, kind: str, size: int, limit: int) -> None:
        super().__init__(f"{kind} message of {size} bytes exceeds the limit of {limit} bytes")
        self.kind = kind
        self.size = size
        self.limit = limit


def check_size(kind: str, size: int, limit: int) -> None:
    """Raise `MessageTooLarge` when `size` is over `limit` (a limit of 0 or less refuses all)."""
    if size > limit:
        raise MessageTooLarge(kind, size, limit)


def _value_size(value: Any) -> int:
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, list | tuple):
        return sum(_value_size(v) for v in value) + _SCALAR_BYTES
    if isinstance(value, Mapping):
        return sum(len(str(k)) + _value_size(v) for k, v in value.items())
    data = getattr(value, "data", None)  # a Flower Array: its serialised bytes
    if isinstance(data, bytes | bytearray):
        return len(data)
    return _SCALAR_BYTES


def record_size(records: Any) -> int:
    """Bytes held by a Flower RecordDict (every config, metric and array record) or a mapping.

    Counts what the fields occupy (bytes, UTF-8 text, 8 per number), which is what a reader
    would go on to decode; it never copies or decodes a value.
    """
    # A RecordDict maps names to its records: read it as a mapping. (Its typed views,
    # `config_records` and the like, are self-referencing objects that keep every record, an
    # upload included, alive until the garbage collector's next full pass.)
    return sum(len(str(name)) + _value_size(record) for name, record in dict(records).items())


def plain_upload_bound(adapter_size: int) -> int:
    """Largest well-formed plain-mode train reply: float32 per value, plus the statement."""
    return 4 * max(int(adapter_size), 0) + _SLACK


def encrypted_upload_bound(n_ciphertexts: int, max_ciphertext_bytes: int) -> int:
    """Largest well-formed he / he+ss train reply: the signed, framed ciphertexts."""
    return int(n_ciphertexts) * (int(max_ciphertext_bytes) + 16) + _SLACK


@dataclass(frozen=True)
class ReplyLimits:
    """What the coordinator accepts in a site's reply, per message kind.

    `upload` bounds a train reply (derived from the adapter size and the protocol unless
    configured); `keygen` the custodian's reply carrying the federation key sealed to every site;
    `keys` an advertise or share reply, which carries one round's adverts or envelopes per round
    of a key batch (`control` times the batch's rounds); `control` every other reply.
    """

    upload: int = DEFAULT_SITE_MESSAGE_BYTES
    control: int = DEFAULT_CONTROL_BYTES
    keygen: int = DEFAULT_SITE_MESSAGE_BYTES
    keys: int = DEFAULT_CONTROL_BYTES

    def __post_init__(self) -> None:
        for name in ("upload", "control", "keygen", "keys"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"reply limit {name} must be a positive number of bytes")

    def for_message_type(self, message_type: MessageType) -> int:
        """The limit for a reply to `message_type` (an unknown stage raises ValueError)."""
        stage = MessageType(message_type)
        if stage is MessageType.TRAIN:
            return self.upload
        if stage is MessageType.KEYGEN:
            return self.keygen
        if stage in _KEY_STAGES:
            return self.keys
        return self.control


_LARGE_STAGES = frozenset(
    {MessageType.TRAIN, MessageType.APPLY, MessageType.INSTALL, MessageType.KEYGEN}
)


@dataclass(frozen=True)
class SiteLimits:
    """What a site accepts from the coordinator, per message kind (the site config's `[limits]`).

    `message` bounds the messages that carry aggregates or the federation key (train with its
    catch-up aggregates, apply, install, keygen); `control` every other stage (identify and the
    he+ss key stages). The local socket to the site's worker allows the larger one, base64
    included.
    """

    message: int = DEFAULT_SITE_MESSAGE_BYTES
    control: int = DEFAULT_CONTROL_BYTES

    def __post_init__(self) -> None:
        for name in ("message", "control"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1024 <= value < 2**32:
                raise ValueError(f"{name} limit must be between 1024 bytes and 4 GiB")

    def for_stage(self, stage: MessageType, rounds: int = 1) -> int:
        """The limit for a coordinator message of `stage`; an advertise or share message of a
        key batch of `rounds` rounds (at most `MAX_KEY_ROUNDS` count) may be that many times
        `control`."""
        if stage in _LARGE_STAGES:
            return self.message
        if stage in _KEY_STAGES:
            return min(self.control * min(max(int(rounds), 1), MAX_KEY_ROUNDS), 2**32 - 1)
        return self.control

    @property
    def channel_frame_bytes(self) -> int:
        """Frame limit of the local socket: the largest message, base64-encoded, plus framing."""
        largest = max(self.message, self.for_stage(MessageType.SHARE, MAX_KEY_ROUNDS))
        return min(largest * 4 // 3 + MIB, 2**32 - 1)
