"""`fl-demo`: a whole fedseal federation as local processes on 127.0.0.1.

It starts a SuperLink and one `fl-client` per site, submits the run, prints a live per-round table
from the registry, and at the end compares the federated model with each site's model trained
alone. Every process it started is stopped on exit, Ctrl-C or SIGTERM; the exit code is non-zero
when the run fails.

Every site trains with DP-SGD unless `--no-dp` is given: `--epsilon` is what each site may spend
in this run, `--dp-budget` what it may spend over all runs on the same workdir (its history is
kept in the site's state directory), see `fedseal.demo.dp_budget`.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedseal.cli_support import ExitCode, UserError, run_cli
from fedseal.client.dp.settings import DEFAULT_MAX_GRAD_NORM, MAX_NOISE_MULTIPLIER
from fedseal.contract.regime import REGIMES, Regime, site_batch_sizes
from fedseal.contract.run_plan import AdapterKind
from fedseal.privacy.accountant_kind import Accountant

HEAD, LORA = AdapterKind.HEAD, AdapterKind.LORA

if TYPE_CHECKING:
    from fedseal.contract.run_plan import RunPlan
    from fedseal.demo.dp_budget import DemoDpOptions, SiteDpPlan
    from fedseal.models.data.types import FederatedDataset
    from fedseal.registry import Registry, RoundView

__all__ = ["main"]

PROG = "fl-demo"

DEFAULT_EPSILON = 1.0
"""ε each site may spend in one fl-demo run."""
DEFAULT_DP_BUDGET = 10.0
"""Each site's budget over every run on the same workdir."""


