"""The site's config file as every fl-client command finds and loads it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from fedseal.cli_support import UserError

if TYPE_CHECKING:
    from fedseal.client.site_config import SiteConfig

__all__ = ["SITES_DIR_ENV", "ensure_state_dir", "load_config", "resolve_config_path"]

SITES_DIR_ENV = "FEDSEAL_SITES_DIR"


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


def load_config(site: str, path: Path) -> SiteConfig:
    """The validated config at `path`, which must describe `site`."""
    from fedseal.client.site_config import SiteConfigError, load_site_config

    try:
        config = load_site_config(path)
    except SiteConfigError as exc:
        raise UserError(str(exc)) from None
    if config.site.name != site:
        raise UserError(f"{path} describes site {config.site.name!r}, not {site!r}")
    return config


def ensure_state_dir(config: SiteConfig) -> None:
    """Create the site's state directory if needed; it must be writable."""
    try:
        config.site.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create state directory {config.site.state_dir}: {exc}") from None
    if not os.access(config.site.state_dir, os.W_OK):
        raise UserError(f"state directory {config.site.state_dir} is not writable")
