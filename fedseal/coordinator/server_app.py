"""The coordinator's Flower ServerApp: one run, round after round, recorded in the registry.

The registry, not Flower's run status, is the truth about the run: it is marked `running` before
the first message goes out and `completed` or `failed` at the end, with every round in between.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedseal.contract.object_pulls import COORDINATOR_PULLS, install_quick_object_pulls
from fedseal.contract.wire import Key
from fedseal.coordinator.protocols import RunContext, protocol_for_mode
from fedseal.coordinator.resume import Resumption, plan_resume, record_recovered
from fedseal.coordinator.round_loop import RunState, run_round
from fedseal.coordinator.run_settings import RunSettings
from fedseal.coordinator.site_directory import SiteDirectory
from fedseal.registry import Registry
from fedseal.registry.ledger_key import load_ledger_key
from fedseal.registry.retry import (
    RetryingRegistry,
    RetryPolicy,
    open_registry_retrying,
)
from fedseal.registry.statuses import RoundStatus, RunStatus

__all__ = ["app", "drive_run"]

log = logging.getLogger("fedseal.coordinator")

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # httpx logs every runtime-API request at INFO, Flower's own log uploads included (five a
    # second): the coordinator's lines would drown in them
    logging.getLogger("httpx").setLevel(logging.WARNING)
    install_quick_object_pulls(COORDINATOR_PULLS)  # a reply pulled early is not a second late
    settings = RunSettings.from_run_config(context.run_config)
    ledger_key = load_ledger_key(Path(settings.coordinator_state))
    policy = RetryPolicy(settings.registry_retry_s)
    registry = open_registry_retrying(settings.database_url, policy, ledger_key=ledger_key)
    drive_run(grid, settings, RetryingRegistry(registry, policy))  # type: ignore[arg-type]


def drive_run(grid: Grid, settings: RunSettings, registry: Registry) -> int:
    """Run every planned round (from where an interrupted run stopped, when `resume-run` names
    one); returns the registry's run id."""
    flower_run_id = int(grid.run.run_id)
    resumed = plan_resume(registry, settings.resume_run, settings) if settings.resume_run else None
    config = settings.public_summary()
    if resumed is not None:
        config.update(resumes_run=resumed.previous_run, first_round=resumed.first_round)
    run_id = registry.start_run(
        scenario=settings.scenario,
        protocol_mode=settings.mode,
        config=config,
        rounds_planned=settings.rounds,
        flower_run_id=str(flower_run_id),
    )
    log.info("run %d (Flower run %d) started in mode %s", run_id, flower_run_id, settings.mode)
    lineage = {str(flower_run_id): run_id}
    if resumed is not None:
        _close_interrupted(registry, resumed, run_id, flower_run_id)
        lineage.update(resumed.flower_runs)
    first_round = 1 if resumed is None else resumed.first_round
    try:
        protocol = protocol_for_mode(settings.mode)
        directory = SiteDirectory(
            grid,
            identify_timeout_s=settings.round_timeout_s,
            identify_fields={**settings.plan.to_config(), Key.RECOVER_RUNS: list(lineage)},
        )
        connected = directory.wait_for(settings.min_sites, settings.wait_for_sites_s)
        for site in directory.sites:
            registry.ensure_site(site)
        record_recovered(registry, directory.take_recovered(), lineage)
        if len(connected) < settings.min_sites:
            raise RuntimeError(
                f"only {len(connected)} of {settings.min_sites} sites connected within "
                f"{settings.wait_for_sites_s:g} s"
            )
        protocol.prepare_run(
            grid,
            RunContext(
                run_id=flower_run_id,
                sites=connected,
                enrolled_keys=registry.site_public_keys(),
                clip=settings.clip,
                timeout_s=settings.round_timeout_s,
                max_upload_bytes=settings.max_upload_bytes,
                max_reply_bytes=settings.max_reply_bytes,
                sparse_above=settings.sparse_above,
                neighbours=settings.neighbours,
                max_colluding=settings.max_colluding,
                key_rounds=settings.key_rounds,
            ),
        )
        state = RunState(run_id=run_id, flower_run_id=flower_run_id, lineage=lineage)
        if resumed is not None:
            state.expected_digest = resumed.expected_digest
            state.last_round = first_round - 1
        completed = 0
        for number in range(first_round, settings.rounds + 1):
            outcome = run_round(grid, number, settings, state, directory, protocol, registry)
            completed += outcome.status is RoundStatus.COMPLETED
            for site in directory.sites:
                registry.ensure_site(site)
            if directory.sites and set(directory.sites) <= set(registry.exhausted_sites(run_id)):
                log.warning("run %d: every site has spent its privacy budget; stopping", run_id)
                break
    except Exception as exc:
        log.exception("run %d failed", run_id)
        registry.finish_run(run_id, status=RunStatus.FAILED, error=str(exc)[:1000])
        raise
    if completed == 0:
        registry.finish_run(run_id, status=RunStatus.FAILED, error="no round completed")
    else:
        registry.finish_run(run_id, status=RunStatus.COMPLETED)
    log.info("run %d finished: %d of %d rounds completed", run_id, completed, settings.rounds)
    return run_id


def _close_interrupted(
    registry: Registry, resumed: Resumption, run_id: int, flower_run_id: int
) -> None:
    """The interrupted run's open round and the run itself end as aborted, naming the
    continuation (the run's `run_finished` event carries it into the ledger chain)."""
    for round_id in resumed.open_rounds:
        registry.finish_round(
            round_id,
            status=RoundStatus.ABORTED,
            error=f"the coordinator stopped during the round; the run continues as run {run_id}",
        )
    registry.finish_run(
        resumed.previous_run,
        status=RunStatus.ABORTED,
        error=(
            f"the coordinator stopped; continued as run {run_id} (Flower run {flower_run_id}) "
            f"from round {resumed.first_round}"
        ),
    )
    log.info(
        "run %d continues run %d from round %d", run_id, resumed.previous_run, resumed.first_round
    )