def choose_adapter(setting: str) -> AdapterKind:
    """`auto`: LoRA through the whole model where a GPU can afford it, else the head adapter."""
    if setting != "auto":
        return AdapterKind(setting)
    import torch

    return AdapterKind.LORA if torch.cuda.is_available() else AdapterKind.HEAD


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
        "--adapter",
        default="auto",
        choices=("auto", "head", "lora"),
        help="what trains and travels: head (a linear head over the frozen base model's cached "
        "embeddings; the CPU default), lora (LoRA and the head through the whole model; the GPU "
        "default) or auto (lora when this machine has CUDA, else head)",
    )
    parser.add_argument(
        "--clip",
        type=float,
        default=None,
        help="largest change per adapter coordinate per round that the secure modes encode "
        f"exactly; larger ones are clipped and counted (default {REGIMES[HEAD].clip:g} for the "
        f"head adapter, {REGIMES[LORA].clip:g} for lora)",
    )
    parser.add_argument(
        "--max-colluding",
        type=int,
        default=-1,
        metavar="C",
        help="member sites that may collude with the coordinator while each other site's "
        "update stays hidden in he+ss: the Shamir threshold is k > (n + C) / 2 (default: a "
        "minority, (n - 1) // 2; with 3 sites that is 1, so k = 3 and no site may drop out of "
        "a round; 0 lets one of 3 drop out but trusts that no site colludes)",
    )
    parser.add_argument(
        "--sites",
        type=int,
        default=None,
        help="number of sites (default: the scenario's own: 3 hospitals, 4 heart, 4 banks)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"federated rounds (default {REGIMES[HEAD].rounds})",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"local training steps per site per round (default {REGIMES[HEAD].steps} for the "
        f"head adapter, {REGIMES[LORA].steps} for lora)",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help=f"local learning rate (default {REGIMES[HEAD].learning_rate:g} for the head "
        f"adapter, {REGIMES[LORA].learning_rate:g} for lora)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"largest expected batch per site (default {REGIMES[HEAD].batch_size} for the head "
        f"adapter, {REGIMES[LORA].batch_size} for lora), capped at each site's validation records",
    )
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
        "--tls",
        action="store_true",
        help="as in the compose stack: a CA and server certificate in WORKDIR/pki, the SuperLink "
        "on TLS with SuperNode authentication and a state database, each site's SuperNode key "
        "registered before it joins (docs/operations.md)",
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
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the workdir's run that is still running (its coordinator was stopped) "
        "from its last completed round; give the same options as the first time",
    )
    dp = parser.add_argument_group(
        "differential privacy",
        "Every site trains with DP-SGD (Opacus) by default. A site's spend is kept in its state "
        "directory under WORKDIR, so later runs on the same workdir continue from it.",
    )
    dp.add_argument(
        "--epsilon",
        type=float,
        metavar="E",
        help=f"ε each site may spend in this run (default {DEFAULT_EPSILON:g}); each site "
        "calibrates its noise so the run's planned rounds spend at most this",
    )
    dp.add_argument(
        "--dp-budget",
        type=float,
        metavar="B",
        help="each site's lifetime budget: ε over all runs on its data (default "
        f"{DEFAULT_DP_BUDGET:g}, at least --epsilon); a site whose budget is spent declines "
        "every round",
    )
    dp.add_argument(
        "--noise-multiplier",
        type=float,
        metavar="SIGMA",
        help="a fixed noise multiplier σ instead of calibrating to --epsilon; rounds then train "
        "until the site has spent --epsilon (default: calibrated)",
    )
    dp.add_argument(
        "--max-grad-norm",
        type=float,
        metavar="C",
        help=f"per-example gradient clipping norm (default {DEFAULT_MAX_GRAD_NORM:g})",
    )
    dp.add_argument(
        "--delta",
        type=float,
        metavar="D",
        help="δ of every site (default: each site's own, min(1e-5, 1/(10 n)) for n records)",
    )
    dp.add_argument(
        "--accountant",
        choices=tuple(a.value for a in Accountant),
        default=None,
        help="the accountant each site calibrates σ with and records in the ledger: prv "
        "(default; tight: less noise for the same ε) or rdp (a closed-form upper bound)",
    )
    dp.add_argument(
        "--no-dp",
        action="store_true",
        help="train WITHOUT differential privacy: the adapter can then memorise training records",
    )
    return parser


def _dp_options(args: argparse.Namespace) -> DemoDpOptions | None:
    """The validated DP options, or None for --no-dp; each mistake is one UserError line."""
    from fedseal.demo.dp_budget import DemoDpOptions

    given = [
        flag
        for flag in (
            "--epsilon",
            "--dp-budget",
            "--noise-multiplier",
            "--max-grad-norm",
            "--delta",
            "--accountant",
        )
        if getattr(args, flag[2:].replace("-", "_")) is not None
    ]
    if args.no_dp:
        if given:
            raise UserError(f"--no-dp cannot be combined with {', '.join(given)}")
        return None
    epsilon = DEFAULT_EPSILON if args.epsilon is None else args.epsilon
    budget = DEFAULT_DP_BUDGET if args.dp_budget is None else args.dp_budget
    clip = DEFAULT_MAX_GRAD_NORM if args.max_grad_norm is None else args.max_grad_norm
    for flag, value in (("--epsilon", epsilon), ("--dp-budget", budget), ("--max-grad-norm", clip)):
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"{flag} must be a number > 0, got {value:g}")
    if budget < epsilon:
        raise UserError(
            f"--dp-budget ({budget:g}) must be at least --epsilon ({epsilon:g}): a site cannot "
            "spend more in one run than over all its runs"
        )
    if args.delta is not None and not 0 < args.delta < 1:
        raise UserError(f"--delta must be between 0 and 1 (exclusive), got {args.delta:g}")
    sigma = args.noise_multiplier
    if sigma is not None and not 0 < sigma <= MAX_NOISE_MULTIPLIER:
        raise UserError(
            f"--noise-multiplier must be > 0 and at most {MAX_NOISE_MULTIPLIER:g}, got {sigma:g}"
        )
    return DemoDpOptions(
        epsilon=epsilon,
        budget=budget,
        max_grad_norm=clip,
        noise_multiplier=sigma,
        delta=args.delta,
        accountant=Accountant(args.accountant or Accountant.PRV),
    )


