"""he+ss rounds in which no site may drop out need no consistency or release stage; every
other round confirms its survivor set before any share is released.

Real sites (`protocol_grid`: real keys, BFV, masks, Shamir, signatures; no model) and the real
coordinator protocol. The attack first: where a site may drop out, a coordinator cannot make
the sites release early by rewriting what it sends; then the message patterns, exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Error, Message
from protocol_grid import ProtocolGrid, protocol_federation

from fedseal.contract.run_plan import RunPlan
from fedseal.contract.wire import Key, MessageType
from fedseal.coordinator.protocols import RoundRequest, SecureAggregation
from fedseal.secure_agg import recipe
from fedseal.secure_agg.messages import AggregateMessage

RUN_ID = 6160
ADAPTER = 300
STEP = 4096  # updates are multiples of 1/STEP: quantised without rounding, so sums are exact


def _updates(names: list[str]) -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(7)
    return {
        site: ((rng.integers(-STEP // 4, STEP // 4 + 1, ADAPTER) / STEP).astype(np.float32), 5 + i)
        for i, site in enumerate(names)
    }


class RecordingGrid(ProtocolGrid):
    """Records the message type of every push; `rewrite` may change a message's fields before
    the site sees it; a site's refusal comes back as an error reply, as in Flower."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pushed: list[str] = []
        self.rewrite: Any = None

    def push_messages(self, messages):  # type: ignore[override]
        messages = list(messages)
        if messages:
            self.pushed.append(messages[0].metadata.message_type)
        return super().push_messages(messages)

    def pull_messages(self, message_ids):  # type: ignore[override]
        replies = []
        for message_id in message_ids:
            message = self.queued.get(message_id)
            try:
                replies.extend(super().pull_messages([message_id]))
            except Exception as exc:
                if message is None:
                    raise
                replies.append(Message(Error(code=0, reason=str(exc)), reply_to=message))
        return replies

    def _answer(self, site: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        if self.rewrite is not None:
            fields = self.rewrite(site, kind, dict(fields))
        return super()._answer(site, kind, fields)


def _round(
    tmp: Path,
    names: list[str],
    *,
    max_colluding: int,
    sampled: list[str] | None = None,
    **settings: int,
):
    """One he+ss round's grid, protocol and request; `settings` are the run's neighbour-graph
    settings (`sparse_above`, `neighbours`)."""
    updates = _updates(names)
    grid, protocol = protocol_federation(
        tmp,
        names,
        "he+ss",
        run_id=RUN_ID,
        adapter=ADAPTER,
        update=lambda site: updates[site],
        train_examples=20,
        clip=0.5,
        grid_class=RecordingGrid,
        max_colluding=max_colluding,
        **settings,
    )
    assert isinstance(grid, RecordingGrid) and isinstance(protocol, SecureAggregation)
    sites = sampled or names
    request = RoundRequest(
        run_id=RUN_ID,
        round_number=1,
        sites=sites,
        nodes={s: grid.node_of[s] for s in sites},
        plan=RunPlan("minilm-l6", ("x", "y"), 8, 16.0, 0.0, 0, 1, 0.005, 32, 1),
        timeout_s=5.0,
        expected_digest=None,
    )
    return grid, protocol, request, updates


def _assert_exact(grid, protocol, result, updates, sampled: list[str]) -> None:
    assert result.payload is not None, result.error
    info = recipe.RoundInfo(str(RUN_ID), 1, protocol.params, tuple(sampled))
    aggregate = recipe.site_decrypt_aggregate(
        info,
        AggregateMessage.from_bytes(result.payload),
        cipher=grid.sites[sampled[0]].cipher(RUN_ID),
    )
    per_step = int(protocol.params.scale) // STEP
    expected = sum(
        np.rint(updates[s][0].astype(np.float64) * STEP).astype(np.int64) * updates[s][1]
        for s in sampled
    )
    assert np.array_equal(aggregate.sums, expected * per_step)
    assert list(aggregate.contributors) == sampled


def _pushed_in_an_exact_round(tmp: Path, names: list[str], **round_settings: int):
    """One round on every member after the key ceremony: its protocol's parameters and the
    message types it pushed, once the aggregate is checked exact."""
    grid, protocol, request, updates = _round(tmp, names, **round_settings)
    grid.pushed.clear()  # the key ceremony's
    result = protocol.aggregate(grid, request, min_contributors=1)  # type: ignore[arg-type]
    _assert_exact(grid, protocol, result, updates, names)
    return protocol.params, grid.pushed


def test_where_a_site_may_drop_out_no_site_releases_with_its_upload(tmp_path: Path) -> None:
    """4 members, k = 3: an early release there would let a coordinator that claims a site
    dropped collect its mask-key shares after its seed shares. Each site decides from its
    pinned members and the k its round was advertised with, and releases only after acks."""
    names = [f"site_{i}" for i in range(4)]
    grid, protocol, request, updates = _round(tmp_path, names, max_colluding=0)
    assert protocol.params is not None and protocol.params.threshold == 3
    released: list[str] = []

    def watch(site: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        if kind == MessageType.RELEASE:
            released.append(site)
        return fields

    grid.rewrite = watch
    grid.hostile = lambda site, kind, result: (
        result if Key.SHARE_RELEASE not in result else pytest.fail(f"{site} released early")
    )
    result = protocol.aggregate(grid, request, min_contributors=1)  # type: ignore[arg-type]
    _assert_exact(grid, protocol, result, updates, names)
    assert MessageType.CONSISTENCY in grid.pushed and sorted(released) == names


def test_k_equal_to_the_members_releases_with_the_uploads_and_is_exact(tmp_path: Path) -> None:
    names = [f"site_{i}" for i in range(3)]
    params, pushed = _pushed_in_an_exact_round(tmp_path, names, max_colluding=1)
    assert params is not None and params.threshold == 3
    assert pushed == [MessageType.ADVERTISE, MessageType.SHARE, MessageType.TRAIN]


def test_k_sampled_of_more_members_keeps_the_consistency_stage(tmp_path: Path) -> None:
    """k = 3 sites sampled of 4 members: the round's sampled set is k, but each site counts its
    own pinned members, says so, and the coordinator runs the consistency stage."""
    names = [f"site_{i}" for i in range(4)]
    grid, protocol, request, updates = _round(tmp_path, names, max_colluding=1, sampled=names[:3])
    assert protocol.params is not None and protocol.params.threshold == 3
    result = protocol.aggregate(grid, request, min_contributors=1)  # type: ignore[arg-type]
    _assert_exact(grid, protocol, result, updates, names[:3])
    assert MessageType.CONSISTENCY in grid.pushed


def test_where_a_site_may_drop_out_the_survivor_set_is_confirmed_before_any_release(
    tmp_path: Path,
) -> None:
    """All pairs masked, k = 5 of 7 with one colluder: the consistency stage stays, then the
    release (tests/secure_agg/test_secrecy.py shows what releasing on an unconfirmed survivor
    set would unmask)."""
    names = [f"site_{i}" for i in range(7)]
    params, pushed = _pushed_in_an_exact_round(tmp_path, names, max_colluding=1)
    assert params is not None and params.threshold == 5
    assert pushed[2:] == [MessageType.TRAIN, MessageType.CONSISTENCY, MessageType.RELEASE]


def test_a_round_with_a_neighbour_graph_confirms_the_survivor_set_too(tmp_path: Path) -> None:
    names = [f"site_{i}" for i in range(5)]
    params, pushed = _pushed_in_an_exact_round(
        tmp_path, names, max_colluding=0, sparse_above=0, neighbours=2
    )
    assert params is not None and params.neighbours == 2
    assert pushed[-2:] == [MessageType.CONSISTENCY, MessageType.RELEASE]
