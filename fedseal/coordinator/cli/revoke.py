"""`fl-coordinator revoke`: a site revoked for good in the registry (a signed, chained
site_revoked event) and its SuperNode unregistered from Flower's node authentication."""

from __future__ import annotations

import argparse

from fedseal.cli_args import Command
from fedseal.cli_support import ExitCode, UserError
from fedseal.coordinator.cli import options

__all__ = ["COMMAND"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", required=True, metavar="NAME", help="the site's name")
    parser.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded)")
    parser.add_argument(
        "--node-id",
        type=int,
        metavar="ID",
        help="Flower's node id of the site's SuperNode (default: the one `enroll` recorded)",
    )
    options.add_common_options(parser, flower="unregister the SuperNode")


def _run(args: argparse.Namespace) -> int:
    from fedseal.coordinator.node_auth import (
        NodeAuthError,
        forget_node,
        recorded_node,
        unregister_node,
    )
    from fedseal.registry import RecordConflict, RecordNotFound, RegistryError

    state = options.state_dir(args)
    try:
        node_id = args.node_id if args.node_id is not None else recorded_node(state, args.site)
    except NodeAuthError as exc:
        raise UserError(str(exc)) from None
    with options.open_registry(args, writing=True) as registry:
        try:
            registry.revoke_site(args.site, args.reason)
        except RecordNotFound:
            raise UserError(f"no site called {args.site} in the registry") from None
        except RecordConflict as exc:
            options.say(f"{exc}; nothing changed in the registry")
        except ValueError as exc:
            raise UserError(str(exc)) from None
        except RegistryError as exc:
            raise UserError(f"registry: {exc}") from None
        else:
            options.say(f"revoked site {args.site} in the registry (site_revoked event recorded)")
    if node_id is None:
        return ExitCode.OK
    home = options.flwr_home(args)
    if home is None:
        options.say(
            f"Flower node {node_id} of site {args.site} is still registered; give --flwr-home "
            f"or run `flwr supernode unregister {node_id} {args.connection}`"
        )
        return ExitCode.OK
    try:
        unregister_node(node_id, args.connection, home)
    except NodeAuthError as exc:
        raise UserError(
            f"site {args.site} is revoked in the registry, but Flower node {node_id} was not "
            f"unregistered: {exc}",
            ExitCode.CHILD_FAILED,
        ) from None
    forget_node(state, args.site)
    options.say(f"unregistered Flower node {node_id} of site {args.site}")
    return ExitCode.OK


COMMAND = Command(
    name="revoke",
    help="revoke a site in the registry (and unregister its SuperNode from Flower)",
    description="Revoke the site for good: it is no longer sampled and its statements are "
    "refused (a signed, chained site_revoked event). If its SuperNode was registered by "
    "`enroll` (or --node-id is given) and a FLWR_HOME is known, it is also unregistered: "
    "`flwr supernode unregister NODE_ID CONNECTION`.",
    add_arguments=_add_arguments,
    run=_run,
)
