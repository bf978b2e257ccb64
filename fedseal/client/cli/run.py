"""`fl-client --site NAME [run]`: check the site's config and data, wait for the coordinator,
then serve the federation's rounds from the site's worker beside a Flower SuperNode."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING

from fedseal.cli_support import ExitCode, UserError
from fedseal.client.cli.command import Command, say
from fedseal.client.cli.config_file import ensure_state_dir

if TYPE_CHECKING:
    from fedseal.client.dp.settings import DpSettings
    from fedseal.client.site_config import SiteConfig
    from fedseal.client.supernode import SupernodeExit

__all__ = ["RUN"]


def _add_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        parser.add_argument(
            "--coordinator",
            metavar="HOST:PORT",
            help="(run) override the coordinator address of the config file",
        ),
        parser.add_argument(
            "--connect-timeout",
            type=float,
            metavar="SECONDS",
            help="(run) how long to keep retrying an unreachable coordinator (default: from the "
            "config, 60)",
        ),
        parser.add_argument(
            "--check",
            action="store_true",
            help="(run) validate the config and load the data, then exit without joining",
        ),
    ]


def _run(config: SiteConfig, args: argparse.Namespace) -> int:
    from fedseal.client.site_config import SiteConfigError
    from fedseal.client.site_data import SiteDataError, check_validation, load_site_records
    from fedseal.client.supernode import CoordinatorUnreachable, wait_for_coordinator

    config = _with_overrides(config, args)
    ensure_state_dir(config)
    try:
        data = load_site_records(config)
        check_validation(config, data)
    except SiteDataError as exc:
        raise UserError(str(exc)) from None
    say(
        f"site {config.site.name}: {len(data.train)} training, {len(data.validation)} "
        f"validation and {len(data.test)} test records, "
        f"{len(data.labels)} classes, device {config.site.device}"
    )
    try:
        dp = config.resolve_dp(len(data.train))
    except SiteConfigError as exc:
        raise UserError(str(exc)) from None
    say(f"site {config.site.name}: {_describe_dp(config, dp)}")
    say(f"site {config.site.name}: {_describe_trust(config)}")
    auth_key = config.coordinator.auth_key
    if auth_key is not None and not auth_key.is_file():
        raise UserError(
            f"coordinator.auth_key: {auth_key} does not exist; run `fl-client --site "
            f"{config.site.name} enroll` to make it, then have the operator enrol its .pub"
        )
    if args.check:
        say(f"site {config.site.name}: configuration OK ({args.config_file})")
        return ExitCode.OK

    coordinator = config.coordinator
    try:
        wait_for_coordinator(
            coordinator.host, coordinator.port, coordinator.connect_timeout_s, report=say
        )
    except CoordinatorUnreachable as exc:
        raise UserError(str(exc), ExitCode.UNREACHABLE) from None
    say(f"site {config.site.name}: connected to coordinator at {coordinator.address}")
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


def _with_overrides(config: SiteConfig, args: argparse.Namespace) -> SiteConfig:
    """The config with `--coordinator` and `--connect-timeout` applied (and checked)."""
    coordinator = config.coordinator
    if args.coordinator:
        coordinator = replace(coordinator, address=args.coordinator)
    if args.connect_timeout is not None:
        if args.connect_timeout <= 0:
            raise UserError("--connect-timeout must be positive")
        coordinator = replace(coordinator, connect_timeout_s=args.connect_timeout)
    if coordinator is config.coordinator:
        return config
    # Re-validate through the same parser rules by round-tripping the address check.
    if ":" not in coordinator.address or not coordinator.address.rsplit(":", 1)[1].isdigit():
        raise UserError(f"--coordinator {coordinator.address!r} must be HOST:PORT")
    return replace(config, coordinator=coordinator)


def _describe_dp(config: SiteConfig, dp: DpSettings | None) -> str:
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


def _describe_trust(config: SiteConfig) -> str:
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


def _serve_site(config: SiteConfig) -> SupernodeExit:
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
        say(f"{exc} (only plain-mode runs can use this site)")
    service = SiteService(config, keys)
    server = LocalChannelServer(socket_path(config.site.state_dir), service.handle).start()
    try:
        return run_supernode(config)
    finally:
        server.close()


RUN = Command(
    name="run",
    help="run (default): join the federation and train on the site's records, which never "
    "leave the site",
    add_arguments=_add_arguments,
    run=_run,
)
