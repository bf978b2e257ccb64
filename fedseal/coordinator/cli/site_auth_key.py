"""`fl-coordinator site-auth-key`: an ECDSA P-384 OpenSSH key pair for a site's SuperNode
authentication (the site keeps the private key; the operator registers the public one)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseal.cli_args import Command
from fedseal.cli_support import ExitCode, UserError
from fedseal.coordinator.cli import options

__all__ = ["COMMAND"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="PATH", help="private key file")


def _run(args: argparse.Namespace) -> int:
    from fedseal.coordinator.pki import PkiError, make_site_auth_key

    try:
        result = make_site_auth_key(args.out)
    except PkiError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write {args.out}: {exc}") from None
    options.say_files(result.made, result.kept)
    return ExitCode.OK


COMMAND = Command(
    name="site-auth-key",
    help="make a site's SuperNode authentication key pair (ECDSA P-384, OpenSSH)",
    description="Write an ECDSA P-384 private key in OpenSSH format to PATH (0600) and its "
    "public key to PATH.pub. The site runs `flower-supernode --auth-supernode-private-key "
    "PATH`; the operator registers PATH.pub (`fl-coordinator enroll --auth-public-key`). "
    "An existing matching pair is kept.",
    add_arguments=_add_arguments,
    run=_run,
)
