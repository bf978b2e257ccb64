"""`fl-coordinator init-pki`: the federation's CA, the SuperLink's TLS certificate, and the
coordinator's ledger key in the state folder. Existing files are kept, never overwritten."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseal.cli_args import Command
from fedseal.cli_support import ExitCode, UserError
from fedseal.coordinator.cli import options

__all__ = ["COMMAND"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from fedseal.coordinator.pki import DEFAULT_SERVER_NAMES

    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="the PKI folder")
    parser.add_argument(
        "--superlink-host",
        action="append",
        metavar="NAME",
        help="a DNS name or IP address the SuperLink is reached at; repeat for several "
        f"(default: {', '.join(DEFAULT_SERVER_NAMES)})",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=365,
        metavar="N",
        help="validity of new certificates in days (default: 365)",
    )
    options.add_common_options(parser, database=False)


def _run(args: argparse.Namespace) -> int:
    from fedseal.coordinator.pki import DEFAULT_SERVER_NAMES, PkiError, init_pki
    from fedseal.registry.ledger_key import LedgerKeyError, create_ledger_key, ledger_key_path

    names = args.superlink_host or list(DEFAULT_SERVER_NAMES)
    try:
        result = init_pki(args.out, names, args.days)
    except PkiError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write the PKI in {args.out}: {exc}") from None
    options.say_files(result.made, result.kept)
    state = options.state_dir(args)
    try:
        key, made = create_ledger_key(state)
    except LedgerKeyError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write the ledger key in {state}: {exc}") from None
    del key
    verb = "made" if made else "kept existing"
    options.say(f"{verb} the coordinator's ledger key {ledger_key_path(state)}")
    return ExitCode.OK


COMMAND = Command(
    name="init-pki",
    help="make the CA, the SuperLink's TLS certificate and the coordinator's ledger key",
    description="Make, in --out, a CA (ca.crt, ca.key) and a SuperLink server certificate "
    "signed by it (server.pem, server.key), all ECDSA P-384; keys are written 0600. Also make "
    "the coordinator's ledger key in STATE/keys/. Existing files are kept (and listed as "
    "kept), never overwritten. Use them as `flower-superlink --ssl-ca-certfile ca.crt "
    "--ssl-certfile server.pem --ssl-keyfile server.key` and `flower-supernode "
    "--root-certificates ca.crt`.",
    add_arguments=_add_arguments,
    run=_run,
)
