"""The coordinator's memory at the upload stage does not grow with the number of sites.

`he+ss` rounds of 8, 16 and 32 real sites (`protocol_grid`: real keys, BFV, masks, Shamir,
signatures; no model) with uploads of the demo adapter's size (82,198 parameters, about 0.6 MB of
ciphertexts each) through the real coordinator (`SecureAggregation`, `messaging`). The sites
answer the train messages as they are queued, before tracing starts; each reply is copied into
the traced heap when the coordinator pulls it, as it would arrive from the SuperLink. tracemalloc
then follows the Python heap until the next stage is sent: its peak over what was held when the
stage began (the run's keys, the round's adverts, envelopes and share digests, the train
messages) is what the upload stage adds. The coordinator folds each upload into the encrypted sum
as it arrives and drops it, so that is a few uploads whatever the number of sites. SEAL's own
buffers (the encrypted sum) are outside the Python heap and do not depend on the number of
sites.
"""

from __future__ import annotations

import dataclasses
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from protocol_grid import ProtocolGrid, protocol_federation

from fedseal.contract.run_plan import RunPlan
from fedseal.contract.wire import MessageType
from fedseal.coordinator import messaging
from fedseal.coordinator.protocols import (
    AggregationResult,
    ContributionStatus,
    RoundRequest,
    SecureAggregation,
)
from fedseal.secure_agg import recipe
from fedseal.secure_agg.messages import AggregateMessage
from fedseal.secure_agg.params import ProtocolParams

ADAPTER = 6 * 2 * 2 * 8 * 384 + 384 * 22 + 22  # MiniLM LoRA r=8 on query/value + 22-class head
RUN_ID = 4711
PLAN = RunPlan("minilm-l6", ("x", "y"), 8, 16.0, 0.0, 0, 1, 0.005, 32, 3)
SIZES = (8, 16, 32)
NEIGHBOURS = 6
STEP = 4096  # updates are multiples of 1/STEP: quantised without rounding, so sums are exact


class UploadStageProbe:
    """Traces the Python heap over the upload stage: from just after the train messages are
    queued (the sites have answered by then, outside the trace) to the next stage's push."""

    def __init__(self) -> None:
        self.start: int | None = None
        self.peak: int | None = None

    def before_push(self, message_type: str) -> None:
        if self.start is not None and self.peak is None:
            self.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()

    def after_push(self, message_type: str) -> None:
        if message_type == MessageType.TRAIN:
            tracemalloc.start()
            self.start = tracemalloc.get_traced_memory()[0]

    @property
    def added(self) -> int:
        """What the upload stage added to the coordinator's heap at its peak (bytes)."""
        assert self.start is not None and self.peak is not None, "no upload stage seen"
        return self.peak - self.start


@dataclasses.dataclass
class Round:
    """One measured round: what the upload stage added to the heap, and what came out."""

    added: int
    result: AggregationResult
    grid: ProtocolGrid
    params: ProtocolParams
    updates: dict[str, tuple[np.ndarray, int]]

    @property
    def upload_bytes(self) -> int:
        """The largest upload's size (all are the same size, within a few bytes)."""
        return max(self.grid.upload_sizes)


def _round(tmp: Path, n: int) -> Round:
    """One he+ss round of `n` sites, the upload stage measured."""
    names = [f"site_{i:02d}" for i in range(n)]
    rng = np.random.default_rng(n)
    updates = {
        site: ((rng.integers(-STEP // 4, STEP // 4 + 1, ADAPTER) / STEP).astype(np.float32), 50 + i)
        for i, site in enumerate(names)
    }
    grid, protocol = protocol_federation(
        tmp / f"n{n}",
        names,
        "he+ss",
        run_id=RUN_ID,
        adapter=ADAPTER,
        update=updates.__getitem__,
        train_examples=100,
        clip=0.5,
        sparse_above=0,  # a SecAgg+ neighbour graph keeps the key stages' cost linear in n
        neighbours=NEIGHBOURS,
    )
    probe = UploadStageProbe()
    grid.on_push, grid.on_pushed = probe.before_push, probe.after_push
    grid.answer_at_push = {MessageType.TRAIN}
    request = RoundRequest(
        run_id=RUN_ID,
        round_number=1,
        sites=names,
        nodes=grid.node_of,
        plan=PLAN,
        timeout_s=30.0,
        expected_digest=None,  # a run's first round: the start adapter is decided by the vote
    )
    try:
        result = protocol.aggregate(grid, request, min_contributors=n)  # type: ignore[arg-type]
    finally:
        tracemalloc.stop()  # if the round ended before the stage after the upload
    assert isinstance(protocol, SecureAggregation) and protocol.params is not None
    return Round(probe.added, result, grid, protocol.params, updates)


def _assert_exact(measured: Round) -> None:
    """Every site contributed, and the decrypted aggregate is exactly (Σ n_i·Δ_i, Σ n_i)."""
    result, updates = measured.result, measured.updates
    assert result.payload is not None, result.error
    assert all(c.status is ContributionStatus.CONTRIBUTED for c in result.contributions.values())
    names = sorted(updates)
    info = recipe.RoundInfo(str(RUN_ID), 1, measured.params, names)
    aggregate = recipe.site_decrypt_aggregate(
        info,
        AggregateMessage.from_bytes(result.payload),
        cipher=measured.grid.sites[names[0]].cipher(RUN_ID),
    )
    per_step = int(measured.params.scale) // STEP
    assert per_step * STEP == measured.params.scale
    expected = sum(
        np.rint(delta.astype(np.float64) * STEP).astype(np.int64) * weight * per_step
        for delta, weight in updates.values()
    )
    assert np.array_equal(aggregate.sums, expected)
    assert aggregate.total_weight == sum(weight for _, weight in updates.values())


@pytest.fixture(scope="module")
def rounds(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Round]:
    tmp = tmp_path_factory.mktemp("upload-memory")
    return {n: _round(tmp, n) for n in SIZES}


def test_upload_stage_memory_does_not_grow_with_the_sites(rounds: dict[int, Round]) -> None:
    upload = rounds[SIZES[-1]].upload_bytes
    added = {n: r.added for n, r in rounds.items()}
    assert upload > 500_000  # the demo adapter's ciphertexts
    # holding every upload would add one upload per site: 24 between 8 and 32 sites
    assert added[SIZES[-1]] - added[SIZES[0]] < upload, (added, upload)
    # what it does add: the replies of one pull and the copies made while checking one upload
    assert max(added.values()) < (messaging.POLLING.batch + 6) * upload, (added, upload)


@pytest.mark.parametrize("n", SIZES)
def test_the_streamed_aggregate_is_exact(rounds: dict[int, Round], n: int) -> None:
    _assert_exact(rounds[n])


def test_the_probe_sees_uploads_held_at_once(
    rounds: dict[int, Round], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pulling a whole stage's replies in one go (as `Grid.send_and_receive` does) shows as
    every upload in the heap at once: the measurement above would catch a coordinator that
    collects the uploads before summing them."""
    batch = messaging.POLLING.batch
    monkeypatch.setattr(messaging, "POLLING", dataclasses.replace(messaging.POLLING, batch=10**6))
    n = SIZES[1]
    held = _round(tmp_path, n)
    _assert_exact(held)
    streamed = rounds[n]
    assert held.added - streamed.added > 0.8 * (n - batch) * streamed.upload_bytes
