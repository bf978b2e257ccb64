"""`fl-demo`: a whole fedseal federation as local processes on 127.0.0.1.

It starts a SuperLink and one `fl-client` per site, submits the run, prints a live per-round table
from the registry, and at the end compares the federated model with each site's model trained
alone. Every process it started is stopped on exit, Ctrl-C or SIGTERM; the exit code is non-zero
when the run fails.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from fedseal.cli_support import ExitCode, UserError, run_cli

__all__ = ["main"]

PROG = "fl-demo"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Run a fedseal federation on this machine: a Flower SuperLink, one fl-client per "
            "site, and the coordinator's run, with every round recorded in the registry."
        ),
        epilog="Exit codes: 0 run completed, 1 run failed, 2 bad argument, 130 interrupted.",
    )
    parser.add_argument(
        "--scenario",
        default="hospitals",
        help="demo federation: hospitals (ICD-10-CM coding, default), heart (UCI heart disease, "
        "4 real hospitals) or banks (Lending Club credit risk by region)",
    )
    parser.add_argument(
        "--mode",
        default="he+ss",
        choices=("he+ss", "he", "plain"),
        help="aggregation: he+ss (default; BFV-encrypted, SecAgg-masked: the coordinator sees "
        "no update and no aggregate), he (BFV only) or plain (FedAvg in the clear, for comparison)",
    )
    parser.add_argument(
        "--clip",
        type=float,
        default=0.5,
        help="largest change per adapter coordinate per round that the secure modes encode "
        "exactly; larger ones are clipped and counted (default 0.5)",
    )
    parser.add_argument("--sites", type=int, default=3, help="number of sites (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds (default 3)")
    parser.add_argument(
        "--steps", type=int, default=30, help="local training steps per site per round (default 30)"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=0.005, help="local learning rate (default 0.005)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="local batch size (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="data split and model seed (default 0)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("fedseal-demo"),
        help="folder for site configs and state, logs and the registry (default ./fedseal-demo)",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="registry database URL (default: $FEDSEAL_DATABASE_URL, else WORKDIR/registry.db)",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="SuperLink port on 127.0.0.1 (default: a free port)"
    )
    parser.add_argument(
        "--round-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for sites' replies in each stage before treating them as dropped "
        "(default 600)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="give up on the whole run after this many seconds (default 3600)",
    )
    parser.add_argument(
        "--eval-limit",
        type=int,
        default=0,
        metavar="N",
        help="evaluate on at most N records of each test set (default 0: all); for quick runs",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip training each site alone for comparison at the end",
    )
    return parser


def _validate(args: argparse.Namespace) -> list[str]:
    from fedseal.models.data import SCENARIOS, scenario_site_names

    if args.scenario not in SCENARIOS:
        raise UserError(
            f"unknown scenario {args.scenario!r} (choose from {', '.join(sorted(SCENARIOS))})"
        )
    for name, low, high in (
        ("--rounds", 1, 10_000),
        ("--steps", 1, 100_000),
        ("--batch-size", 1, 4096),
        ("--sites", 1, 64),
    ):
        value = getattr(args, name[2:].replace("-", "_"))
        if not low <= value <= high:
            raise UserError(f"{name} must be between {low} and {high}")
    if not 0 < args.learning_rate < 1:
        raise UserError("--learning-rate must be between 0 and 1")
    if not 0 <= args.port < 65536:
        raise UserError("--port must be between 0 and 65535")
    if not 0 < args.clip < 1e6:
        raise UserError("--clip must be positive")
    if args.eval_limit < 0:
        raise UserError("--eval-limit must be 0 (all) or positive")
    if args.round_timeout <= 0 or args.timeout <= 0:
        raise UserError("--round-timeout and --timeout must be positive")
    try:
        return list(scenario_site_names(args.scenario, args.sites))
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    sites = _validate(args)

    from fedseal.coordinator.flower_app import SubmitError
    from fedseal.coordinator.registry import RegistryUnavailable, open_registry
    from fedseal.coordinator.registry.database import resolve_database_url
    from fedseal.coordinator.run_settings import RunSettings, default_run_config
    from fedseal.demo.federation import FederationError, LocalFederation
    from fedseal.demo.progress import ProgressTable
    from fedseal.models.data import get_scenario, load_site_data

    workdir = args.workdir.expanduser().resolve()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create workdir {workdir}: {exc}") from None
    url = resolve_database_url(args.database, workdir / "registry.db")
    try:
        registry = open_registry(url)
    except RegistryUnavailable as exc:
        raise UserError(str(exc)) from None

    _say(f"preparing the {args.scenario} federation ({args.mode}): {', '.join(sites)}")
    federation = LocalFederation(
        workdir=workdir,
        scenario=args.scenario,
        sites=sites,
        registry=registry,
        seed=args.seed,
        port=args.port,
        batch_size=args.batch_size,
        max_eval_examples=args.eval_limit,
    )
    _split, _global_test, labels = load_site_data(
        args.scenario,
        sites[0],
        len(sites),
        args.seed,
        cache_dir=federation.state_root / sites[0] / "cache",
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
    )
    plan = RunSettings.from_run_config(run_config).plan

    federation.enroll_sites()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        federation.start_superlink()
        _say(f"SuperLink listening on {federation.address} (logs in {workdir / 'logs'})")
        for site in sites:
            federation.start_site(site)
        _say(f"started {len(sites)} sites; submitting the run")
        flower_run_id = federation.submit(run_config)
        _say(f"run submitted (Flower run {flower_run_id}); rounds appear below as they finish")
        table = ProgressTable()
        run = federation.wait(args.timeout, on_rounds=table.update, on_note=_say)
    except (FederationError, SubmitError) as exc:
        raise UserError(str(exc), ExitCode.FAILURE) from None
    finally:
        federation.stop()
        signal.signal(signal.SIGTERM, previous)

    rounds = registry.rounds(run.id)
    completed = [r for r in rounds if str(r.status) == "completed"]
    _say(
        f"run {run.id} {run.status}: {len(completed)} of {run.rounds_planned} rounds completed"
        + (f" ({run.error})" if run.error else "")
    )
    summary = {
        "run_id": run.id,
        "flower_run_id": flower_run_id,
        "status": str(run.status),
        "scenario": args.scenario,
        "sites": sites,
        "rounds": [
            {
                "round": r.number,
                "status": str(r.status),
                "participants": r.participants,
                "dropped": r.dropped,
                "global_accuracy": r.global_accuracy,
                "global_auc": r.global_auc,
                "global_digest": r.global_digest,
                "seconds": r.duration_s,
            }
            for r in rounds
        ],
    }
    if completed and not args.no_baseline:
        summary["comparison"] = _compare_with_solo(args, sites, plan, completed[-1], workdir)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    _say(f"summary written to {workdir / 'summary.json'}")
    return ExitCode.OK if str(run.status) == "completed" else ExitCode.FAILURE


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _compare_with_solo(args, sites, plan, last_round, workdir: Path) -> dict:
    """Train each site alone for the same number of steps and print the comparison."""
    import os

    from fedseal.demo.baseline import train_solo

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(2)
    steps = plan.steps * args.rounds
    from fedseal.models.data import get_scenario

    metric = get_scenario(args.scenario).primary_metric
    federated = last_round.global_auc if metric == "auc" else last_round.global_accuracy
    _say(f"training each site alone for {steps} steps for comparison ...")
    solo = {}
    for site in sites:
        score = train_solo(
            site=site,
            scenario=args.scenario,
            num_sites=len(sites),
            data_seed=args.seed,
            plan=plan,
            steps=steps,
            batch_size=args.batch_size,
            cache_dir=workdir / "state" / site / "cache",
        )
        solo[site] = {"accuracy": score.accuracy, "auc": score.auc, "seconds": score.seconds}
    print(f"\nscore on the global test set ({metric}):", flush=True)
    print(f"  {'federated (all sites)':<24} {federated:.4f}", flush=True)
    for site, score in solo.items():
        value = score[metric]
        print(f"  {site + ' alone':<24} {value:.4f}" if value is not None else site, flush=True)
    best_solo = max((s[metric] or 0.0) for s in solo.values())
    verdict = "beats" if federated is not None and federated > best_solo else "does NOT beat"
    print(f"  the federated model {verdict} every site trained alone\n", flush=True)
    return {"metric": metric, "federated": federated, "solo": solo, "steps_alone": steps}


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
