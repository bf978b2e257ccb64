"""Sending one stage's messages to a set of sites and sorting the replies as they arrive.

Every reply is checked to come from the node it was sent to and to name the site that node
identified as, and its size against the limit for its kind before any field is read; anything
else is treated as a failure of that site, never trusted.

Replies are pulled from the SuperLink a few at a time (`Grid.push_messages`, then
`Grid.pull_messages` on small batches of message ids) and handed out one by one
(`stream_stage`), so a caller that handles each reply and lets it go holds a few replies at a
time whatever the number of sites: at the upload stage that is what keeps the coordinator's
memory flat (Flower's `Grid.send_and_receive` returns a whole stage's replies at once). A stage
whose replies are small (keys, signatures, metrics) keeps them all: `StageStream.collect`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedseal.contract.limits import MessageTooLarge, ReplyLimits, check_size, record_size
from fedseal.contract.wire import PROTOCOL_VERSION, Key, RecordName
from fedseal.coordinator.stage_timing import StageClock

__all__ = [
    "POLLING",
    "Polling",
    "SiteReply",
    "StageResult",
    "StageStream",
    "stream_stage",
]

log = logging.getLogger("fedseal.coordinator")

T = TypeVar("T")


@dataclass(frozen=True)
class Polling:
    """How a stage's replies are pulled from the SuperLink.

    `batch` message ids go in one pull, so one pull brings at most `batch` replies: with the
    caller handling each before the next pull, that bounds the replies held at once (uploads
    are the size of the adapter's ciphertexts). For the first `quick_s` of a stage the wait
    between pulls is `first_wait_s` per batch of pending ids (a key or signature stage is over
    within a second, and a reply found 0.2 s late costs the whole round 0.2 s: six stages in
    he+ss); after that, between pulls that brought nothing it doubles up to `max_wait_s`, so a
    long training stage costs one request per `batch` waiting sites every `max_wait_s`.
    `clock` and `sleep` are the wall clock's; an in-process test grid passes a virtual one.
    """

    batch: int = 4
    first_wait_s: float = 0.02
    max_wait_s: float = 0.25
    quick_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError("Polling.batch must be at least 1")
        if not 0 < self.first_wait_s <= self.max_wait_s:
            raise ValueError("Polling waits must satisfy 0 < first_wait_s <= max_wait_s")
        if self.quick_s < 0:
            raise ValueError("Polling.quick_s must not be negative")

    def next_wait(self, previous: float, *, arrived: bool, elapsed: float, pending: int) -> float:
        """The wait before the next pull: short while the stage is young, doubling after."""
        if elapsed < self.quick_s:
            batches = -(-pending // self.batch)
            return min(self.first_wait_s * max(batches, 1), self.max_wait_s)
        return self.first_wait_s if arrived else min(2 * previous, self.max_wait_s)


POLLING = Polling()
"""The polling every stage uses (read at each call, so a test harness can swap it)."""


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


@dataclass
class StageStream:
    """One stage's replies, handed out one at a time as they arrive: `for reply in stream`.

    A reply is checked (its node, its size before any field is read, its fields, the site it
    names) before it is handed out; one that fails is recorded in `failed` instead. Once the
    iteration ends (every site answered, or the stage timed out) `missing` lists the sites that
    never answered. Iterate once.
    """

    message_type: str
    sites: list[str]
    node_to_site: dict[int, str]
    limit: int
    arrivals: Iterator[Message]
    failed: dict[str, str] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)
    clock: StageClock | None = None  # the stage's timing, when a round is being recorded

    @property
    def missing(self) -> list[str]:
        """Sites that have not answered (after the iteration: never answered)."""
        return sorted(set(self.sites) - self.answered)

    def collect(self) -> StageResult:
        """Iterate the whole stage and keep every reply: for stages whose replies are small
        (keys, signatures, metrics)."""
        replies = {reply.site: reply for reply in self}
        return StageResult(replies, self.failed, self.missing)

    def __iter__(self) -> Iterator[SiteReply]:
        try:
            for message in self.arrivals:
                reply = self._check(message)
                if self.clock is not None:
                    if reply is not None:
                        self.clock.answered(reply.site, reply.metrics)
                    elif (site := self.node_to_site.get(message.metadata.src_node_id)) is not None:
                        self.clock.failed(site)
                if reply is not None:
                    yield reply
        finally:
            if self.clock is not None:
                self.clock.ended()
                self.clock = None

    def _check(self, message: Message) -> SiteReply | None:
        """The reply's content when it is well formed; else records why its site failed."""
        site = self.node_to_site.get(message.metadata.src_node_id)
        if site is None:
            log.warning("ignoring a reply from unknown node %s", message.metadata.src_node_id)
            return None
        if site in self.answered:
            log.warning("ignoring a second reply from site %s", site)
            return None
        self.answered.add(site)
        if message.has_error():
            self.failed[site] = _one_line(message.error.reason)
            return None
        try:
            check_size(self.message_type, record_size(message.content), self.limit)
        except MessageTooLarge as exc:
            log.warning("refusing site %s's reply: %s", site, exc)
            self.failed[site] = f"reply refused: {exc}"
            return None
        try:
            result = dict(_record(message.content, RecordName.RESULT, ConfigRecord))
            metrics_record = message.content.get(RecordName.METRICS)
            if not isinstance(metrics_record, MetricRecord):
                metrics_record = None
            metrics = {str(k): float(v) for k, v in (metrics_record or {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            self.failed[site] = f"malformed reply: {exc}"
            return None
        if not isinstance(result.get(Key.SITE), str) or result.get(Key.SITE) != site:
            self.failed[site] = f"reply names site {result.get(Key.SITE)!r}, expected {site!r}"
            return None
        return SiteReply(site, result, metrics)


def stream_stage(
    grid: Grid,
    message_type: str,
    configs: Mapping[str, dict[str, Any]],
    nodes: Mapping[str, int],
    timeout_s: float,
    max_reply_bytes: int | None = None,
) -> StageStream:
    """Send `configs[site]` to each site's node now; iterate the result for the replies, which
    arrive for at most `timeout_s`.

    A reply over `max_reply_bytes` (default: `ReplyLimits()` for the message type) fails its
    site before any of its fields is read.
    """
    limit = (
        ReplyLimits().for_message_type(message_type) if max_reply_bytes is None else max_reply_bytes
    )
    polling = POLLING
    sites = list(configs)
    message_ids = list(grid.push_messages(_messages(message_type, configs, nodes)))
    deadline = polling.clock() + timeout_s
    return StageStream(
        message_type=str(message_type),
        sites=sites,
        node_to_site={nodes[site]: site for site in sites},
        limit=limit,
        arrivals=_pull_replies(grid, [i for i in message_ids if i], deadline, polling),
        clock=StageClock(message_type, len(sites)),
    )


def _messages(
    message_type: str, configs: Mapping[str, dict[str, Any]], nodes: Mapping[str, int]
) -> list[Message]:
    return [
        Message(
            RecordDict(
                {
                    RecordName.CONFIG: ConfigRecord(
                        {Key.PROTOCOL_VERSION: PROTOCOL_VERSION, **fields}
                    )
                }
            ),
            dst_node_id=nodes[site],
            message_type=message_type,
        )
        for site, fields in configs.items()
    ]


def _pull_replies(
    grid: Grid, message_ids: list[str], deadline: float, polling: Polling
) -> Iterator[Message]:
    """Replies to `message_ids` as they arrive, until every one has or `deadline` passes.

    Pulls `polling.batch` ids at a time and yields each reply before the next pull, so at most
    one batch of replies waits in memory for the caller.
    """
    pending = dict.fromkeys(message_ids)  # an ordered set
    wait = polling.first_wait_s
    began = polling.clock()
    while pending:
        started = polling.clock()
        arrived = False
        for reply in _pull_pending(grid, pending, polling.batch):
            arrived = True
            yield reply
        left = deadline - polling.clock()
        if pending and left <= 0 and started < deadline < polling.clock() - _LATE_PULL_S:
            # The pull itself ran past the deadline: Flower waits out a reply whose sender
            # died while pushing it (until its push session expires, minutes), and replies
            # that arrived meanwhile were not asked for yet. One last pull takes those.
            yield from _pull_pending(grid, pending, polling.batch)
            return
        if not pending or left <= 0:
            return
        wait = polling.next_wait(
            wait, arrived=arrived, elapsed=polling.clock() - began, pending=len(pending)
        )
        polling.sleep(min(wait, left))


_LATE_PULL_S = 1.0
"""A pull that ended this long past the deadline is followed by one last pull."""


def _pull_pending(grid: Grid, pending: dict[str, None], size: int) -> Iterator[Message]:
    """One pull of every pending id, `size` ids a request; each reply leaves `pending`."""
    for batch in _batches(list(pending), size):
        for reply in grid.pull_messages(batch):
            pending.pop(reply.metadata.reply_to_message_id, None)
            yield reply


def _batches(items: list[str], size: int) -> Iterable[list[str]]:
    return (items[i : i + size] for i in range(0, len(items), size))


def _record(content: RecordDict, name: str, kind: type[T]) -> T:
    """The record `name` of a reply, of type `kind` (a KeyError otherwise).

    Reads the RecordDict as a mapping: its typed views (`content.config_records`) reference
    themselves, so each one would keep the reply's records, an upload included, alive until the
    garbage collector's next full pass, not until the caller lets the reply go.
    """
    record = content.get(name)
    if not isinstance(record, kind):
        raise KeyError(name)
    return record


def _one_line(text: Any) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    # Flower puts the exception's last line at the end of a traceback text.
    return (lines[-1] if lines else "unknown error")[:500]


def nodes_without_site(grid: Grid, known: Iterable[int]) -> list[int]:
    """Connected nodes that have not been identified yet."""
    known_set = set(known)
    return sorted(n for n in grid.get_node_ids() if n not in known_set)
