"""Sending one stage's messages to a set of sites and sorting the replies.

Every reply is checked to come from the node it was sent to and to name the site that node
identified as, and its size against the limit for its kind before any field is read; anything
else is treated as a failure of that site, never trusted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedseal.limits import MessageTooLarge, ReplyLimits, check_size, record_size
from fedseal.wire import PROTOCOL_VERSION, Key, RecordName

__all__ = ["SiteReply", "StageResult", "send_stage"]

log = logging.getLogger("fedseal.coordinator")


@dataclass(frozen=True)
class SiteReply:
    """A well-formed reply from one site."""

    site: str
    result: Mapping[str, Any]
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class StageResult:
    """Who answered a stage, who failed (with why), and who never answered."""

    replies: dict[str, SiteReply]
    failed: dict[str, str]
    missing: list[str]


def send_stage(
    grid: Grid,
    message_type: str,
    configs: Mapping[str, dict[str, Any]],
    nodes: Mapping[str, int],
    timeout_s: float,
    max_reply_bytes: int | None = None,
) -> StageResult:
    """Send `configs[site]` to each site's node and wait at most `timeout_s` for the replies.

    A reply over `max_reply_bytes` (default: `ReplyLimits()` for the message type) fails its
    site before any of its fields is read.
    """
    limit = (
        ReplyLimits().for_message_type(message_type) if max_reply_bytes is None else max_reply_bytes
    )
    node_to_site = {nodes[site]: site for site in configs}
    messages = []
    for site, fields in configs.items():
        record = ConfigRecord({Key.PROTOCOL_VERSION: PROTOCOL_VERSION, **fields})
        messages.append(
            Message(
                RecordDict({RecordName.CONFIG: record}),
                dst_node_id=nodes[site],
                message_type=message_type,
            )
        )
    replies: dict[str, SiteReply] = {}
    failed: dict[str, str] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        site = node_to_site.get(reply.metadata.src_node_id)
        if site is None:
            log.warning("ignoring a reply from unknown node %s", reply.metadata.src_node_id)
            continue
        if reply.has_error():
            failed[site] = _one_line(reply.error.reason)
            continue
        try:
            check_size(str(message_type), record_size(reply.content), limit)
        except MessageTooLarge as exc:
            log.warning("refusing site %s's reply: %s", site, exc)
            failed[site] = f"reply refused: {exc}"
            continue
        try:
            result = dict(reply.content.config_records[RecordName.RESULT])
            metrics_record = reply.content.metric_records.get(RecordName.METRICS)
            metrics = {str(k): float(v) for k, v in (metrics_record or {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            failed[site] = f"malformed reply: {exc}"
            continue
        if not isinstance(result.get(Key.SITE), str) or result.get(Key.SITE) != site:
            failed[site] = f"reply names site {result.get(Key.SITE)!r}, expected {site!r}"
            continue
        replies[site] = SiteReply(site, result, metrics)
    missing = sorted(set(configs) - set(replies) - set(failed))
    return StageResult(replies, failed, missing)


def _one_line(text: Any) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    # Flower puts the exception's last line at the end of a traceback text.
    return (lines[-1] if lines else "unknown error")[:500]


def nodes_without_site(grid: Grid, known: Iterable[int]) -> list[int]:
    """Connected nodes that have not been identified yet."""
    known_set = set(known)
    return sorted(n for n in grid.get_node_ids() if n not in known_set)
