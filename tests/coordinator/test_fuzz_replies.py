"""Fuzz: every reply field the coordinator reads from a site, at every stage, in every mode.

Real sites (`SecureSite`: real keys, BFV, Shamir, signatures, no model) answer a real protocol
driver through a stand-in Grid (`protocol_grid.ProtocolGrid`); one site's reply at one stage is
replaced by a hostile one (missing fields, wrong types, mutated bytes, huge declared sizes,
oversize blobs). The round must never raise: the hostile site ends failed or dropped (or
contributes, when the change was harmless), the honest sites' round completes, and an oversize
reply is refused by its size before any field is read, naming size and limit.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord
from fuzzing import FUZZ_SLOW, hostile_values, mutated
from hypothesis import given
from hypothesis import strategies as st
from protocol_grid import ProtocolGrid, protocol_federation

from fedseal.contract.limits import DEFAULT_CONTROL_BYTES
from fedseal.contract.run_plan import RunPlan
from fedseal.contract.wire import Key, MessageType
from fedseal.coordinator.messaging import stream_stage
from fedseal.coordinator.protocols import ContributionStatus, RoundRequest

SITES = ("site_a", "site_b", "site_c")
ADAPTER = 40
RUN_ID = 777
PLAN = RunPlan("minilm-l6", ("x", "y"), 4, 8.0, 0.0, 0, 1, 0.01, 16, 100)
STAGES = {
    "he+ss": (
        MessageType.ADVERTISE,
        MessageType.SHARE,
        MessageType.TRAIN,
        MessageType.CONSISTENCY,
        MessageType.RELEASE,
    ),
    "plain": (MessageType.TRAIN,),
}


def _update(site: str) -> tuple[np.ndarray, int]:
    return np.full(ADAPTER, 0.01, dtype=np.float32), 10


def _federation(tmp: Path, mode: str) -> tuple[ProtocolGrid, Any]:
    return protocol_federation(tmp, SITES, mode, run_id=RUN_ID, adapter=ADAPTER, update=_update)


@pytest.fixture(scope="module", params=sorted(STAGES))
def federation(request, tmp_path_factory):
    return (request.param, *_federation(tmp_path_factory.mktemp(request.param), request.param))


_rounds = itertools.count(1)


def _run(grid: ProtocolGrid, protocol: Any):
    request = RoundRequest(
        run_id=RUN_ID,
        round_number=next(_rounds),
        sites=list(SITES),
        nodes=grid.node_of,
        plan=PLAN,
        timeout_s=5.0,
        expected_digest="d0",
    )
    return protocol.aggregate(grid, request, min_contributors=2)


def _carried_by_flower(value: Any) -> bool:
    try:
        ConfigRecord({"k": value})
    except (TypeError, ValueError):
        return False
    return True


@st.composite
def hostile_reply(draw: st.DrawFn, result: dict[str, Any]) -> dict[str, Any]:
    """`result` with a few fields dropped, replaced by hostile values, or their bytes mutated."""
    changed = dict(result)
    keys = sorted(changed)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*keys, "junk"]))
        action = draw(st.sampled_from(("drop", "value", "mutate", "huge-int")))
        if action == "drop":
            changed.pop(key, None)
        elif action == "value":
            changed[key] = draw(hostile_values().filter(_carried_by_flower))
        elif action == "huge-int":
            changed[key] = draw(st.sampled_from((10**9, 2**62, -1, [10**9, 2**40])))
        elif isinstance(changed.get(key), bytes):
            changed[key] = draw(mutated(changed[key]))
        elif isinstance(changed.get(key), list) and changed[key]:
            items = list(changed[key])
            i = draw(st.integers(0, len(items) - 1))
            if isinstance(items[i], bytes):
                items[i] = draw(mutated(items[i]))
            changed[key] = items
    return changed


@FUZZ_SLOW
@given(data=st.data())
def test_a_hostile_reply_fails_its_site_and_the_round_goes_on(federation, data):
    mode, grid, protocol = federation
    target = data.draw(st.sampled_from(SITES))
    stage = data.draw(st.sampled_from(STAGES[mode]))

    def hostile(site: str, kind: str, result: dict[str, Any]) -> dict[str, Any]:
        if site != target or kind != stage:
            return result
        return data.draw(hostile_reply(result))

    grid.hostile = hostile
    try:
        outcome = _run(grid, protocol)
    finally:
        grid.hostile = None
    assert outcome.payload is not None, outcome.error
    for site in SITES:
        status = outcome.contributions[site].status
        if site != target:
            assert status is ContributionStatus.CONTRIBUTED, outcome.contributions[site]
        else:
            assert status in (
                ContributionStatus.CONTRIBUTED,
                ContributionStatus.FAILED,
                ContributionStatus.DROPPED,
            )


@pytest.mark.parametrize(
    ("federation", "stage"),
    [(mode, stage) for mode in sorted(STAGES) for stage in STAGES[mode]],
    indirect=["federation"],
)
def test_an_oversize_reply_is_refused_by_size_and_the_round_goes_on(federation, stage):
    _mode, grid, protocol = federation
    target = SITES[1]
    limit = protocol.limits.for_message_type(stage)

    def oversize(site: str, kind: str, result: dict[str, Any]) -> dict[str, Any]:
        if site == target and kind == stage:
            return {**result, "padding": b"\x00" * (limit + 1)}
        return result

    grid.hostile = oversize
    try:
        outcome = _run(grid, protocol)
    finally:
        grid.hostile = None
    assert outcome.payload is not None, outcome.error
    mine = outcome.contributions[target]
    if stage in (MessageType.CONSISTENCY, MessageType.RELEASE):
        # after its upload is in the sum, the site stays counted; the refusal is logged
        assert mine.status is ContributionStatus.CONTRIBUTED
    else:
        assert mine.status is ContributionStatus.FAILED
        assert f"exceeds the limit of {limit} bytes" in mine.error
    for site in set(SITES) - {target}:
        assert outcome.contributions[site].status is ContributionStatus.CONTRIBUTED


def test_upload_limit_follows_the_adapter_size(federation):
    _, _, protocol = federation
    assert protocol.limits.control == DEFAULT_CONTROL_BYTES
    assert ADAPTER * 4 < protocol.limits.upload < 1 << 20


def test_stage_refuses_before_reading_fields(federation):
    _, grid, _ = federation
    seen = []

    def oversize(site: str, kind: str, result: dict[str, Any]) -> dict[str, Any]:
        seen.append(site)
        return {Key.SITE: site, "blob": b"\x01" * 2048}

    grid.hostile = oversize
    try:
        stage = stream_stage(
            grid,
            MessageType.IDENTIFY,
            {site: {} for site in SITES},
            grid.node_of,
            5.0,
            max_reply_bytes=1024,
        ).collect()
    finally:
        grid.hostile = None
    assert sorted(seen) == sorted(SITES) and not stage.replies
    for reason in stage.failed.values():
        assert "exceeds the limit of 1024 bytes" in reason
