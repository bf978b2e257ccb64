"""`fl-coordinator`: the operator's command line, one module per command.

- `init-pki`: the federation's CA and the SuperLink's TLS certificate, and the coordinator's
  ledger key in the state folder.
- `site-auth-key`: an ECDSA P-384 OpenSSH key pair for a site's SuperNode authentication.
- `enroll` / `revoke`: a site's fedseal keys in the registry (a chained ledger event), and
  optionally its SuperNode key with Flower's node authentication (`flwr supernode register`).
- `manifest`: the federation manifest every site reviews and pins.
- `start-run`: submit a run to the SuperLink and follow it in the registry; a run whose
  SuperLink or ServerApp died is continued from its last completed round.
- `attach-statement`: a site's signed privacy audit statement (`fl-client audit-privacy
  --attach`) checked against its enrolled key and appended to the ledger chain.
- `status`: runs, rounds and each site's ε spent against its budget (reads only; no ledger key).

The options several commands share live in `options`. Every mistake a person can fix ends in
one line on stderr and exit code 2; a `flwr` command that fails after the registry was written
ends with exit code 4 and says what was already done.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from fedseal.cli_args import command_parser, run_command
from fedseal.cli_support import run_cli
from fedseal.coordinator.cli import (
    attach_statement,
    enroll,
    init_pki,
    manifest,
    revoke,
    site_auth_key,
    start_run,
    status,
)
from fedseal.coordinator.cli.options import EPILOG, PROG, STATE_ENV

__all__ = ["STATE_ENV", "build_parser", "main"]

COMMANDS = (
    init_pki.COMMAND,
    site_auth_key.COMMAND,
    enroll.COMMAND,
    revoke.COMMAND,
    manifest.COMMAND,
    start_run.COMMAND,
    attach_statement.COMMAND,
    status.COMMAND,
)
"""In the order `--help` lists them."""


def build_parser() -> argparse.ArgumentParser:
    return command_parser(
        PROG,
        "Operate a fedseal federation: make its PKI, enrol and revoke sites, start runs, and "
        "see its runs and each site's privacy spend.",
        EPILOG,
        COMMANDS,
    )


def _main(argv: Sequence[str] | None) -> int:
    return run_command(COMMANDS, build_parser().parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)
