"""`fl-coordinator status`: runs, one run's rounds and each site's ε spent against its budget,
read from the registry (reads only; needs no ledger key)."""

from __future__ import annotations

import argparse
import json

from fedseal.cli_args import Command
from fedseal.cli_support import ExitCode, UserError
from fedseal.coordinator.cli import options

__all__ = ["COMMAND"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=int, metavar="ID", help="the registry's run id")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    options.add_common_options(parser)


def _run(args: argparse.Namespace) -> int:
    from fedseal.coordinator.status_report import collect_status, render_status
    from fedseal.registry import RecordNotFound, RegistryError

    with options.open_registry(args, writing=False) as registry:
        try:
            report = collect_status(registry, args.run, options.state_dir(args))
        except RecordNotFound as exc:
            raise UserError(str(exc)) from None
        except RegistryError as exc:
            raise UserError(f"registry: {exc}") from None
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True), flush=True)
    else:
        print(render_status(report), flush=True)
    return ExitCode.OK


COMMAND = Command(
    name="status",
    help="show runs, rounds and each site's ε spent against its budget",
    description="Print every run, the rounds of one run (--run, else the latest) and each "
    "site's status and ε spent against its budget, from the registry. Reads only; needs no "
    "ledger key.",
    add_arguments=_add_arguments,
    run=_run,
)
