"""`fl-client`: what a hospital's or bank's IT team runs to join the federation.

It validates the site's config and data before anything else, waits (visibly, for a bounded time)
for the coordinator, then runs a Flower SuperNode that carries the site's ClientApp. Every
mistake a person can make ends in one line and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedseal.cli_support import ExitCode, UserError, run_cli

if TYPE_CHECKING:
    from fedseal.client.supernode import SupernodeExit

__all__ = ["main", "resolve_config_path"]

PROG = "fl-client"
SITES_DIR_ENV = "FEDSEAL_SITES_DIR"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Join a fedseal federation as one site: validate the site's config and data, wait "
            "for the coordinator, then train the shared LoRA adapter on local data, which never "
            "leaves the site."
        ),
        epilog=(
            "Exit codes: 0 finished, 2 bad argument, config or data, 3 coordinator unreachable, "
            "4 the Flower SuperNode failed, 5 the federation refused this site (its SuperNode "
            "key is not enrolled, or was revoked), 130 interrupted."
        ),
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("run", "enroll", "trust"),
        default="run",
        help="run (default): join the federation; enroll: make the site's identity and sealing "
        "keys and its SuperNode authentication key (once) and print the public keys for the "
        "operator to enrol; trust FILE: review the federation manifest FILE (members, modes, "
        "collusion bound, fingerprint) and pin it: the site then takes part only in rounds it "
        "allows",
    )
    parser.add_argument(
        "manifest",
        nargs="?",
        type=Path,
        metavar="FILE",
        help="(trust) the federation manifest the operator made with `fl-coordinator manifest`",
    )
    parser.add_argument(
        "--yes",
        metavar="FINGERPRINT",
        help="(trust) pin without asking, if the manifest's fingerprint is exactly FINGERPRINT "
        "(compare it with the operator's out of band)",
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
    parser.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="override the coordinator address of the config file",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        metavar="SECONDS",
        help="how long to keep retrying an unreachable coordinator (default: from the config, 60)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the config and load the data, then exit without joining",
    )
    return parser


def resolve_config_path(site: str, config: Path | None, sites_dir: Path | None) -> Path:
    """The config file for `site`, or a UserError naming the sites that do exist."""
    if config is not None:
        if not config.is_file():
            raise UserError(f"config file {config} does not exist")
        return config
    folder = sites_dir or Path(os.environ.get(SITES_DIR_ENV, "sites"))
    candidate = folder / f"{site}.toml"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []
    hint = f"known sites: {', '.join(known)}" if known else f"no site configs in {folder}/"
    raise UserError(f"unknown site {site!r}: no config at {candidate} ({hint})")


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # Imports after parsing keep `--help` fast.
    from dataclasses import replace

    from fedseal.client.site_config import SiteConfigError, load_site_config
    from fedseal.client.site_data import SiteDataError, check_validation, load_site_records
    from fedseal.client.supernode import (
        CoordinatorUnreachable,
        wait_for_coordinator,
    )

    path = resolve_config_path(args.site, args.config, args.sites_dir)
    try:
        config = load_site_config(path)
    except SiteConfigError as exc:
        raise UserError(str(exc)) from None
    if config.site.name != args.site:
        raise UserError(f"{path} describes site {config.site.name!r}, not {args.site!r}")
    coordinator = config.coordinator
    if args.coordinator:
        coordinator = replace(coordinator, address=args.coordinator)
    if args.connect_timeout is not None:
        if args.connect_timeout <= 0:
            raise UserError("--connect-timeout must be positive")
        coordinator = replace(coordinator, connect_timeout_s=args.connect_timeout)
    if coordinator is not config.coordinator:
        # Re-validate through the same parser rules by round-tripping the address check.
        if ":" not in coordinator.address or not coordinator.address.rsplit(":", 1)[1].isdigit():
            raise UserError(f"--coordinator {coordinator.address!r} must be HOST:PORT")
        config = replace(config, coordinator=coordinator)

    try:
        config.site.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create state directory {config.site.state_dir}: {exc}") from None
    if not os.access(config.site.state_dir, os.W_OK):
        raise UserError(f"state directory {config.site.state_dir} is not writable")

    if args.command == "enroll":
        return _enroll(config)
    if args.command == "trust":
        return _trust(config, args.manifest, args.yes)
    if args.manifest is not None or args.yes is not None:
        raise UserError("FILE and --yes belong to the trust command")

    try:
        data = load_site_records(config)
        check_validation(config, data)
    except SiteDataError as exc:
        raise UserError(str(exc)) from None
    _say(
        f"site {config.site.name}: {len(data.train)} training, {len(data.validation)} "
        f"validation and {len(data.test)} test records, "
        f"{len(data.labels)} classes, device {config.site.device}"
    )
    try:
        dp = config.resolve_dp(len(data.train))
    except SiteConfigError as exc:
        raise UserError(str(exc)) from None
    _say(f"site {config.site.name}: {_describe_dp(config, dp)}")
    _say(f"site {config.site.name}: {_describe_trust(config)}")
    auth_key = config.coordinator.auth_key
    if auth_key is not None and not auth_key.is_file():
        raise UserError(
            f"coordinator.auth_key: {auth_key} does not exist; run `fl-client --site "
            f"{config.site.name} enroll` to make it, then have the operator enrol its .pub"
        )
    if args.check:
        _say(f"site {config.site.name}: configuration OK ({path})")
        return ExitCode.OK

    try:
        wait_for_coordinator(
            coordinator.host, coordinator.port, coordinator.connect_timeout_s, report=_say
        )
    except CoordinatorUnreachable as exc:
        raise UserError(str(exc), ExitCode.UNREACHABLE) from None
    _say(f"site {config.site.name}: connected to coordinator at {coordinator.address}")
    ended = _serve_site(config)
    if ended.refusal is not None:
        raise UserError(
            f"site {config.site.name} was refused by the coordinator: {ended.refusal}",
            ExitCode.REFUSED,
        )
    if ended.code not in (0, -2, -15, 130):
        raise UserError(
            f"the Flower SuperNode exited with code {ended.code}", ExitCode.CHILD_FAILED
        )
    return ExitCode.OK


def _describe_dp(config, dp) -> str:
    """One line on the site's differential privacy, with what its history has spent so far."""
    if dp is None or not dp.enabled:
        return (
            "WARNING: differential privacy is OFF ([dp] missing or disabled): the shared "
            "adapter can memorise individual records"
        )
    from fedseal.client.dp.accountant_store import AccountantStore
    from fedseal.client.dp.errors import AccountantStoreError

    try:
        spent = AccountantStore.open(config.site.state_dir).spent_epsilon(
            dp.require_delta(), dp.accountant
        )
    except AccountantStoreError as exc:
        raise UserError(f"site {config.site.name}: {exc}") from None
    mechanism = (
        f"σ = {dp.noise_multiplier:g}"
        if dp.noise_multiplier is not None
        else f"σ calibrated per run for cumulative ε {dp.target_epsilon:g}"
    )
    return (
        f"DP-SGD on, budget ε = {dp.epsilon:g} at δ = {dp.require_delta():.3g} "
        f"({dp.accountant}), spent so far {spent:.4g}; clipping {dp.max_grad_norm:g}, {mechanism}"
    )


