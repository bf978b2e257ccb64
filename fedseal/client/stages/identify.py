"""The `identify` stage: who the site is, and what it signed earlier whose reply was lost."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fedseal.client.errors import SiteRefusal
from fedseal.client.statement_outbox import StatementOutbox
from fedseal.contract.run_plan import RunPlan
from fedseal.contract.wire import Key

if TYPE_CHECKING:
    from fedseal.client.site_context import Fields, SiteContext

__all__ = ["identify"]


def identify(site: SiteContext, run_id: int, fields: Mapping[str, Any]) -> tuple[Fields, Fields]:
    """The site's name and record counts; with a run plan, also the adapter's size and layout
    digest; with `recover-runs`, the ledger statements it kept for those runs."""
    data = site.data()
    result = site.reply(
        {
            Key.TRAIN_EXAMPLES: len(data.train),
            Key.TEST_EXAMPLES: len(data.test),
            Key.DEVICE: site.config.site.device,
        }
    )
    if Key.BASE_MODEL in fields:
        with site.lock:
            loaded = site.model(RunPlan.from_config(fields))
        result[Key.ADAPTER_SIZE] = int(loaded.layout.size)
        result[Key.LAYOUT_DIGEST] = str(loaded.layout.digest)
    runs = [str(r) for r in fields.get(Key.RECOVER_RUNS, [])]
    if runs:
        try:
            kept = StatementOutbox(site.config.site.state_dir).sent(runs)
        except ValueError as exc:
            raise SiteRefusal(f"recover-runs: {exc}") from None
        result[Key.RECOVERED] = [s.statement for s in kept]
        result[Key.RECOVERED_SIGNATURES] = [s.signature for s in kept]
    return result, {}
