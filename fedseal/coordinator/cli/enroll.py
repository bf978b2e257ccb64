"""`fl-coordinator enroll`: a site's fedseal public keys in the registry (a signed, chained
site_enrolled event) and, optionally, its SuperNode key with Flower's node authentication."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseal.cli_args import Command
from fedseal.cli_support import ExitCode, UserError
from fedseal.coordinator.cli import options

__all__ = ["COMMAND"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", required=True, metavar="NAME", help="the site's name")
    parser.add_argument(
        "--keys",
        required=True,
        type=Path,
        metavar="PUBLIC_KEYS_JSON",
        help="the site's public key file (keys/site-public-keys.json in the site's state)",
    )
    parser.add_argument(
        "--auth-public-key",
        type=Path,
        metavar="PATH.pub",
        help="the site's SuperNode public key (OpenSSH, NIST EC curve) to register with Flower",
    )
    options.add_common_options(parser, flower="register the SuperNode key")


def _read_site_keys(path: Path, site: str) -> bytes:
    """The registry bundle of the keys file `fl-client enroll` wrote, which must be `site`'s."""
    from fedseal.contract.site_identity import SiteKeyError, SitePublicKeys

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    try:
        keys = SitePublicKeys.from_json(text)
    except SiteKeyError as exc:
        raise UserError(f"{path}: {exc}") from None
    if keys.site != site:
        raise UserError(f"{path} holds the keys of site {keys.site!r}, not {site!r}")
    return keys.to_bundle()


def _check_auth_public_key(path: Path) -> None:
    """The checks `flwr supernode register` makes, before anything is written."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UserError(f"{path} is not an OpenSSH public key: {exc}") from None
    nist = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, nist):
        raise UserError(
            f"{path} is not an ECDSA NIST-curve key (make one with `{options.PROG} site-auth-key`)"
        )


def _run(args: argparse.Namespace) -> int:
    from fedseal.coordinator.node_auth import (
        NodeAuthError,
        NodeKeyInUse,
        recorded_node,
        register_node,
        remember_node,
        unregister_node,
    )
    from fedseal.registry import RecordConflict, RegistryError

    bundle = _read_site_keys(args.keys, args.site)
    state = options.state_dir(args)
    home, known = None, None
    if args.auth_public_key is not None:
        _check_auth_public_key(args.auth_public_key)
        home = options.checked_flwr_home(args)
        try:
            known = recorded_node(state, args.site, args.auth_public_key)
        except NodeAuthError as exc:
            raise UserError(str(exc)) from None
    with options.open_registry(args, writing=True) as registry:
        try:
            before = len(registry.events(site=args.site))
            registry.enroll_site(args.site, bundle)
            changed = len(registry.events(site=args.site)) > before
        except (RecordConflict, ValueError) as exc:
            raise UserError(str(exc)) from None
        except RegistryError as exc:
            raise UserError(f"registry: {exc}") from None
    if changed:
        options.say(f"enrolled site {args.site} in the registry (site_enrolled event recorded)")
    else:
        options.say(f"site {args.site} is already enrolled with these keys; nothing changed")
    if args.auth_public_key is None:
        return ExitCode.OK
    assert home is not None
    try:
        node_id = register_node(args.auth_public_key, args.connection, args.site, home)
    except NodeAuthError as exc:
        if known is not None and isinstance(exc, NodeKeyInUse):
            options.say(
                f"site {args.site}'s SuperNode key is already registered with Flower "
                f"as node {known}"
            )
            return ExitCode.OK
        raise UserError(
            f"site {args.site} is enrolled in the registry, but its SuperNode key was not "
            f"registered with Flower: {exc}",
            ExitCode.CHILD_FAILED,
        ) from None
    try:
        previous = recorded_node(state, args.site)
    except NodeAuthError:
        previous = None
    remember_node(state, args.site, node_id, args.auth_public_key)
    options.say(f"registered site {args.site}'s SuperNode key with Flower as node {node_id}")
    if previous is not None and previous != node_id:
        # A new key for the site: the old one must stop working (key rotation).
        try:
            unregister_node(previous, args.connection, home)
        except NodeAuthError as exc:
            raise UserError(
                f"site {args.site}'s new SuperNode key is registered, but its previous one "
                f"(Flower node {previous}) is still accepted: {exc}; run `flwr supernode "
                f"unregister {previous} {args.connection}`",
                ExitCode.CHILD_FAILED,
            ) from None
        options.say(
            f"unregistered site {args.site}'s previous SuperNode key (Flower node {previous})"
        )
    return ExitCode.OK


COMMAND = Command(
    name="enroll",
    help="enrol a site's public keys in the registry (and its SuperNode key with Flower)",
    description="Record the site's identity and sealing public keys (the JSON file that "
    "`fl-client --site=NAME enroll` writes) in the registry, as a signed, chained "
    "site_enrolled event; enrolling the same keys again changes nothing. With "
    "--auth-public-key, also register that key with the SuperLink's node authentication: "
    "`flwr supernode register KEY.pub CONNECTION --name SITE`, and keep the node id in "
    "STATE/flower-nodes.json.",
    add_arguments=_add_arguments,
    run=_run,
)