def _describe_trust(config) -> str:
    """One line on the pinned manifest and the modes this site accepts (weaker ones warned)."""
    from fedseal.client.trust import load_pinned_manifest
    from fedseal.contract.manifest import ManifestError

    try:
        manifest = load_pinned_manifest(config.site.state_dir)
    except ManifestError as exc:
        raise UserError(f"site {config.site.name}: {exc}") from None
    modes = ", ".join(sorted(str(m) for m in config.secure_agg.modes))
    if manifest is None:
        pinned = "no federation manifest pinned: every he and he+ss round will be refused"
    elif config.site.name not in manifest.members:
        raise UserError(
            f"site {config.site.name}: the pinned manifest {manifest.fingerprint} does not list "
            "this site; pin the federation's current manifest with `trust FILE`"
        )
    else:
        pinned = (
            f"manifest {manifest.federation} v{manifest.version} pinned ({manifest.fingerprint}, "
            f"{len(manifest.members)} members, up to {manifest.max_colluding} colluding)"
        )
    weaker = config.secure_agg.weaker_modes
    warning = (
        f"; WARNING: [secure_agg] allows {', '.join(weaker)}, which show this site's update "
        "to the coordinator (plain) or to any colluding site (he)"
        if weaker
        else ""
    )
    return f"{pinned}; accepts modes {modes}{warning}"


def _trust(config, path: Path | None, expected: str | None) -> int:
    """Show the manifest, and pin it once a person confirms it (or --yes names its print)."""
    from fedseal.client.trust import load_pinned_manifest, pin_manifest
    from fedseal.contract.manifest import FederationManifest, ManifestError

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
            _say(f"site {config.site.name}: this manifest is already pinned")
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
            _say("nothing was pinned")
            return ExitCode.USAGE
    where = pin_manifest(config.site.state_dir, manifest)
    _say(f"site {config.site.name}: pinned {manifest.fingerprint} in {where}")
    return ExitCode.OK


def _enroll(config) -> int:
    """Make the site's keys if needed and show the public halves for the operator."""
    from fedseal.client.site_keys import PUBLIC_FILE, create_site_keys
    from fedseal.contract.node_auth_key import (
        NODE_AUTH_KEY,
        NodeAuthKeyError,
        make_node_auth_key,
        public_key_path,
    )

    keys, made = create_site_keys(config.site.name, config.site.state_dir)
    auth_key = config.coordinator.auth_key or config.site.state_dir / "keys" / NODE_AUTH_KEY
    try:
        auth_key.parent.mkdir(parents=True, exist_ok=True)
        auth_made = make_node_auth_key(auth_key)
    except (NodeAuthKeyError, OSError) as exc:
        raise UserError(f"site {config.site.name}: SuperNode key: {exc}") from None
    public_file = config.site.state_dir / "keys" / PUBLIC_FILE
    verb = "made new" if made or auth_made else "already has"
    _say(
        f"site {config.site.name} {verb} keys; give {public_file} and "
        f"{public_key_path(auth_key)} to the operator to enrol:"
    )
    print(keys.public().to_json(), flush=True)
    return ExitCode.OK


def _serve_site(config) -> SupernodeExit:
    """Run the site's worker (data and model loaded once) beside its Flower SuperNode."""
    import logging

    import torch

    from fedseal.client.local_channel import LocalChannelServer, socket_path
    from fedseal.client.site_keys import load_site_keys
    from fedseal.client.site_service import SiteService
    from fedseal.client.supernode import run_supernode
    from fedseal.contract.site_identity import SiteKeyError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(config.training.threads)
    keys = None
    try:
        keys = load_site_keys(config.site.name, config.site.state_dir)
    except SiteKeyError as exc:
        _say(f"{exc} (only plain-mode runs can use this site)")
    service = SiteService(config, keys)
    server = LocalChannelServer(socket_path(config.site.state_dir), service.handle).start()
    try:
        return run_supernode(config)
    finally:
        server.close()


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
