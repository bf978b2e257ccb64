"""The site's long-lived worker and its one dispatch table, from `MessageType` to stage.

One round, seen from a site (he+ss; plain sends only train and apply):
advertise → share → train → consistency → release → apply. Each stage is a function in
`fedseal.client.stages`; this module only routes a relayed message to it, holding the site's
lock around every stage that loads or changes the model or keys (`identify` takes it itself,
only while it builds the model). Anything else is refused by name.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from fedseal.client.errors import SiteRefusal
from fedseal.client.site_context import (
    Fields,
    SiteContext,
    derive_seed,
    resolve_device,
)
from fedseal.client.stages.apply import apply
from fedseal.client.stages.identify import identify
from fedseal.client.stages.train import train
from fedseal.contract.wire import Key, MessageType

__all__ = ["SiteRefusal", "SiteService", "derive_seed", "known_metrics", "resolve_device"]

Stage = Callable[[SiteContext, int, Mapping[str, Any]], tuple[Fields, Fields]]


def _key_stage(name: str) -> Stage:
    """A key ceremony or he+ss key stage (`SecureSite.<name>`): light, no training."""

    def run(site: SiteContext, run_id: int, fields: Mapping[str, Any]) -> tuple[Fields, Fields]:
        result = getattr(site.secure, name)(run_id, fields)
        return site.reply(result, int(fields.get(Key.ROUND, 0))), {}

    return run


_STAGES: dict[MessageType, Stage] = {
    MessageType.IDENTIFY: identify,
    MessageType.KEYGEN: _key_stage("keygen"),
    MessageType.INSTALL: _key_stage("install"),
    MessageType.ADVERTISE: _key_stage("advertise"),
    MessageType.SHARE: _key_stage("share"),
    MessageType.TRAIN: train,
    MessageType.CONSISTENCY: _key_stage("consistency"),
    MessageType.RELEASE: _key_stage("release"),
    MessageType.APPLY: apply,
}
_UNLOCKED = frozenset({MessageType.IDENTIFY})  # answers while a long stage runs


class SiteService(SiteContext):
    """Answers the coordinator's stages for one site; one locked stage at a time."""

    def handle(
        self, stage: MessageType, run_id: int, fields: Mapping[str, Any]
    ) -> tuple[Fields, Fields]:
        """The site's one dispatch table: every stage a ClientApp process relays."""
        try:
            known = MessageType.parse(stage)
        except ValueError as exc:
            raise SiteRefusal(str(exc)) from None
        started = time.perf_counter()
        if known in _UNLOCKED:
            result, metrics = _STAGES[known](self, run_id, fields)
        else:
            with self.lock:
                result, metrics = _STAGES[known](self, run_id, fields)
        # the coordinator splits each stage's time into the sites' work and Flower's delivery
        return result, known_metrics({**metrics, Key.WORK_SECONDS: time.perf_counter() - started})


def known_metrics(metrics: Fields) -> Fields:
    """The metrics without those that are not finite numbers (a site with no test records has
    no accuracy): unknown, as the registry records them, rather than a reply that cannot be
    sent (JSON has no NaN)."""
    return {
        key: value
        for key, value in metrics.items()
        if not isinstance(value, float) or math.isfinite(value)
    }
