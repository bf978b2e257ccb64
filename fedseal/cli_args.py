"""The argument layout several fedseal command lines share: commands as records, and the options
that more than one party's command line offers.

A command line of several commands (`fl-coordinator`, `fl-audit`) declares each as a `Command`,
one module each, and `command_parser` assembles them, so no command repeats the parser set-up.
Imports nothing of fedseal: every party may use it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Command", "add_key_rounds", "add_max_colluding", "command_parser", "run_command"]


@dataclass(frozen=True)
class Command:
    """One command of a command line: its name and texts, its arguments and what it does."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    epilog: str | None = None
    """Its own epilog (exit codes); None: the program's."""


def command_parser(
    prog: str, description: str, epilog: str, commands: Sequence[Command]
) -> argparse.ArgumentParser:
    """The program's parser with one subcommand per `Command`, in the order given."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        command.add_arguments(
            subparsers.add_parser(
                command.name,
                help=command.help,
                description=command.description,
                epilog=epilog if command.epilog is None else command.epilog,
            )
        )
    return parser


def run_command(commands: Sequence[Command], args: argparse.Namespace) -> int:
    """Run the command `command_parser` parsed into `args.command`."""
    by_name = {command.name: command for command in commands}
    return by_name[args.command].run(args)


def add_max_colluding(parser: argparse.ArgumentParser) -> None:
    """`--max-colluding C` of a run (default -1: a minority of the run's sites)."""
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


def add_key_rounds(parser: argparse.ArgumentParser, default: int) -> None:
    """`--key-rounds K` of a run (`default`: `fedseal.contract.limits.DEFAULT_KEY_ROUNDS`)."""
    parser.add_argument(
        "--key-rounds",
        type=int,
        default=default,
        metavar="K",
        help="he+ss: rounds whose keys one advertise and one share stage make at once, fresh "
        f"and bound to their own round (a key batch, 1 to 64; default {default}; 1 "
        "keys every round on its own). The batch's later rounds skip both stages; every round "
        "of a batch samples the batch's sites, a site that connects later joins the next "
        "batch, and a site that restarts mid-batch has the batch's remaining rounds keyed "
        "anew. Ignored in he and plain",
    )
