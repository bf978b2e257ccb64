"""`fl-client`: what a hospital's or bank's IT team runs to join the federation.

It validates the site's config and data before anything else, waits (visibly, for a bounded time)
for the coordinator, then runs a Flower SuperNode that carries the site's ClientApp. Every
mistake a person can make ends in one line and a non-zero exit code. One command per module:
`run` (join), `enroll` (keys), `trust` (pin the federation manifest), `export` (the run's
global adapter as a PEFT adapter with its model card), `audit-privacy` (a membership-inference
attack on the run's global model, optionally signed as a statement for the ledger).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fedseal.cli_support import UserError, run_cli
from fedseal.client.cli.audit_privacy import AUDIT_PRIVACY
from fedseal.client.cli.command import PROG, Command
from fedseal.client.cli.config_file import SITES_DIR_ENV, load_config, resolve_config_path
from fedseal.client.cli.enroll import ENROLL
from fedseal.client.cli.export import EXPORT
from fedseal.client.cli.run import RUN
from fedseal.client.cli.trust import TRUST

__all__ = ["build_parser", "main", "resolve_config_path"]

COMMANDS: dict[str, Command] = {c.name: c for c in (RUN, ENROLL, TRUST, EXPORT, AUDIT_PRIVACY)}


def build_parser() -> argparse.ArgumentParser:
    return _parser()[0]


def _parser() -> tuple[argparse.ArgumentParser, dict[str, tuple[set[str], str]]]:
    """The parser, and for each command's own option (by dest) the commands that read it and
    its name."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Join a fedseal federation as one site: validate the site's config and data, wait "
            "for the coordinator, then train the shared adapter on local data, which never "
            "leaves the site; export the run's global adapter for use outside the federation."
        ),
        epilog=(
            "Exit codes: 0 finished, 2 bad argument, config, data or export request, 3 "
            "coordinator unreachable, 4 the Flower SuperNode failed, 5 the federation refused "
            "this site (its SuperNode key is not enrolled, or was revoked), 130 interrupted. "
            "Options marked (run), (trust), (export) or (audit-privacy) belong to that command "
            "only."
        ),
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=tuple(COMMANDS),
        default=RUN.name,
        help="; ".join(c.help for c in COMMANDS.values()),
    )
    parser.add_argument(
        "--site",
        required=True,
        metavar="NAME",
        help="the site's name, e.g. hospital_a; its config is SITES_DIR/NAME.toml unless --config",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="the site's config file (TOML) instead of SITES_DIR/NAME.toml",
    )
    parser.add_argument(
        "--sites-dir",
        type=Path,
        metavar="DIR",
        help=f"folder of site configs (default: ${SITES_DIR_ENV}, else ./sites)",
    )
    owners: dict[str, tuple[set[str], str]] = {}
    for command in COMMANDS.values():
        for action in command.add_arguments(parser):
            name = action.option_strings[0] if action.option_strings else str(action.metavar)
            owners[action.dest] = ({command.name}, name)
    for command in COMMANDS.values():
        for dest in command.reads:
            owners[dest][0].add(command.name)
    return parser, owners


def _refuse_foreign_options(
    parser: argparse.ArgumentParser,
    owners: dict[str, tuple[set[str], str]],
    args: argparse.Namespace,
) -> None:
    """A command given another command's option says so, rather than ignoring it."""
    foreign: dict[str, list[str]] = {}
    for dest, (readers, name) in owners.items():
        if args.command not in readers and getattr(args, dest) != parser.get_default(dest):
            foreign.setdefault(" and ".join(sorted(readers)), []).append(name)
    for owner, names in foreign.items():
        verb = "belongs" if len(names) == 1 else "belong"
        whose = f"the {owner} command" if " and " not in owner else f"the {owner} commands"
        raise UserError(f"{' and '.join(names)} {verb} to {whose}")


def _main(argv: Sequence[str] | None) -> int:
    parser, owners = _parser()
    args = parser.parse_args(argv)
    path = resolve_config_path(args.site, args.config, args.sites_dir)
    config = load_config(args.site, path)
    _refuse_foreign_options(parser, owners, args)
    args.config_file = path
    return COMMANDS[args.command].run(config, args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
