"""How soon a receiver asks again for a message's objects that are still on their way.

Flower 1.41 delivers a message as its metadata first and its records (objects) after, each end
pushing them one by one. A receiver that sees the message while the sender is still pushing
waits for the missing objects with `pull_objects`' backoff, which starts at 1 s and doubles to
10 s. A stage's replies arrive within milliseconds of each other, so one reply pulled a few
milliseconds early made the whole stage, and the round, a second late: measured on the 3-site
demo, one stage in two of an he+ss round (docs/benchmarks.md). Every receiver of a stage's
messages (the coordinator's grid pulling replies, the SuperNode pulling instructions from the
SuperLink, the ClientApp pulling its message from the SuperNode) waits from 20 ms doubling to
1 s instead. The number of tries and the time limit stay Flower's, so a sender that died
mid-push is given up on as before.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, cast

from fedseal.contract.errors import ContractError

__all__ = [
    "BACKOFF_CAP_S",
    "CLIENTAPP_PULLS",
    "COORDINATOR_PULLS",
    "FIRST_BACKOFF_S",
    "SUPERNODE_PULLS",
    "FlowerMismatch",
    "install_quick_object_pulls",
]

FIRST_BACKOFF_S = 0.02
"""The first wait for an object not yet pushed (Flower 1.41: 1 s)."""

BACKOFF_CAP_S = 1.0
"""The longest wait between two asks for one object (Flower 1.41: 10 s)."""

COORDINATOR_PULLS = "flwr.superlink.grid.http_grid"
"""Where the ServerApp's grid pulls the sites' replies (`pull_objects`)."""

SUPERNODE_PULLS = "flwr.supernode.start_client_internal"
"""Where a SuperNode pulls the coordinator's messages from the SuperLink (`pull_objects`)."""

CLIENTAPP_PULLS = "flwr.supernode.runtime.run_clientapp"
"""Where a ClientApp pulls its message from the SuperNode (`pull_and_inflate_object_from_tree`):
the SuperNode hands out the task before it holds the whole message."""

_SOURCE = "flwr.supercore.inflatable.inflatable_utils"
_PULLER = {
    COORDINATOR_PULLS: "pull_objects",
    SUPERNODE_PULLS: "pull_objects",
    CLIENTAPP_PULLS: "pull_and_inflate_object_from_tree",
}
_QUICK = "_fedseal_quick_object_pulls"


class FlowerMismatch(ContractError):
    """The installed Flower does not pull objects the way this module was written for."""


def install_quick_object_pulls(module_name: str) -> Callable[..., Any]:
    """Make the receiver in `module_name` wait `FIRST_BACKOFF_S`..`BACKOFF_CAP_S` between asks
    for a missing object (idempotent); refuses a module whose puller is not Flower's own."""
    name = _PULLER.get(module_name)
    if name is None:
        raise FlowerMismatch(f"{module_name} is not one of the receivers this module knows")
    module = importlib.import_module(module_name)
    current = getattr(module, name, None)
    if getattr(current, _QUICK, False):
        return current  # type: ignore[return-value]
    found = getattr(importlib.import_module(_SOURCE), name, None)
    if not callable(found) or current is not found:
        raise FlowerMismatch(f"Flower's {module_name} does not pull objects as expected")
    original = cast(Callable[..., Any], found)

    @functools.wraps(original)
    def quick(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("initial_backoff", FIRST_BACKOFF_S)
        kwargs.setdefault("backoff_cap", BACKOFF_CAP_S)
        return original(*args, **kwargs)

    setattr(quick, _QUICK, True)
    setattr(module, name, quick)
    return quick
