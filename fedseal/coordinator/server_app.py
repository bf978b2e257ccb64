"""The coordinator's Flower ServerApp: one run, round after round, recorded in the registry.

The registry, not Flower's run status, is the truth about the run: it is marked `running` before
the first message goes out and `completed` or `failed` at the end, with every round in between.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedseal.coordinator.ledger_key import load_ledger_key
from fedseal.coordinator.protocols import RunContext, protocol_for_mode
from fedseal.coordinator.registry import Registry, open_registry
from fedseal.coordinator.round_loop import RunState, run_round
from fedseal.coordinator.run_settings import RunSettings
from fedseal.coordinator.site_directory import SiteDirectory

__all__ = ["app", "drive_run"]

log = logging.getLogger("fedseal.coordinator")

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = RunSettings.from_run_config(context.run_config)
    ledger_key = load_ledger_key(Path(settings.coordinator_state))
    registry = open_registry(settings.database_url, ledger_key=ledger_key)
    drive_run(grid, settings, registry)


def drive_run(grid: Grid, settings: RunSettings, registry: Registry) -> int:
    """Run every planned round; returns the registry's run id."""
    flower_run_id = int(grid.run.run_id)
    run_id = registry.start_run(
        scenario=settings.scenario,
        protocol_mode=settings.mode,
        config=settings.public_summary(),
        rounds_planned=settings.rounds,
        flower_run_id=str(flower_run_id),
    )
    log.info("run %d (Flower run %d) started in mode %s", run_id, flower_run_id, settings.mode)
    try:
        protocol = protocol_for_mode(settings.mode)
        directory = SiteDirectory(
            grid,
            identify_timeout_s=settings.round_timeout_s,
            identify_fields=settings.plan.to_config(),
        )
        connected = directory.wait_for(settings.min_sites, settings.wait_for_sites_s)
        for site in directory.sites:
            registry.ensure_site(site)
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
            ),
        )
        state = RunState(run_id=run_id, flower_run_id=flower_run_id)
        completed = 0
        for number in range(1, settings.rounds + 1):
            outcome = run_round(grid, number, settings, state, directory, protocol, registry)
            completed += outcome.status == "completed"
            for site in directory.sites:
                registry.ensure_site(site)
            if directory.sites and set(directory.sites) <= set(registry.exhausted_sites(run_id)):
                log.warning("run %d: every site has spent its privacy budget; stopping", run_id)
                break
    except Exception as exc:
        log.exception("run %d failed", run_id)
        registry.finish_run(run_id, status="failed", error=str(exc)[:1000])
        raise
    if completed == 0:
        registry.finish_run(run_id, status="failed", error="no round completed")
    else:
        registry.finish_run(run_id, status="completed")
    log.info("run %d finished: %d of %d rounds completed", run_id, completed, settings.rounds)
    return run_id
