"""The site's Flower ClientApp: a thin relay from Flower messages to the site's worker.

Flower starts a fresh process for every message; this module keeps those processes light (no
torch) and hands each stage to the `SiteService` inside the long-lived `fl-client` process over
the site's local socket. One handler per `MessageType`, all alike; `site_service` holds the
site's one dispatch table and `stages/` what each stage does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedseal.client.errors import SiteRefusal
from fedseal.client.local_channel import ChannelError, call, socket_path
from fedseal.client.site_config import SiteConfigError, load_site_config
from fedseal.contract.limits import MessageTooLarge, check_size, record_size
from fedseal.contract.message_fields import MessageFieldError, field_int
from fedseal.contract.wire import PROTOCOL_VERSION, Key, MessageType, RecordName

__all__ = ["app", "relay"]

app = ClientApp()


def relay(stage: MessageType, msg: Message, config_path: Path) -> Message:
    """Check the message's size (before reading any field), then its version, then hand its
    fields to the site's worker; every refusal is one `SiteRefusal` line for the coordinator."""
    try:
        site_config = load_site_config(config_path)
    except SiteConfigError as exc:
        raise SiteRefusal(f"site config: {exc}") from None
    limits = site_config.limits
    try:
        limit = limits.for_stage(stage, _key_rounds(msg))
        check_size(stage.word, record_size(msg.content), limit)
    except MessageTooLarge as exc:
        raise SiteRefusal(f"refused: {exc}") from None
    config = msg.content.config_records.get(RecordName.CONFIG)
    if config is None:
        raise SiteRefusal("message has no config record")
    try:
        version = field_int(config, Key.PROTOCOL_VERSION)
    except MessageFieldError as exc:
        raise SiteRefusal(str(exc)) from None
    if version != PROTOCOL_VERSION:
        raise SiteRefusal(f"unsupported protocol version (site speaks {PROTOCOL_VERSION})")
    fields: dict[str, Any] = dict(config.items())
    try:
        result, metrics = call(
            socket_path(site_config.site.state_dir),
            stage,
            int(msg.metadata.run_id),
            fields,
            max_frame_bytes=limits.channel_frame_bytes,
        )
    except ChannelError as exc:
        raise SiteRefusal(str(exc)) from None
    records = RecordDict({RecordName.RESULT: ConfigRecord(result)})
    if metrics:
        records[RecordName.METRICS] = MetricRecord(metrics)
    return Message(records, reply_to=msg)


def _key_rounds(msg: Message) -> int:
    """How many rounds an advertise or share message keys at once (1 outside a key batch):
    only the length of that one list is read before the size check; the site's worker checks
    the list itself."""
    config = msg.content.config_records.get(RecordName.CONFIG)
    listed = None if config is None else config.get(Key.KEY_ROUNDS)
    return len(listed) if isinstance(listed, list) else 1


def _register(stage: MessageType) -> None:
    """One Flower handler for `stage`, routed by its category and action."""

    def handler(msg: Message, context: Context) -> Message:
        return relay(stage, msg, Path(str(context.node_config["config"])))

    handler.__name__ = handler.__qualname__ = stage.word
    handler.__doc__ = f"Relay the coordinator's `{stage.value}` message to the site's worker."
    register = getattr(app, stage.category)
    register(stage.action)(handler) if stage.action else register()(handler)


for _stage in MessageType:
    _register(_stage)
