"""`fl-client --site NAME audit-privacy [--run ID]`: a membership-inference attack on the run's
global model with the site's own records (`fedseal.client.privacy_audit`)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from fedseal.cli_support import ExitCode, UserError
from fedseal.client.cli.command import Command, say

if TYPE_CHECKING:
    from fedseal.client.site_config import SiteConfig

__all__ = ["AUDIT_PRIVACY"]


def _no_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return []


def _audit(config: SiteConfig, args: argparse.Namespace) -> int:
    from fedseal.client.privacy_audit import PrivacyAuditError, audit_run

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
    print(json.dumps({"site": audit.site, "run": audit.run_id, **result.as_fields()}), flush=True)
    return ExitCode.OK


AUDIT_PRIVACY = Command(
    name="audit-privacy",
    help="audit-privacy [--run ID]: attack the run's global model with the site's own records "
    "(membership inference: the attack's AUC and the ε it proves)",
    add_arguments=_no_arguments,
    run=_audit,
    reads=("run",),
)
