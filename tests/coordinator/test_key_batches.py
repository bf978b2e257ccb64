"""he+ss key batches: one advertise and one share stage key several rounds, each round its own.

Real sites (`protocol_grid`: real keys, BFV, masks, Shamir, signatures; no model) and the real
coordinator protocol, driven round by round. Attacks first: a coordinator that replays one
round's adverts or envelopes in another round, keys a round again after a site used it,
releases a round twice or lists rounds out of range is refused; then exactness with dropouts at
every stage of a later round of a batch, a restarted site keyed anew, and the message count.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Error, Message
from protocol_grid import ProtocolGrid, protocol_federation

from fedseal.client.stages.secure import SecureSite
from fedseal.client.trust import TrustRefusal
from fedseal.contract.message_fields import MessageFieldError
from fedseal.contract.run_plan import RunPlan
from fedseal.contract.wire import Key, MessageType
from fedseal.coordinator.protocols import (
    AggregationResult,
    ContributionStatus,
    RoundRequest,
    SecureAggregation,
)
from fedseal.secure_agg import recipe
from fedseal.secure_agg.messages import AggregateMessage

RUN_ID = 5150
ADAPTER = 300
STEP = 4096  # updates are multiples of 1/STEP: quantised without rounding, so sums are exact
NAMES = [f"site_{i}" for i in range(4)]  # k = 3 (no colluders planned): one may drop


def _plan(rounds: int) -> RunPlan:
    return RunPlan("minilm-l6", ("x", "y"), 8, 16.0, 0.0, 0, 1, 0.005, 32, rounds)


def _updates(number: int) -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(number)
    return {
        site: ((rng.integers(-STEP // 4, STEP // 4 + 1, ADAPTER) / STEP).astype(np.float32), 5 + i)
        for i, site in enumerate(NAMES)
    }


class BatchGrid(ProtocolGrid):
    """Records every message's fields; `rewrite` may change them before the site sees them,
    `drop` makes a site silent at (round, message type), `absent` disconnects it at a round."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: dict[tuple[str, int, str], dict[str, Any]] = {}
        self.pushed: list[tuple[int, str]] = []
        self.rewrite: Any = None
        self.drop: set[tuple[int, str, str]] = set()
        self.number = 0

    def push_messages(self, messages):  # type: ignore[override]
        messages = list(messages)
        if messages:
            self.pushed.append((self.number, messages[0].metadata.message_type))
        return super().push_messages(messages)

    def pull_messages(self, message_ids):  # type: ignore[override]
        kept = []
        for message_id in message_ids:
            message = self.queued.get(message_id)
            if message is not None:
                site = self.site_of[message.metadata.dst_node_id]
                kind = message.metadata.message_type
                if (self.number, kind, site) in self.drop:
                    continue  # never answers
            kept.append(message_id)
        replies = []
        for message_id in kept:  # a site's refusal comes back as an error reply, as in Flower
            message = self.queued.get(message_id)
            try:
                replies.extend(super().pull_messages([message_id]))
            except Exception as exc:
                if message is None:
                    raise
                reason = f"{type(exc).__name__}: {exc}"
                replies.append(Message(Error(code=0, reason=reason), reply_to=message))
        return replies

    def _answer(self, site: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        if self.rewrite is not None:
            fields = self.rewrite(site, kind, dict(fields))
        self.seen[(kind, int(fields.get(Key.ROUND, 0)), site)] = dict(fields)
        return super()._answer(site, kind, fields)


def _federation(tmp: Path, key_rounds: int) -> tuple[BatchGrid, SecureAggregation]:
    grid, protocol = protocol_federation(
        tmp,
        NAMES,
        "he+ss",
        run_id=RUN_ID,
        adapter=ADAPTER,
        update=lambda site: _updates(0)[site],
        train_examples=20,
        clip=0.5,
        key_rounds=key_rounds,
        grid_class=BatchGrid,
    )
    assert isinstance(grid, BatchGrid) and isinstance(protocol, SecureAggregation)
    return grid, protocol


def _run_round(
    grid: BatchGrid, protocol: SecureAggregation, number: int, *, rounds: int, absent=()
) -> AggregationResult:
    grid.number = number
    grid.update = lambda site: _updates(number)[site]
    sites = protocol.round_sample(number) or NAMES
    request = RoundRequest(
        run_id=RUN_ID,
        round_number=number,
        sites=sites,
        nodes={s: n for s, n in grid.node_of.items() if s not in absent},
        plan=_plan(rounds),
        timeout_s=5.0,
        expected_digest=None,
    )
    return protocol.aggregate(grid, request, min_contributors=1)  # type: ignore[arg-type]


def _fields(protocol: SecureAggregation, number: int, **extra: Any) -> dict[str, Any]:
    return {
        **protocol._common(),
        Key.ROUND: number,
        Key.SAMPLED: json.dumps(NAMES),
        **extra,
    }


def _assert_exact(grid: BatchGrid, protocol: SecureAggregation, number: int, result) -> None:
    """The decrypted aggregate is exactly Σ n_i·Δ_i and Σ n_i over its contributors."""
    assert result.payload is not None, result.error
    assert protocol.params is not None
    info = recipe.RoundInfo(str(RUN_ID), number, protocol.params, tuple(NAMES))
    aggregate = recipe.site_decrypt_aggregate(
        info,
        AggregateMessage.from_bytes(result.payload),
        cipher=grid.sites[NAMES[0]].cipher(RUN_ID),
    )
    per_step = int(protocol.params.scale) // STEP
    assert per_step * STEP == protocol.params.scale
    updates = _updates(number)
    expected = sum(
        np.rint(updates[s][0].astype(np.float64) * STEP).astype(np.int64) * updates[s][1]
        for s in aggregate.contributors
    )
    assert np.array_equal(aggregate.sums, expected * per_step)
    assert aggregate.total_weight == sum(updates[s][1] for s in aggregate.contributors)
    assert list(aggregate.contributors) == result.contributors


# -- attacks -------------------------------------------------------------------------------


def test_adverts_of_one_round_relayed_as_another_rounds_are_refused(tmp_path: Path) -> None:
    grid, protocol = _federation(tmp_path, key_rounds=3)

    def swap(site: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        if kind == MessageType.SHARE:  # round 1's adverts as round 2's and the reverse
            counts = fields[Key.RELAYED_COUNTS]
            relayed = list(fields[Key.RELAYED])
            a, b = counts[0], counts[0] + counts[1]
            fields[Key.RELAYED] = relayed[a:b] + relayed[:a] + relayed[b:]
            fields[Key.RELAYED_COUNTS] = [counts[1], counts[0], *counts[2:]]
        return fields

    grid.rewrite = swap
    first = _run_round(grid, protocol, 1, rounds=3)
    assert first.payload is None
    for site in NAMES:
        assert first.contributions[site].status is ContributionStatus.FAILED
        assert "share" in (first.contributions[site].error or "")
    second = _run_round(grid, protocol, 2, rounds=3)  # no keys for it: keyed anew, swapped again
    assert second.payload is None
    assert (2, MessageType.ADVERTISE) in grid.pushed
    for secure in grid.sites.values():
        assert not secure._uploaded


def test_envelopes_of_one_round_relayed_in_the_next_are_refused(tmp_path: Path) -> None:
    grid, protocol = _federation(tmp_path, key_rounds=3)
    assert _run_round(grid, protocol, 1, rounds=3).payload is not None

    def replay(site: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        if kind == MessageType.TRAIN:  # round 1's envelopes for this site, again
            fields[Key.RELAYED] = grid.seen[(MessageType.TRAIN, 1, site)][Key.RELAYED]
        return fields

    grid.rewrite = replay
    second = _run_round(grid, protocol, 2, rounds=3)
    assert second.payload is None
    assert all(
        c.status is not ContributionStatus.CONTRIBUTED for c in second.contributions.values()
    )
    for secure in grid.sites.values():
        assert (RUN_ID, 2) not in secure._uploaded


def test_a_round_used_is_never_keyed_again_and_an_unused_one_gets_fresh_secrets(
    tmp_path: Path,
) -> None:
    """Attack: a coordinator keys a round again after a site uploaded in it, or keys a round
    before one the site used; refused. A round keyed and not used is keyed anew (the batch of
    a restarted site), its old secrets gone."""
    grid, protocol = _federation(tmp_path, key_rounds=3)
    assert _run_round(grid, protocol, 1, rounds=3).payload is not None  # keys 1-3, uses 1
    site = grid.sites[NAMES[0]]
    assert site.held_rounds(RUN_ID) == [2, 3]
    with pytest.raises(TrustRefusal, match=r"round 1 of run \d+ was used before"):
        site.advertise(RUN_ID, _fields(protocol, 1, **{Key.KEY_ROUNDS: [1, 2]}))
    with pytest.raises(TrustRefusal, match="not after round 1"):
        site.advertise(RUN_ID, _fields(protocol, 0, **{Key.KEY_ROUNDS: [0]}))
    old = site._rounds[(RUN_ID, 2)]
    reply = site.advertise(RUN_ID, _fields(protocol, 2, **{Key.KEY_ROUNDS: [2, 3]}))
    assert len(reply[Key.SIGNED_LIST]) == 2
    assert site.held_rounds(RUN_ID) == [2, 3] and site._rounds[(RUN_ID, 2)] is not old
    site._rounds[(RUN_ID, 2)].survivors = tuple(NAMES)  # as if it had signed round 2's survivor set
    with pytest.raises(TrustRefusal, match=r"round 2 of run \d+ was used before"):
        site.advertise(RUN_ID, _fields(protocol, 2, **{Key.KEY_ROUNDS: [2, 3]}))


@pytest.mark.parametrize(
    ("first", "listed"),
    [
        (2, [1, 2]),  # a round before the message's
        (1, [1, 3]),  # not consecutive
        (1, [2, 3]),  # not from the message's round
        (1, [1, 1]),
        (1, list(range(1, 66))),  # more than 64
    ],
)
def test_a_batch_with_rounds_out_of_range_is_refused(
    tmp_path: Path, first: int, listed: list[int]
) -> None:
    grid, protocol = _federation(tmp_path, key_rounds=3)
    site = grid.sites[NAMES[0]]
    with pytest.raises((TrustRefusal, MessageFieldError)):
        site.advertise(RUN_ID, _fields(protocol, first, **{Key.KEY_ROUNDS: listed}))
    with pytest.raises(MessageFieldError):
        site.advertise(RUN_ID, _fields(protocol, 1, **{Key.KEY_ROUNDS: [True]}))
    assert site.held_rounds(RUN_ID) == []


def test_a_round_is_released_once_and_its_secrets_then_forgotten(tmp_path: Path) -> None:
    grid, protocol = _federation(tmp_path, key_rounds=3)
    assert _run_round(grid, protocol, 1, rounds=3).payload is not None
    site = grid.sites[NAMES[0]]
    assert site.held_rounds(RUN_ID) == [2, 3]  # round 1 released and dropped
    release = grid.seen[(MessageType.RELEASE, 1, NAMES[0])]
    with pytest.raises(PermissionError, match="no key advertisement"):
        site.release(RUN_ID, release)
    assert _run_round(grid, protocol, 2, rounds=3).payload is not None
    with pytest.raises(PermissionError, match="no key advertisement"):
        site.release(RUN_ID, grid.seen[(MessageType.RELEASE, 2, NAMES[0])])
    assert site.held_rounds(RUN_ID) == [3]


# -- exactness and message count -----------------------------------------------------------

DROPS = {  # how one site leaves round 2, a later round of the batch
    "not connected": "absent",
    "train": MessageType.TRAIN,
    "consistency": MessageType.CONSISTENCY,
    "release": MessageType.RELEASE,
}


@pytest.mark.parametrize("drop", list(DROPS))
def test_a_batch_of_three_rounds_with_a_dropout_is_exact(tmp_path: Path, drop: str) -> None:
    grid, protocol = _federation(tmp_path, key_rounds=3)
    gone = NAMES[-1]
    absent: tuple[str, ...] = ()
    if DROPS[drop] == "absent":
        absent = (gone,)
    else:
        grid.drop.add((2, DROPS[drop], gone))
    results = {}
    for number in (1, 2, 3):
        results[number] = _run_round(
            grid, protocol, number, rounds=3, absent=absent if number == 2 else ()
        )
        _assert_exact(grid, protocol, number, results[number])
    uploaded = drop in ("consistency", "release")  # its upload is in the sum
    assert (gone in results[2].contributors) is uploaded
    assert results[1].contributors == results[3].contributors == NAMES
    assert [kind for n, kind in grid.pushed if n == 1] == [
        MessageType.ADVERTISE,
        MessageType.SHARE,
        MessageType.TRAIN,
        MessageType.CONSISTENCY,
        MessageType.RELEASE,
    ]
    for number in (2, 3):  # the batch's later rounds: no key stages
        kinds = [kind for n, kind in grid.pushed if n == number]
        assert kinds[:1] == [MessageType.TRAIN], kinds
        assert MessageType.ADVERTISE not in kinds and MessageType.SHARE not in kinds


def test_a_site_restarted_inside_a_batch_has_the_rest_of_the_batch_keyed_anew(
    tmp_path: Path,
) -> None:
    """A restarted site lost its secrets of the batch's later rounds; it reconnects as a new
    node, and the next round keys a new batch with every site instead of losing it."""
    grid, protocol = _federation(tmp_path, key_rounds=3)
    _assert_exact(grid, protocol, 1, _run_round(grid, protocol, 1, rounds=3))
    restarted = NAMES[1]
    old = grid.sites[restarted]
    grid.sites[restarted] = SecureSite(old.keys, old._state_dir, old.trust)  # memory gone
    grid.node_of[restarted] = 99
    grid.site_of = {node: site for site, node in grid.node_of.items()}
    for number in (2, 3):
        result = _run_round(grid, protocol, number, rounds=3)
        _assert_exact(grid, protocol, number, result)
        assert result.contributors == NAMES
    keyed = [n for n, kind in grid.pushed if kind == MessageType.ADVERTISE]
    assert keyed == [1, 2]  # rounds 1-3, then rounds 2-3 again with the restarted site
    assert grid.seen[(MessageType.ADVERTISE, 2, NAMES[0])][Key.KEY_ROUNDS] == [2, 3]


def test_a_new_batch_starts_after_the_last_and_a_single_round_batch_is_todays(
    tmp_path: Path,
) -> None:
    grid, protocol = _federation(tmp_path, key_rounds=2)
    for number in (1, 2, 3):
        _assert_exact(grid, protocol, number, _run_round(grid, protocol, number, rounds=3))
    keyed = [n for n, kind in grid.pushed if kind == MessageType.ADVERTISE]
    assert keyed == [1, 3]  # rounds 1-2, then round 3 (the run's last) alone
    # the batch of round 3 was one round: today's messages, without the batch's fields
    third = grid.seen[(MessageType.ADVERTISE, 3, NAMES[0])]
    assert Key.KEY_ROUNDS not in third
    assert Key.KEY_ROUNDS in grid.seen[(MessageType.ADVERTISE, 1, NAMES[0])]