def _validate(args: argparse.Namespace) -> list[str]:
    """Check the arguments and fill in the scenario's and the regime's defaults."""
    from fedseal.models.data import SCENARIOS, scenario_site_names

    if args.scenario not in SCENARIOS:
        raise UserError(
            f"unknown scenario {args.scenario!r} (choose from {', '.join(sorted(SCENARIOS))})"
        )
    regime: Regime = REGIMES[choose_adapter(args.adapter)]
    args.adapter = regime.adapter
    if args.sites is None:
        args.sites = SCENARIOS[args.scenario].default_sites
    for name in ("rounds", "steps", "learning_rate", "batch_size", "clip"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(regime, name))
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
    dp_options = _dp_options(args)

    from fedseal.coordinator.flower_app import SubmitError
    from fedseal.coordinator.run_settings import RunSettings, default_run_config
    from fedseal.demo.federation import FederationError, LocalFederation
    from fedseal.demo.progress import ProgressTable
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
    resume_run = _run_to_resume(registry) if args.resume else 0

    _say(f"preparing the {args.scenario} federation ({args.mode}): {', '.join(sites)}")
    _say(
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
    dp_plans = _plan_dp(dp_options, sites, state_root, num_records, batch_sizes)
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
    plan = RunSettings.from_run_config(run_config).plan

    federation.enroll_sites()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        federation.start_superlink()
        security = "TLS, SuperNode authentication" if args.tls else "no TLS"
        logs = workdir / "logs"
        _say(f"SuperLink listening on {federation.address} ({security}; logs in {logs})")
        if args.tls:
            federation.register_node_keys()
            _say(f"registered {len(sites)} SuperNode keys with the SuperLink")
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
        "dp": _dp_summary(dp_options, dp_plans),
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
        summary["comparison"] = _compare_with_solo(
            args,
            sites,
            plan,
            completed[-1],
            workdir,
            dataset,
            batch_sizes,
            flower_run_id,
            dp_plans,
        )
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    _say(f"summary written to {workdir / 'summary.json'}")
    public_key = coordinator_state / "keys" / "ledger-public-key.hex"
    _say(
        f"check the privacy ledger: fl-audit verify --database {url} --coordinator-key {public_key}"
    )
    return ExitCode.OK if str(run.status) == "completed" else ExitCode.FAILURE


def _run_to_resume(registry: Registry) -> int:
    """The newest run still `running` in the workdir's registry (its coordinator stopped)."""
    from fedseal.coordinator.run_launch import running_run

    run = running_run(registry)
    if run is None:
        raise UserError("--resume: no run in this workdir's registry is still running")
    _say(
        f"resuming run {run.id}: {run.rounds_completed} of {run.rounds_planned} rounds "
        "completed; the round in flight is recorded as aborted"
    )
    return int(run.id)


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _plan_dp(
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
        _say(
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
        _say(plan.describe())
        if plan.exhausted:
            _say(
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
            _say(
                f"WARNING: {site} trained with DP in this workdir before; training its data "
                "without DP now voids that guarantee as well"
            )


def _dp_summary(
    options: DemoDpOptions | None, plans: dict[str, SiteDpPlan] | None
) -> dict[str, object]:
    """What summary.json says about privacy: the options and each site's plan for this run."""
    if options is None or plans is None:
        return {"enabled": False}
    return {
        "enabled": True,
        "epsilon_this_run": options.epsilon,
        "budget": options.budget,
        "max_grad_norm": options.max_grad_norm,
        "noise_multiplier": options.noise_multiplier,
        "sites": {
            site: {
                "records": plan.num_records,
                "delta": plan.delta,
                "spent_before": plan.spent,
                "epsilon_this_run": plan.this_run,
                "target_epsilon": plan.target,
            }
            for site, plan in plans.items()
        },
    }


def _compare_with_solo(
    args: argparse.Namespace,
    sites: list[str],
    plan: RunPlan,
    last_round: RoundView,
    workdir: Path,
    dataset: FederatedDataset,
    batch_sizes: dict[str, int],
    flower_run_id: int,
    dp_plans: dict[str, SiteDpPlan] | None,
) -> dict[str, object]:
    """Score the federated model on the global test set (the union of the sites' test sets)
    next to each site alone, with DP at the run's ε and without, and print the comparison."""
    import os
    import time

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from fedseal.client.adapter_model import build_adapter_model
    from fedseal.client.site_service import derive_seed, resolve_device
    from fedseal.demo.baseline import SoloDp, federated_score, load_site_inputs, train_solo

    torch.set_num_threads(2)
    device = resolve_device("auto")
    metric = dataset.primary_metric
    state_root = workdir / "state"
    _model, tokenizer = build_adapter_model(plan, device)
    inputs = {
        site: load_site_inputs(plan, dataset.sites[site], state_root / site, device, tokenizer)
        for site in sites
    }
    tests = [inputs[site].test for site in sites]
    holder = next(
        (
            c.site
            for c in last_round.contributions
            if c.site in sites and c.adapter_digest == last_round.global_digest
        ),
        sites[0],
    )
    federated = federated_score(
        plan, state_root / holder, flower_run_id, last_round.global_digest or "", tests, device
    )
    runs: list[tuple[str, SoloDp | None]] = []
    if dp_plans is not None:
        for site in sites:
            dp = dp_plans[site]
            runs.append(
                (
                    site,
                    SoloDp(
                        dp.this_run,
                        dp.delta,
                        dp.options.max_grad_norm,
                        str(dp.options.accountant),
                    ),
                )
            )
    runs += [(site, None) for site in sites]
    steps = plan.steps * args.rounds
    _say(
        f"training each site alone for comparison ({len(runs)} models, {args.rounds} rounds x "
        f"{plan.steps} steps each, the federation's batch and learning rate) ..."
    )
    solo: dict[str, dict[str, object]] = {}
    for index, (site, dp) in enumerate(runs, start=1):
        started = time.perf_counter()
        label = f"{site} alone ({'DP' if dp else 'no DP'})"
        score = train_solo(
            plan=plan,
            site=inputs[site],
            tests=tests,
            rounds=args.rounds,
            batch_size=batch_sizes[site],
            seed=derive_seed(plan.seed, site, "solo"),
            device=device,
            dp=dp,
        )
        solo.setdefault(site, {})["dp" if dp else "no_dp"] = {
            "accuracy": score.accuracy,
            "auc": score.auc,
            "noise_multiplier": score.noise_multiplier,
            "seconds": score.seconds,
        }
        _say(f"  [{index}/{len(runs)}] {label}: {time.perf_counter() - started:.1f} s")

    def value(result: dict[str, object]) -> float:
        found = result[metric]
        return float(found) if isinstance(found, int | float) else float("nan")

    federated_value = federated.auc if metric == "auc" else federated.accuracy
    dp_label = "" if dp_plans is None else f", ε ≤ {args.epsilon or DEFAULT_EPSILON:g}"
    print(
        f"\nscore on the global test set ({metric}; the union of the {len(sites)} sites' test "
        f"sets, {federated.n} records):",
        flush=True,
    )
    subject = "the federated model" if dp_plans is None else "the federated model (DP)"
    fed_name = "federated (all sites" + (", DP" if dp_plans is not None else "") + ")"
    print(f"  {fed_name:<34} {_score(federated_value)}", flush=True)
    verdicts: dict[str, bool] = {}
    for kind, title in (("dp", f"DP{dp_label}"), ("no_dp", "no DP")):
        scores = {site: solo[site][kind] for site in sites if kind in solo[site]}
        if not scores:
            continue
        for site, result in scores.items():
            print(f"  {site + ' alone (' + title + ')':<34} {_score(value(result))}", flush=True)
        best = max(value(r) for r in scores.values())
        verdicts[kind] = federated_value is not None and federated_value > best
    for kind, title in (("dp", "with DP at the same ε"), ("no_dp", "(no DP)")):
        if kind in verdicts:
            verdict = "beats" if verdicts[kind] else "does NOT beat"
            print(f"  {subject} {verdict} every site trained alone {title}", flush=True)
    print(flush=True)
    return {
        "metric": metric,
        "federated": federated_value,
        "federated_dp": dp_plans is not None,
        "global_test_records": federated.n,
        "solo": solo,
        "steps_alone": steps,
        "beats_every_site_alone": verdicts,
    }


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
