"""`fl-client --site NAME trust FILE`: review the federation manifest and pin it once a person
confirms its fingerprint; the site then takes part only in rounds it allows."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fedseal.cli_support import ExitCode, UserError
from fedseal.client.cli.command import Command, say
from fedseal.client.cli.config_file import ensure_state_dir

if TYPE_CHECKING:
    from fedseal.client.site_config import SiteConfig

__all__ = ["TRUST"]


def _add_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        parser.add_argument(
            "manifest",
            nargs="?",
            type=Path,
            metavar="FILE",
            help="(trust) the federation manifest the operator made with `fl-coordinator manifest`",
        ),
        parser.add_argument(
            "--yes",
            metavar="FINGERPRINT",
            help="(trust) pin without asking, if the manifest's fingerprint is exactly "
            "FINGERPRINT (compare it with the operator's out of band)",
        ),
    ]


def _trust(config: SiteConfig, args: argparse.Namespace) -> int:
    """Show the manifest, and pin it once a person confirms it (or --yes names its print)."""
    from fedseal.client.trust import load_pinned_manifest, pin_manifest
    from fedseal.contract.manifest import FederationManifest, ManifestError

    ensure_state_dir(config)
    path: Path | None = args.manifest
    expected: str | None = args.yes
    if path is None:
        raise UserError("trust needs the manifest FILE the operator gave you")
    try:
        manifest = FederationManifest.from_bytes(path.read_bytes())
        pinned = load_pinned_manifest(config.site.state_dir)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    except ManifestError as exc:
        raise UserError(f"{path}: {exc}") from None
    if config.site.name not in manifest.members:
        raise UserError(f"{path} does not list this site ({config.site.name}) as a member")
    print(f"federation {manifest.federation}, version {manifest.version}")
    print(f"modes accepted: {', '.join(sorted(str(m) for m in manifest.modes))}")
    print(f"rounds withstand up to {manifest.max_colluding} colluding member site(s)")
    for name, member in sorted(manifest.members.items()):
        print(f"  {name:<24} identity {member.identity.hex()[:16]}…")
    print(f"fingerprint {manifest.fingerprint}")
    if pinned is not None:
        if pinned.fingerprint == manifest.fingerprint:
            say(f"site {config.site.name}: this manifest is already pinned")
            return ExitCode.OK
        if pinned.federation != manifest.federation or manifest.version <= pinned.version:
            raise UserError(
                f"site {config.site.name} has pinned {pinned.federation} v{pinned.version} "
                f"({pinned.fingerprint}); a replacement must be a later version of the same "
                "federation"
            )
    if expected is not None:
        if expected != manifest.fingerprint:
            raise UserError(
                f"fingerprint mismatch: {path} is {manifest.fingerprint}, --yes says {expected}; "
                "nothing was pinned"
            )
    else:
        if not sys.stdin.isatty():
            raise UserError("confirm the fingerprint: run in a terminal, or pass --yes FINGERPRINT")
        answer = input("pin this manifest? Compare the fingerprint with the operator's [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            say("nothing was pinned")
            return ExitCode.USAGE
    where = pin_manifest(config.site.state_dir, manifest)
    say(f"site {config.site.name}: pinned {manifest.fingerprint} in {where}")
    return ExitCode.OK


TRUST = Command(
    name="trust",
    help="trust FILE: review the federation manifest FILE (members, modes, collusion bound, "
    "fingerprint) and pin it: the site then takes part only in rounds it allows",
    add_arguments=_add_arguments,
    run=_trust,
)
