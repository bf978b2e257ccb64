"""One federated round, from sampling to the registry record.

1. sample the connected sites (not those that declined a round of this run for lack of privacy
   budget: they would decline again);
2. let the run's aggregation protocol collect their updates into an aggregate;
3. send the aggregate to the contributors, which apply it, evaluate the new global adapter and
   report its digest (all digests must agree);
4. record the round, every site's part in it and every site's privacy-ledger entry (sites that
   trained have spent budget even when the round aborts) in the registry.

A round is `completed` only when an aggregate was produced and at least one site confirmed it
applied it; otherwise it is `aborted` and the global adapter stays as it was.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import Counter
from dataclasses import dataclass, field

from flwr.serverapp import Grid

from fedseal.contract.update_codec import payload_digest
from fedseal.contract.wire import Key, MessageType
from fedseal.coordinator.messaging import StageResult, stream_stage
from fedseal.coordinator.protocols import (
    AggregationProtocol,
    AggregationResult,
    ContributionStatus,
    RoundRequest,
)
from fedseal.coordinator.resume import record_recovered
from fedseal.coordinator.run_settings import RunSettings
from fedseal.coordinator.site_directory import SiteDirectory
from fedseal.coordinator.stage_timing import recording, run_folder
from fedseal.registry import Registry, RegistryError, RegistryUnavailable
from fedseal.registry.statuses import RoundStatus

__all__ = ["RoundOutcome", "RunState", "run_round"]

log = logging.getLogger("fedseal.coordinator")


@dataclass
class RunState:
    """What the coordinator remembers between rounds of one run."""

    run_id: int
    flower_run_id: int
    expected_digest: str | None = None
    last_round: int = 0
    applied: dict[str, int] = field(default_factory=dict)  # site -> last applied round
    aggregates: dict[int, bytes] = field(default_factory=dict)  # round -> aggregate payload
    apply_fields: dict[int, str] = field(default_factory=dict)  # round -> JSON of extra fields
    lineage: dict[str, int] = field(default_factory=dict)  # Flower run id -> registry run id

    def catchup_for(self, site: str) -> tuple[list[int], list[bytes]]:
        """Aggregates of completed rounds that `site` has not applied yet."""
        since = self.applied.get(site, 0)
        rounds = [r for r in sorted(self.aggregates) if r > since]
        return rounds, [self.aggregates[r] for r in rounds]

    def catchup_fields_for(self, site: str) -> list[str]:
        """The extra fields each missed round's aggregate needs, in the same order."""
        rounds, _ = self.catchup_for(site)
        return [self.apply_fields.get(r, "{}") for r in rounds]


@dataclass(frozen=True)
class RoundOutcome:
    """The round's status as recorded, with the figures the progress display shows."""

    number: int
    status: RoundStatus
    participants: list[str]
    dropped: list[str]
    global_digest: str | None
    error: str | None = None


def _sample(sites: list[str], per_round: int, run_id: int, number: int) -> list[str]:
    """All connected sites, or a uniformly random subset when `sites-per-round` is set.

    Sampling uses the OS CSPRNG: which sites are sampled matters for privacy amplification later.
    """
    if per_round <= 0 or per_round >= len(sites):
        return sorted(sites)
    pool = sorted(sites)
    chosen: list[str] = []
    while len(chosen) < per_round:
        chosen.append(pool.pop(secrets.randbelow(len(pool))))
    return sorted(chosen)


def run_round(
    grid: Grid,
    number: int,
    settings: RunSettings,
    state: RunState,
    directory: SiteDirectory,
    protocol: AggregationProtocol,
    registry: Registry,
) -> RoundOutcome:
    """Run round `number` to its end and record it, with its stages' timings in the run's
    summary (`stage_timing`); never raises for a site's misbehaviour."""
    state_dir = settings.coordinator_state
    folder = run_folder(state_dir, state.run_id) if state_dir else None
    with recording(number, folder) as timings:
        outcome = _run_round(grid, number, settings, state, directory, protocol, registry)
    log.info(
        "round %d stages (wait / sites' work / Flower, s): %s",
        number,
        ", ".join(
            f"{t.stage} {t.wait_s:.1f}/{t.work_s:.1f}/{t.flower_s:.1f}" for t in timings.stages
        ),
    )
    return outcome


