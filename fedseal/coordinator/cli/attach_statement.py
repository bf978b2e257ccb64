"""`fl-coordinator attach-statement FILE`: a site's signed privacy audit statement (the file
`fl-client --site=NAME audit-privacy --attach` writes) checked against the site's enrolled key
and the run's global model, then appended to the ledger chain as a privacy_audit event."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fedseal.cli_args import Command
from fedseal.cli_support import ExitCode, UserError
from fedseal.coordinator.cli import options

if TYPE_CHECKING:
    from fedseal.contract.audit_statement import SignedAuditStatement

__all__ = ["COMMAND"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        type=Path,
        metavar="FILE",
        help="the site's privacy audit statement file (STATE_DIR/audits/RUN.json at the site)",
    )
    options.add_common_options(parser)


def _read(path: Path) -> SignedAuditStatement:
    from fedseal.contract.audit_statement import (
        MAX_STATEMENT_FILE_BYTES,
        AuditStatementError,
        SignedAuditStatement,
    )

    try:
        if path.is_dir():
            raise UserError(f"{path} is a folder, not a statement file")
        if path.stat().st_size > MAX_STATEMENT_FILE_BYTES:
            raise UserError(f"{path} is not a privacy audit statement (too large)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return SignedAuditStatement.from_json(data)
    except AuditStatementError as exc:
        raise UserError(f"{path}: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    from fedseal.registry import RecordNotFound, RegistryError, StatementRefused

    signed = _read(args.file)
    statement = signed.statement
    with options.open_registry(args, writing=True) as registry:
        try:
            recorded = registry.record_privacy_audit(signed)
        except (RecordNotFound, StatementRefused) as exc:
            raise UserError(f"refused: {exc}") from None
        except RegistryError as exc:
            raise UserError(f"registry: {exc}") from None
    where = f"run {recorded.run_id}, chain entry {recorded.seq}"
    if not recorded.added:
        options.say(
            f"site {statement.site}'s privacy audit is already on the ledger ({where}); "
            "nothing changed"
        )
        return ExitCode.OK
    options.say(
        f"attached site {statement.site}'s privacy audit of {where}: {statement.attack} attack, "
        f"AUC {statement.auc:.3f} [{statement.auc_low:.3f}, {statement.auc_high:.3f}], "
        f"empirical ε ≥ {statement.epsilon_lower:.2f} (privacy_audit event recorded)"
    )
    return ExitCode.OK


COMMAND = Command(
    name="attach-statement",
    help="attach a site's signed privacy audit statement to the ledger",
    description="Read the statement file a site wrote with `fl-client --site=NAME "
    "audit-privacy --attach`, check its signature against the site's enrolled identity key "
    "and that it names a round of the run whose global model digest is the one it attacked, "
    "then append it to the ledger chain (a privacy_audit event, countersigned like every "
    "entry). `fl-audit` verifies it again and shows it per site. The same file twice is "
    "recorded once.",
    add_arguments=_add_arguments,
    run=_run,
)
