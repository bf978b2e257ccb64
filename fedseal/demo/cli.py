"""`fl-demo`: a whole fedseal federation as local processes on 127.0.0.1.

It starts a SuperLink and one `fl-client` per site, submits the run, prints a live per-round table
from the registry, and at the end compares the federated model with each site's model trained
alone. Every process it started is stopped on exit, Ctrl-C or SIGTERM; the exit code is non-zero
when the run fails. This module reads and checks the arguments; `run.py` composes and runs the
federation, `summary.py` reports how it ended.

Every site trains with DP-SGD unless `--no-dp` is given: `--epsilon` is what each site may spend
in this run, `--dp-budget` what it may spend over all runs on the same workdir (its history is
kept in the site's state directory), see `fedseal.demo.dp_budget`.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedseal.cli_args import add_key_rounds, add_max_colluding
from fedseal.cli_support import UserError, run_cli
from fedseal.client.dp.settings import DEFAULT_MAX_GRAD_NORM, MAX_NOISE_MULTIPLIER
from fedseal.contract.limits import DEFAULT_KEY_ROUNDS
from fedseal.contract.regime import REGIMES, SCENARIO_REGIMES, Regime, regime_for
from fedseal.contract.run_plan import AdapterKind
from fedseal.privacy.accountant_kind import Accountant

from .progress import PROG

HEAD, LORA = AdapterKind.HEAD, AdapterKind.LORA

if TYPE_CHECKING:
    from fedseal.demo.dp_budget import DemoDpOptions

__all__ = ["build_parser", "main"]

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


# What each choice of an option means: the help names them all, from the same table argparse
# checks against, so the two never disagree.
_SCENARIOS = {
    "hospitals": "ICD-10-CM coding, default",
    "heart": "UCI heart disease, 4 real hospitals",
    "banks": "Lending Club credit risk by region",
}
_MODES = {
    "he+ss": "default; BFV-encrypted, SecAgg-masked: the coordinator sees no update and no "
    "aggregate",
    "he": "BFV only",
    "plain": "FedAvg in the clear, for comparison",
}
_ADAPTERS = {
    "head": "a linear head over the frozen base model's cached embeddings; the CPU default",
    "lora": "LoRA and the head through the whole model; the GPU default",
    "auto": "lora when this machine has CUDA, else head",
}


def _add_choice(
    parser: argparse.ArgumentParser,
    flag: str,
    default: str,
    intro: str,
    meanings: dict[str, str],
    *,
    checked: bool = True,
) -> None:
    """An option that takes one of ``meanings``, with help that says what each means:
    ``intro: a (...), b (...) or c (...)``."""
    named = [f"{choice} ({meaning})" for choice, meaning in meanings.items()]
    parser.add_argument(
        flag,
        default=default,
        choices=tuple(meanings) if checked else None,
        help=f"{intro}: {', '.join(named[:-1])} or {named[-1]}",
    )


def _per_adapter(setting: str) -> str:
    """The help's note on a setting whose default is the adapter's regime's (and the
    scenario's, where it has a setting of its own)."""
    head, lora = (format(getattr(REGIMES[kind], setting), "g") for kind in (HEAD, LORA))
    own = [
        f"{scenario} {format(getattr(regime, setting), 'g')}"
        for (kind, scenario), regime in SCENARIO_REGIMES.items()
        if kind is HEAD and getattr(regime, setting) != getattr(REGIMES[HEAD], setting)
    ]
    by_scenario = f" ({', '.join(own)})" if own else ""
    return f"default {head} for the head adapter{by_scenario}, {lora} for lora"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Run a fedseal federation on this machine: a Flower SuperLink, one fl-client per "
            "site, and the coordinator's run, with every round recorded in the registry."
        ),
        epilog="Exit codes: 0 run completed, 1 run failed, 2 bad argument, 130 interrupted.",
    )
    # --scenario is checked by _validate, which lists the scenarios fedseal.models knows
    _add_choice(parser, "--scenario", "hospitals", "demo federation", _SCENARIOS, checked=False)
    _add_choice(parser, "--mode", "he+ss", "aggregation", _MODES)
    _add_choice(parser, "--adapter", "auto", "what trains and travels", _ADAPTERS)
    parser.add_argument(
        "--clip",
        type=float,
        default=None,
        help="largest change per adapter coordinate per round that the secure modes encode "
        f"exactly; larger ones are clipped and counted ({_per_adapter('clip')})",
    )
    add_max_colluding(parser)
    add_key_rounds(parser, DEFAULT_KEY_ROUNDS)
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
        help=f"federated rounds ({_per_adapter('rounds')})",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"local training steps per site per round ({_per_adapter('steps')})",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help=f"local learning rate ({_per_adapter('learning_rate')})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"largest expected batch per site ({_per_adapter('batch_size')}), capped at each "
        "site's validation records",
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
    regime: Regime = regime_for(choose_adapter(args.adapter), args.scenario)
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


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    sites = _validate(args)
    dp_options = _dp_options(args)
    from fedseal.demo.run import run_demo

    return run_demo(args, sites, dp_options)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