def _run_round(
    grid: Grid,
    number: int,
    settings: RunSettings,
    state: RunState,
    directory: SiteDirectory,
    protocol: AggregationProtocol,
    registry: Registry,
) -> RoundOutcome:
    directory.refresh()
    # a site that restarted hands back the statements it signed, whose replies may have been lost
    record_recovered(registry, directory.take_recovered(), state.lineage)
    connected = directory.connected()
    exhausted = set(registry.exhausted_sites(state.run_id))
    eligible = [site for site in connected if site not in exhausted]
    # a round keyed in an earlier round's key batch has that batch's sampled set
    fixed = protocol.round_sample(number)
    if fixed is None:
        sampled = _sample(eligible, settings.sites_per_round, state.run_id, number)
    else:  # one whose budget is spent is left out of the record; it is a dropout to the masks
        sampled = sorted(s for s in fixed if s not in exhausted)
        lost = sorted(set(sampled) - set(connected))
        if lost:
            log.info("round %d: not connected, dropped from its key batch: %s", number, lost)
    round_id = registry.start_round(state.run_id, number, sampled)
    log.info("round %d: sampled %s", number, ", ".join(sampled) or "nobody")
    if exhausted:
        log.info(
            "round %d: not sampled, privacy budget spent: %s", number, ", ".join(sorted(exhausted))
        )

    if len(sampled) < settings.min_participants:
        error = (
            f"only {len(sampled)} sites connected with privacy budget left, "
            f"{settings.min_participants} required"
        )
        registry.finish_round(round_id, status=RoundStatus.ABORTED, error=error)
        return RoundOutcome(number, RoundStatus.ABORTED, [], [], None, error)

    request = RoundRequest(
        run_id=state.run_id,
        round_number=number,
        sites=sampled,
        nodes={s: connected[s].node_id for s in sampled if s in connected},
        plan=settings.plan,
        timeout_s=settings.round_timeout_s,
        expected_digest=state.expected_digest,
        catchup={s: state.catchup_for(s) for s in sampled},
        catchup_fields={s: state.catchup_fields_for(s) for s in sampled},
    )
    try:
        result = protocol.aggregate(grid, request, settings.min_participants)
    except Exception as exc:  # a protocol bug must not take the run down unrecorded
        log.exception("round %d: aggregation failed", number)
        registry.finish_round(
            round_id, status=RoundStatus.ABORTED, error=f"aggregation failed: {exc}"
        )
        return RoundOutcome(number, RoundStatus.ABORTED, [], sampled, None, str(exc))

    _record_contributions(registry, number, round_id, result)
    _record_privacy(registry, state.run_id, number, round_id, result)
    if result.payload is None:
        registry.finish_round(round_id, status=RoundStatus.ABORTED, error=result.error)
        dropped = sorted(set(sampled) - set(result.contributors))
        log.warning("round %d aborted: %s", number, result.error)
        return RoundOutcome(
            number, RoundStatus.ABORTED, result.contributors, dropped, None, result.error
        )

    extra = protocol.apply_fields(number, result.contributors, sampled)
    applied = _apply(grid, number, result, request, settings, state, extra)
    digests = Counter(str(r.result.get(Key.ADAPTER_DIGEST)) for r in applied.replies.values())
    agreed = digests.most_common(1)[0][0] if digests else None
    for site, reply in applied.replies.items():
        digest = str(reply.result.get(Key.ADAPTER_DIGEST))
        error = None if digest == agreed else f"digest {digest[:12]} disagrees with {agreed}"
        if error:
            log.error("round %d: site %s %s", number, site, error)
        else:
            state.applied[site] = number
        registry.record_contribution(
            round_id,
            site,
            eval_loss=reply.metrics.get(Key.EVAL_LOSS),
            eval_accuracy=reply.metrics.get(Key.EVAL_ACCURACY),
            eval_auc=reply.metrics.get(Key.EVAL_AUC),
            eval_examples=_int_or_none(reply.metrics.get(Key.EVAL_EXAMPLES)),
            adapter_digest=digest,
            error=error,
        )
    for site, reason in applied.failed.items():
        registry.record_contribution(round_id, site, error=f"apply failed: {reason}")
    for site in applied.missing:
        registry.record_contribution(round_id, site, error="apply: no reply")

    dropped = sorted(set(sampled) - set(result.contributors))
    if agreed is None:
        error = "no site confirmed applying the aggregate"
        registry.finish_round(
            round_id,
            status=RoundStatus.ABORTED,
            aggregate_digest=payload_digest(result.payload),
            error=error,
        )
        return RoundOutcome(number, RoundStatus.ABORTED, result.contributors, dropped, None, error)

    state.aggregates[number] = result.payload
    state.apply_fields[number] = json.dumps(extra)
    state.expected_digest = agreed
    state.last_round = number
    metrics = _round_metrics(applied)
    registry.finish_round(
        round_id,
        status=RoundStatus.COMPLETED,
        aggregate_digest=payload_digest(result.payload),
        global_digest=agreed,
        **metrics,
    )
    log.info(
        "round %d completed: %d contributed, %d dropped, metrics %s",
        number,
        len(result.contributors),
        len(dropped),
        {k: round(v, 4) for k, v in metrics.items() if v is not None},
    )
    return RoundOutcome(number, RoundStatus.COMPLETED, result.contributors, dropped, agreed)


