"""`fl-coordinator manifest`: the federation manifest every site reviews and pins (members,
accepted modes, the collusion bound every round must withstand, a version)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseal.cli_args import Command
from fedseal.cli_support import ExitCode, UserError
from fedseal.coordinator.cli import options

__all__ = ["COMMAND"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keys",
        required=True,
        nargs="+",
        type=Path,
        metavar="PUBLIC_KEYS_JSON",
        help="each member's public key file (keys/site-public-keys.json in its state)",
    )
    parser.add_argument("--out", required=True, type=Path, help="where to write it (new file)")
    parser.add_argument("--federation", default="fedseal", help="the federation's name")
    parser.add_argument("--version", type=int, default=1, help="the manifest's version (>= 1)")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["he+ss"],
        choices=["plain", "he", "he+ss"],
        help="aggregation modes the federation accepts (default: he+ss only)",
    )
    parser.add_argument(
        "--max-colluding",
        type=int,
        default=None,
        metavar="C",
        help="member sites that may collude with the coordinator while each other site's "
        "update stays hidden (default: a minority, (members - 1) // 2)",
    )


def _run(args: argparse.Namespace) -> int:
    from fedseal.contract.manifest import (
        FederationManifest,
        ManifestError,
        ManifestMember,
        minority,
    )
    from fedseal.contract.site_identity import SiteKeyError, SitePublicKeys
    from fedseal.secure_agg.params import Mode

    members: dict[str, ManifestMember] = {}
    for path in args.keys:
        try:
            keys = SitePublicKeys.from_json(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None
        except SiteKeyError as exc:
            raise UserError(f"{path}: {exc}") from None
        if keys.site in members:
            raise UserError(f"site {keys.site} is given twice")
        members[keys.site] = ManifestMember(keys.site, keys.identity, keys.sealing)
    colluding = minority(len(members)) if args.max_colluding is None else args.max_colluding
    try:
        manifest = FederationManifest(
            args.federation,
            args.version,
            members,
            frozenset(Mode(m) for m in args.modes),
            colluding,
        )
    except ManifestError as exc:
        raise UserError(str(exc)) from None
    try:
        with open(args.out, "xb") as handle:
            handle.write(manifest.to_bytes())
    except FileExistsError:
        raise UserError(f"{args.out} exists; nothing was overwritten") from None
    except OSError as exc:
        raise UserError(f"cannot write {args.out}: {exc.strerror}") from None
    options.say(
        f"manifest {manifest.federation} v{manifest.version}: {len(members)} members, up to "
        f"{colluding} colluding; fingerprint {manifest.fingerprint} (give each site the file "
        "and read them the fingerprint)"
    )
    print(manifest.fingerprint, flush=True)
    return ExitCode.OK


COMMAND = Command(
    name="manifest",
    help="write the federation manifest that every site reviews and pins",
    description="Write the federation manifest from the members' public key files (what "
    "`fl-client --site=NAME enroll` printed): members, accepted modes, how many colluding "
    "sites every round must withstand, and a version. Give it to each site's operator, "
    "who checks its fingerprint with you out of band and pins it with `fl-client "
    "--site=NAME trust FILE`; sites refuse rounds it does not allow. A new member means a "
    "new version that every site pins again.",
    add_arguments=_add_arguments,
    run=_run,
)
