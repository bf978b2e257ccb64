"""The site's Flower ClientApp: a thin relay from Flower messages to the site's worker.

Flower starts a fresh process for every message; this module keeps those processes light (no
torch) and hands each stage to the `SiteService` inside the long-lived `fl-client` process over
the site's local socket. See `site_service` for what each stage does.
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
from fedseal.contract.wire import PROTOCOL_VERSION, Key, RecordName

__all__ = ["app", "relay"]

app = ClientApp()


def relay(operation: str, msg: Message, config_path: Path) -> Message:
    """Check the message's size (before reading any field), then its version, then hand its
    fields to the site's worker; every refusal is one `SiteRefusal` line for the coordinator."""
    try:
        site_config = load_site_config(config_path)
    except SiteConfigError as exc:
        raise SiteRefusal(f"site config: {exc}") from None
    limits = site_config.limits
    try:
        check_size(operation, record_size(msg.content), limits.for_operation(operation))
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
            operation,
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


def _relay(operation: str, msg: Message, context: Context) -> Message:
    return relay(operation, msg, Path(str(context.node_config["config"])))


@app.query("identify")
def identify(msg: Message, context: Context) -> Message:
    """Tell the coordinator which site this node is."""
    return _relay("identify", msg, context)


@app.query("keygen")
def keygen(msg: Message, context: Context) -> Message:
    """Custodian only: make the run's federation key and seal it to every site."""
    return _relay("keygen", msg, context)


@app.query("install")
def install(msg: Message, context: Context) -> Message:
    """Open the federation key the custodian sealed to this site."""
    return _relay("install", msg, context)


@app.train("advertise")
def advertise(msg: Message, context: Context) -> Message:
    """he+ss: fresh signed round keys."""
    return _relay("advertise", msg, context)


@app.train("share")
def share(msg: Message, context: Context) -> Message:
    """he+ss: Shamir shares of this round's secrets, sealed to each peer."""
    return _relay("share", msg, context)


@app.train("consistency")
def consistency(msg: Message, context: Context) -> Message:
    """he+ss: sign the survivor set the coordinator announced."""
    return _relay("consistency", msg, context)


@app.train("release")
def release(msg: Message, context: Context) -> Message:
    """he+ss: release, per peer, the one share the survivor set allows."""
    return _relay("release", msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the global adapter locally and send the weighted change."""
    return _relay("train", msg, context)


@app.evaluate("apply")
def apply(msg: Message, context: Context) -> Message:
    """Add the round's aggregate to the global adapter, store it and evaluate it."""
    return _relay("apply", msg, context)