def _record_contributions(
    registry: Registry, number: int, round_id: int, result: AggregationResult
) -> None:
    clipped = {
        site: c.clipped_coordinates
        for site, c in result.contributions.items()
        if c.clipped_coordinates  # the aggregate holds these at the bound, not as trained
    }
    if clipped:
        log.warning(
            "round %d: update coordinates clipped to the plan's bound (the run's clip is too "
            "tight for its training): %s",
            number,
            ", ".join(f"{site} {count}" for site, count in sorted(clipped.items())),
        )
    for site, contribution in result.contributions.items():
        registry.record_contribution(
            round_id,
            site,
            status=str(contribution.status),
            num_examples=contribution.num_examples,
            train_loss=contribution.train_loss,
            train_seconds=contribution.train_seconds,
            clipped_coordinates=contribution.clipped_coordinates,
            update_digest=contribution.update_digest,
            error=contribution.error,
        )


def _record_privacy(
    registry: Registry, run_id: int, number: int, round_id: int, result: AggregationResult
) -> None:
    """Each site's privacy-ledger entry for the round, whatever became of its update.

    A site that trained has spent its budget even if its update was refused or the round
    aborted, so its entry is recorded in every case; a declined round is an entry too.
    """
    for site, contribution in sorted(result.contributions.items()):
        if contribution.privacy is None:
            continue
        try:
            registry.record_privacy(
                run_id=run_id, round_number=number, site=site, **contribution.privacy
            )
        except RegistryUnavailable:
            raise
        except (RegistryError, TypeError, ValueError) as exc:  # refused: bad signature, conflict
            log.error("round %d: site %s's privacy entry refused: %s", number, site, exc)
            registry.record_contribution(
                round_id,
                site,
                status=ContributionStatus.FAILED,
                error=f"privacy entry refused: {exc}"[:500],
            )


def _apply(
    grid: Grid,
    number: int,
    result: AggregationResult,
    request: RoundRequest,
    settings: RunSettings,
    state: RunState,
    extra: dict,
) -> StageResult:
    """Send the aggregate to the contributors; the first (by name) also scores the global test."""
    assert result.payload is not None
    contributors = result.contributors
    configs = {
        site: {
            Key.RUN_ID: state.run_id,
            Key.ROUND: number,
            Key.MODE: settings.mode,
            Key.AGGREGATE: result.payload,
            Key.EVALUATE_GLOBAL: site == contributors[0],
            **settings.plan.to_config(),
            **extra,
        }
        for site in contributors
    }
    return stream_stage(
        grid, MessageType.APPLY, configs, request.nodes, settings.round_timeout_s
    ).collect()


def _round_metrics(applied: StageResult) -> dict[str, float | None]:
    """Sites' held-out scores weighted by their test sizes, and the global test score."""
    weights = {s: r.metrics.get(Key.EVAL_EXAMPLES, 0.0) for s, r in applied.replies.items()}
    total = sum(weights.values())

    def weighted(key: str) -> float | None:
        pairs = [
            (r.metrics[key], weights[s]) for s, r in applied.replies.items() if key in r.metrics
        ]
        mass = sum(w for _, w in pairs)
        return sum(v * w for v, w in pairs) / mass if pairs and mass > 0 else None

    global_accuracy = global_auc = None
    for reply in applied.replies.values():
        if Key.GLOBAL_ACCURACY in reply.metrics:
            global_accuracy = reply.metrics[Key.GLOBAL_ACCURACY]
            global_auc = reply.metrics.get(Key.GLOBAL_AUC)
    return {
        "loss": weighted(Key.EVAL_LOSS) if total else None,
        "accuracy": weighted(Key.EVAL_ACCURACY) if total else None,
        "auc": weighted(Key.EVAL_AUC) if total else None,
        "global_accuracy": global_accuracy,
        "global_auc": global_auc,
    }


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)
