"""Composing and running fl-demo's federation: the registry, each site's DP plan, the processes.

Given the checked arguments (``cli.py``), it opens the workdir's registry with the coordinator's
ledger key, plans every site's DP spend, starts a SuperLink and one `fl-client` per site,
submits the run and follows it round by round; ``summary.py`` then reports how it ended. Every
process it started is stopped on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from fedseal.cli_support import ExitCode, UserError
from fedseal.contract.regime import REGIMES, site_batch_sizes

from .progress import say

if TYPE_CHECKING:
    from fedseal.demo.dp_budget import DemoDpOptions, SiteDpPlan
    from fedseal.demo.federation import LocalFederation
    from fedseal.registry import Registry

__all__ = ["plan_dp", "run_demo", "run_to_resume"]


def run_demo(args: argparse.Namespace, sites: list[str], dp_options: DemoDpOptions | None) -> int:
    """Run the federation the arguments describe; the exit code says whether the run completed."""
    from fedseal.coordinator.flower_app import SubmitError
    from fedseal.coordinator.run_settings import RunSettings, default_run_config
    from fedseal.coordinator.stage_timing import (
        ProgressWatch,
        format_stages,
        read_stage_summary,
        run_folder,
    )
    from fedseal.demo.federation import FederationError, LocalFederation
    from fedseal.demo.progress import ProgressTable
    from fedseal.demo.summary import compare_with_solo, run_summary, write_summary
    from fedseal.models.data import get_scenario, load_federated_dataset
    from fedseal.registry import RegistryUnavailable, open_registry
    from fedseal.registry.database import resolve_database_url
    from fedseal.registry.ledger_key import LedgerKeyError, create_ledger_key

    workdir = args.workdir.expanduser().resolve()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create workdir {workdir}: {exc}") from None
    url = resolve_database_url(args.database, workdir / "registry.db")
    coordinator_state = workdir / "coordinator"
    try:
        ledger_key, _made = create_ledger_key(coordinator_state)
    except (LedgerKeyError, OSError) as exc:
        raise UserError(f"coordinator ledger key: {exc}") from None
    try:
        registry = open_registry(url, ledger_key=ledger_key)
    except RegistryUnavailable as exc:
        raise UserError(str(exc)) from None
    resume_run = run_to_resume(registry) if args.resume else 0

    say(f"preparing the {args.scenario} federation ({args.mode}): {', '.join(sites)}")
    say(
        f"adapter: {args.adapter} ({REGIMES[args.adapter].description}); {args.rounds} rounds "
        f"x {args.steps} steps, learning rate {args.learning_rate:g}"
    )
    state_root = workdir / "state"
    # The demo builds every site's data to plan the run and score the result; each site loads
    # and caches only its own split (in its state directory) when it starts.
    dataset = load_federated_dataset(args.scenario, len(sites), args.seed)
    labels = dataset.labels
    num_records = {site: len(dataset.sites[site].train) for site in sites}
    batch_sizes = site_batch_sizes(
        args.batch_size, {site: len(dataset.sites[site].validation) for site in sites}
    )
    dp_plans = plan_dp(dp_options, sites, state_root, num_records, batch_sizes)
    federation = LocalFederation(
        workdir=workdir,
        scenario=args.scenario,
        sites=sites,
        registry=registry,
        seed=args.seed,
        port=args.port,
        batch_size=batch_sizes,
        max_eval_examples=args.eval_limit,
        dp=None if dp_plans is None else {site: plan.table() for site, plan in dp_plans.items()},
        tls=args.tls,
        mode=args.mode,
        max_colluding=args.max_colluding,
    )
    run_config = default_run_config(
        database_url=url,
        scenario=args.scenario,
        labels=list(labels),
        rounds=args.rounds,
        min_sites=len(sites),
        steps=args.steps,
        learning_rate=args.learning_rate,
        seed=args.seed,
        round_timeout=args.round_timeout,
        max_length=get_scenario(args.scenario).max_length,
        mode=args.mode,
        clip=args.clip,
        coordinator_state=str(coordinator_state),
        resume_run=resume_run,
        adapter=str(args.adapter),
    )
    run_config["max-colluding"] = args.max_colluding
    run_config["key-rounds"] = args.key_rounds
    plan = RunSettings.from_run_config(run_config).plan

    federation.enroll_sites()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        federation.start_superlink()
        security = "TLS, SuperNode authentication" if args.tls else "no TLS"
        logs = workdir / "logs"
        say(f"SuperLink listening on {federation.address} ({security}; logs in {logs})")
        if args.tls:
            federation.register_node_keys()
            say(f"registered {len(sites)} SuperNode keys with the SuperLink")
        for site in sites:
            federation.start_site(site)
        say(f"started {len(sites)} sites; submitting the run")
        flower_run_id = federation.submit(run_config)
        say(f"run submitted (Flower run {flower_run_id}); rounds appear below as they finish")
        table = ProgressTable()
        stages = ProgressWatch(lambda line: say(f"  {line}"))
        run = federation.wait(
            args.timeout,
            on_rounds=table.update,
            on_note=say,
            on_progress=lambda run_id: stages.check(run_folder(coordinator_state, run_id)),
        )
    except (FederationError, SubmitError) as exc:
        raise UserError(str(exc), ExitCode.FAILURE) from None
    finally:
        federation.stop()
        signal.signal(signal.SIGTERM, previous)

    rounds = registry.rounds(run.id)
    summary = run_summary(run, rounds, flower_run_id, args.scenario, sites, dp_options, dp_plans)
    timings = read_stage_summary(run_folder(coordinator_state, run.id))
    if timings:
        summary["stages"] = timings
        say(
            "where a round's time went, per stage (mean over rounds; sites = the slowest "
            "site's own work, Flower = delivery and the ClientApp process it starts):"
        )
        print(format_stages(timings), flush=True)
    completed = [r for r in rounds if str(r.status) == "completed"]
    if completed and not args.no_baseline:
        summary["comparison"] = compare_with_solo(
            plan,
            completed[-1],
            sites,
            args.rounds,
            workdir,
            dataset,
            batch_sizes,
            flower_run_id,
            dp_options,
            dp_plans,
        )
    if completed:
        summary["export"] = _export(federation, registry, run.id, flower_run_id, sites, workdir)
    write_summary(workdir, summary, url, coordinator_state / "keys" / "ledger-public-key.hex")
    return ExitCode.OK if str(run.status) == "completed" else ExitCode.FAILURE


def _export(
    federation: LocalFederation,
    registry: Registry,
    run_id: int,
    flower_run_id: int,
    sites: list[str],
    workdir: Path,
) -> str | None:
    """The run's global adapter as a PEFT folder with its model card, from the first site
    (every site holds the same adapter), the card's figures read from the registry's ledger."""
    from fedseal.client.export import ExportError, export_run
    from fedseal.client.ledger_facts import read_ledger
    from fedseal.client.site_config import load_site_config

    try:
        exported = export_run(
            load_site_config(federation.site_configs[sites[0]]),
            workdir / "export" / f"run-{run_id}",
            run_id=str(flower_run_id),
            ledger=read_ledger(registry, run_id),
        )
    except ExportError as exc:
        say(f"no export: {exc}")
        return None
    say(
        f"global adapter exported as a PEFT adapter to {exported.folder} "
        f"(model card {exported.card}; load it with PeftModel.from_pretrained)"
    )
    return str(exported.folder)


def run_to_resume(registry: Registry) -> int:
    """The newest run still `running` in the workdir's registry (its coordinator stopped)."""
    from fedseal.coordinator.run_launch import running_run

    run = running_run(registry)
    if run is None:
        raise UserError("--resume: no run in this workdir's registry is still running")
    say(
        f"resuming run {run.id}: {run.rounds_completed} of {run.rounds_planned} rounds "
        "completed; the round in flight is recorded as aborted"
    )
    return int(run.id)


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def plan_dp(
    options: DemoDpOptions | None,
    sites: list[str],
    state_root: Path,
    num_records: dict[str, int],
    batch_sizes: dict[str, int],
) -> dict[str, SiteDpPlan] | None:
    """Each site's DP plan for this run, printed one line per site; None (and a warning) for
    --no-dp. Every `[dp]` table is checked as the site will check it, so a setting the site
    would refuse fails here, before any process starts."""
    from fedseal.client.dp.errors import AccountantStoreError, DpConfigError
    from fedseal.client.dp.settings import parse_dp_section
    from fedseal.demo.dp_budget import plan_site_dp

    if options is None:
        say(
            "WARNING: --no-dp: the sites train WITHOUT differential privacy; the shared adapter "
            "can memorise training records and reveal them to whoever sees an update or the model"
        )
        _warn_dp_history(sites, state_root)
        return None
    plans: dict[str, SiteDpPlan] = {}
    for site in sites:
        n = num_records[site]
        if options.delta is not None and options.delta >= 1.0 / n:
            raise UserError(
                f"--delta {options.delta:g} must be below 1/n = {1.0 / n:.3g} for {site}'s "
                f"{n} training records"
            )
        try:
            plan = plan_site_dp(site, state_root / site, n, options)
            parse_dp_section(plan.table(), Path(site), num_records=n, batch_size=batch_sizes[site])
        except AccountantStoreError as exc:
            raise UserError(f"{site}: {exc} (use a fresh --workdir)") from None
        except DpConfigError as exc:
            raise UserError(f"these DP options can never train: {exc}") from None
        plans[site] = plan
        say(plan.describe())
        if plan.exhausted:
            say(
                f"{site}: its privacy budget (ε = {options.budget:g}) is already spent in this "
                "workdir, so it will decline every round; use a fresh --workdir for a new budget"
            )
    return plans


def _warn_dp_history(sites: list[str], state_root: Path) -> None:
    """--no-dp on sites that trained with DP before voids the guarantee of those runs too."""
    from fedseal.client.dp.accountant_store import AccountantStore
    from fedseal.client.dp.errors import AccountantStoreError

    for site in sites:
        try:
            charged = bool(AccountantStore.open(state_root / site).charges)
        except AccountantStoreError:
            charged = True
        if charged:
            say(
                f"WARNING: {site} trained with DP in this workdir before; training its data "
                "without DP now voids that guarantee as well"
            )
