"""`fl-client --site NAME enroll`: make the site's keys once and show the public halves for the
operator to enrol."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fedseal.cli_support import ExitCode, UserError
from fedseal.client.cli.command import Command, say
from fedseal.client.cli.config_file import ensure_state_dir

if TYPE_CHECKING:
    from fedseal.client.site_config import SiteConfig

__all__ = ["ENROLL"]


def _add_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return []


def _enroll(config: SiteConfig, args: argparse.Namespace) -> int:
    """Make the site's keys if needed and show the public halves for the operator."""
    from fedseal.client.site_keys import PUBLIC_FILE, create_site_keys
    from fedseal.contract.node_auth_key import (
        NODE_AUTH_KEY,
        NodeAuthKeyError,
        make_node_auth_key,
        public_key_path,
    )

    ensure_state_dir(config)
    keys, made = create_site_keys(config.site.name, config.site.state_dir)
    auth_key = config.coordinator.auth_key or config.site.state_dir / "keys" / NODE_AUTH_KEY
    try:
        auth_key.parent.mkdir(parents=True, exist_ok=True)
        auth_made = make_node_auth_key(auth_key)
    except (NodeAuthKeyError, OSError) as exc:
        raise UserError(f"site {config.site.name}: SuperNode key: {exc}") from None
    public_file = config.site.state_dir / "keys" / PUBLIC_FILE
    verb = "made new" if made or auth_made else "already has"
    say(
        f"site {config.site.name} {verb} keys; give {public_file} and "
        f"{public_key_path(auth_key)} to the operator to enrol:"
    )
    print(keys.public().to_json(), flush=True)
    return ExitCode.OK


ENROLL = Command(
    name="enroll",
    help="enroll: make the site's identity and sealing keys and its SuperNode authentication "
    "key (once) and print the public keys for the operator to enrol",
    add_arguments=_add_arguments,
    run=_enroll,
)
