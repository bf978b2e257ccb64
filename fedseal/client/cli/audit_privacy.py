"""`fl-client --site NAME audit-privacy [--run ID] [--attach [--statement PATH]]`: a
membership-inference attack on the run's global model with the site's own records
(`fedseal.client.privacy_audit`); with `--attach`, the result signed with the site's identity
key as a statement file for the coordinator to attach to the ledger."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from fedseal.cli_support import ExitCode, UserError
from fedseal.client.cli.command import Command, say

if TYPE_CHECKING:
    from fedseal.client.site_config import SiteConfig

__all__ = ["AUDIT_PRIVACY"]


def _add_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        parser.add_argument(
            "--attach",
            action="store_true",
            help="(audit-privacy) sign the result with the site's identity key and write it as "
            "a privacy audit statement file (default STATE_DIR/audits/RUN.json) for the "
            "coordinator's operator to attach to the ledger with `fl-coordinator "
            "attach-statement FILE`; nothing is sent from here",
        ),
        parser.add_argument(
            "--statement",
            type=Path,
            metavar="PATH",
            help="(audit-privacy, with --attach) where to write the signed statement",
        ),
    ]


def _audit(config: SiteConfig, args: argparse.Namespace) -> int:
    from fedseal.client.privacy_audit import PrivacyAuditError, audit_run, write_statement

    if args.statement is not None and not args.attach:
        raise UserError("--statement PATH goes with --attach")
    say(f"site {config.site.name}: attacking the run's global model with its own records ...")
    try:
        audit = audit_run(config, args.run)
    except PrivacyAuditError as exc:
        raise UserError(str(exc)) from None
    result = audit.result
    verdict = (
        "no better than chance within its interval"
        if result.indistinguishable
        else "better than chance"
    )
    say(
        f"run {audit.run_id} (round {audit.applied_round}, digest {audit.adapter_digest[:12]}): "
        f"{result.attack} attack on {result.members} training against {result.non_members} "
        f"held-out records: AUC {result.auc:.3f} [{result.auc_low:.3f}, {result.auc_high:.3f}] "
        f"({verdict}); empirical ε ≥ {result.epsilon_lower:.2f} at "
        f"{result.confidence:.0%} for δ = {result.delta:.2g}"
    )
    figures = {"site": audit.site, "run": audit.run_id, **result.as_fields()}
    if args.attach:
        try:
            path = write_statement(config, audit, args.statement)
        except PrivacyAuditError as exc:
            raise UserError(str(exc)) from None
        say(
            f"signed the privacy audit statement: {path}; the coordinator's operator attaches "
            f"it to the ledger with `fl-coordinator attach-statement {path}`"
        )
        figures["statement"] = str(path)
    print(json.dumps(figures), flush=True)
    return ExitCode.OK


AUDIT_PRIVACY = Command(
    name="audit-privacy",
    help="audit-privacy [--run ID] [--attach]: attack the run's global model with the site's "
    "own records (membership inference: the attack's AUC and the ε it proves); --attach "
    "also signs the result as a statement file for the ledger",
    add_arguments=_add_arguments,
    run=_audit,
    reads=("run",),
)
