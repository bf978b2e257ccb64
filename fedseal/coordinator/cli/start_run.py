"""`fl-coordinator start-run`: submit a run to the SuperLink and follow it in the registry; a run
whose SuperLink or ServerApp died is continued from its last completed round."""

from __future__ import annotations

import argparse

from fedseal.cli_args import Command, add_key_rounds, add_max_colluding
from fedseal.cli_support import ExitCode, UserError
from fedseal.contract.limits import DEFAULT_KEY_ROUNDS
from fedseal.contract.regime import regime_for
from fedseal.contract.run_plan import AdapterKind
from fedseal.coordinator.cli import options

__all__ = ["COMMAND"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario", default="hospitals", help="the demo scenario whose labels the run uses"
    )
    parser.add_argument(
        "--mode",
        choices=("he+ss", "he", "plain"),
        default="he+ss",
        help="aggregation protocol (default he+ss; never silently weakened)",
    )
    add_max_colluding(parser)
    add_key_rounds(parser, DEFAULT_KEY_ROUNDS)
    parser.add_argument(
        "--adapter",
        choices=tuple(a.value for a in AdapterKind),
        default=AdapterKind.HEAD.value,
        help="what trains and travels: head (a linear head over the frozen base model's cached "
        "embeddings; default, the measured DP regime on CPU sites) or lora (LoRA and the head "
        "through the whole model, for GPU sites)",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="federated rounds (default: the regime's, 5)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="local training steps per round (default: the regime's for the adapter and scenario: "
        "head 10 on hospitals and 60 on the other scenarios, lora 20)",
    )
    parser.add_argument(
        "--min-sites",
        type=int,
        metavar="N",
        help="sites that must be connected before round 1 (default: every enrolled site)",
    )
    parser.add_argument("--seed", type=int, default=0, help="model and sampling seed (default 0)")
    parser.add_argument(
        "--round-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long each stage waits for sites before counting them dropped (default 600)",
    )
    parser.add_argument("--wait", action="store_true", help="follow the run until it finishes")
    parser.add_argument(
        "--timeout",
        type=float,
        default=6 * 3600.0,
        metavar="SECONDS",
        help="with --wait, give up after this long (default 21600)",
    )
    parser.add_argument(
        "--new", action="store_true", help="submit even if the recorded run is unfinished"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the registry's run that is still running (its coordinator stopped) from "
        "its last completed round; give the same options as the first time",
    )
    parser.add_argument(
        "--max-resumes",
        type=int,
        default=3,
        metavar="N",
        help="with --wait: if the SuperLink or ServerApp dies mid-run, continue the run from "
        "its last completed round up to N times (default 3; 0: just fail)",
    )
    options.add_common_options(parser, flower="submit the run")


def _run(args: argparse.Namespace) -> int:
    from fedseal.coordinator.flower_app import CONNECTION_NAME, SubmitError, flower_run_status
    from fedseal.coordinator.run_launch import (
        LaunchError,
        LaunchTimeout,
        follow_run,
        launch_run,
        running_run,
        submit_recorded,
    )
    from fedseal.coordinator.run_settings import default_run_config
    from fedseal.coordinator.stage_timing import run_folder
    from fedseal.models.data import get_scenario, load_federated_dataset, scenario_site_names
    from fedseal.registry import RegistryError

    regime = regime_for(AdapterKind(args.adapter), args.scenario)
    args.rounds = regime.rounds if args.rounds is None else args.rounds
    args.steps = regime.steps if args.steps is None else args.steps
    for name, value in (("--rounds", args.rounds), ("--steps", args.steps)):
        if value < 1:
            raise UserError(f"{name} must be at least 1")
    if args.connection != CONNECTION_NAME:
        raise UserError(f"start-run submits on the connection {CONNECTION_NAME!r} only")
    home = options.checked_flwr_home(args)
    try:
        scenario = get_scenario(args.scenario)
    except (KeyError, ValueError) as exc:
        raise UserError(str(exc)) from None
    state = options.state_dir(args)
    url = options.database_url(args)
    with options.open_registry(args, writing=True) as registry:
        try:
            enrolled = len(registry.site_public_keys())
        except RegistryError as exc:
            raise UserError(f"registry: {exc}") from None
        min_sites = args.min_sites if args.min_sites is not None else enrolled
        if min_sites < 1:
            raise UserError("no site is enrolled: enrol sites first (`fl-coordinator enroll`)")
        # The class labels come from the scenario (its label set, not any site's records).
        try:
            scenario_site_names(args.scenario, min_sites)  # checks the number of sites
            labels = load_federated_dataset(args.scenario, min_sites, args.seed).labels
        except ValueError as exc:
            raise UserError(str(exc)) from None
        resume_run = 0
        if args.resume:
            interrupted = running_run(registry)
            if interrupted is None:
                raise UserError("--resume: no run in the registry is still running")
            resume_run = int(interrupted.id)
            options.say(
                f"resuming run {resume_run}: {interrupted.rounds_completed} of "
                f"{interrupted.rounds_planned} rounds completed; the round in flight is "
                "recorded as aborted"
            )
        run_config = default_run_config(
            database_url=url,
            scenario=args.scenario,
            labels=list(labels),
            rounds=args.rounds,
            min_sites=min_sites,
            steps=args.steps,
            learning_rate=regime.learning_rate,
            clip=regime.clip,
            adapter=str(regime.adapter),
            seed=args.seed,
            round_timeout=args.round_timeout,
            max_length=scenario.max_length,
            mode=args.mode,
            coordinator_state=str(state.resolve()),
            resume_run=resume_run,
        )
        run_config["max-colluding"] = args.max_colluding
        run_config["key-rounds"] = args.key_rounds
        try:
            launch = launch_run(registry, state, run_config, home, new=args.new or args.resume)
        except LaunchError as exc:
            raise UserError(str(exc), ExitCode.CHILD_FAILED) from None
        verb = "following the unfinished" if launch.resumed else "submitted"
        options.say(f"{verb} Flower run {launch.flower_run_id} ({args.mode}, {args.rounds} rounds)")
        if not args.wait:
            return ExitCode.OK

        def resubmit(run_id: int) -> int:
            return submit_recorded(state, {**run_config, "resume-run": run_id}, home)

        try:
            run = follow_run(
                registry,
                launch.flower_run_id,
                timeout_s=args.timeout,
                report=options.say,
                flower_status=lambda flower_run_id: flower_run_status(flower_run_id, home),
                resubmit=resubmit if args.max_resumes > 0 else None,
                max_resumes=args.max_resumes,
                summary_folder=lambda run_id: run_folder(state, run_id),
            )
        except SubmitError as exc:
            raise UserError(str(exc), ExitCode.CHILD_FAILED) from None
        except LaunchError as exc:
            code = ExitCode.UNREACHABLE if isinstance(exc, LaunchTimeout) else ExitCode.FAILURE
            raise UserError(str(exc), code) from None
    from fedseal.registry.statuses import RunStatus

    options.say(f"run {run.id} {run.status}" + (f": {run.error}" if run.error else ""))
    return ExitCode.OK if run.status == RunStatus.COMPLETED else ExitCode.FAILURE


COMMAND = Command(
    name="start-run",
    help="submit a run to the SuperLink and follow it until it finishes",
    description="Submit a run of fedseal's ServerApp to the SuperLink (`flwr run` on the "
    "connection in FLWR_HOME/config.toml) and, with --wait, follow its rounds in the "
    "registry until it finishes. The Flower run id is kept in STATE/current-run.json: "
    "started again while that run is unfinished, it follows it instead of submitting "
    "another (--new submits anyway); one whose coordinator died is continued from its last "
    "completed round (--resume, or by itself with --wait). The run config carries the "
    "registry URL: keep "
    "passwords out of it (PostgreSQL: PGPASSWORD in the SuperLink's environment).",
    add_arguments=_add_arguments,
    run=_run,
    epilog="Exit codes: 0 submitted (with --wait: the run completed), 1 the run failed or "
    "was aborted, 2 usage error, 3 --wait gave up after --timeout, 4 `flwr run` failed, "
    "130 interrupted.",
)
