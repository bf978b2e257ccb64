"""Site config files for a demo federation (one per site, as an institution would write them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

from fedseal.contract.node_auth_key import NODE_AUTH_KEY

__all__ = ["write_demo_site_configs"]


def write_demo_site_configs(
    folder: Path,
    *,
    sites: list[str],
    scenario: str,
    seed: int,
    coordinator: str,
    state_root: Path,
    threads: int = 1,
    batch_size: int | dict[str, int] = 32,
    max_eval_examples: int = 0,
    dp: dict[str, dict[str, Any]] | None = None,
    root_certificates: Path | None = None,
    modes: list[str] | None = None,
) -> dict[str, Path]:
    """Write `folder/<site>.toml` for each demo site; returns the paths by site.

    `dp` holds each site's `[dp]` table (see `fedseal.client.dp.settings`); None writes no
    `[dp]` table, so the sites train without differential privacy. When `dp` is given, every
    site must have a table: a site silently left out would train without DP.

    With `root_certificates` (the federation CA), sites connect over TLS and authenticate their
    SuperNode with the key `fl-client enroll` makes in STATE/keys/node-auth.

    `modes` becomes each site's `[secure_agg] modes` (None: the default, he+ss only).
    """
    if dp is not None:
        missing = [site for site in sites if site not in dp]
        if missing:
            raise ValueError(f"no [dp] table for site(s) {', '.join(missing)}")
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for site in sites:
        document = {
            "site": {"name": site, "state_dir": str(state_root / site), "device": "auto"},
            "coordinator": _coordinator_table(coordinator, state_root / site, root_certificates),
            "data": {
                "source": "demo",
                "scenario": scenario,
                "num_sites": len(sites),
                "seed": seed,
            },
            "training": {
                "batch_size": batch_size[site] if isinstance(batch_size, dict) else batch_size,
                "threads": threads,
                "max_eval_examples": max_eval_examples,
            },
        }
        if dp is not None:
            document["dp"] = dict(dp[site])
        if modes is not None:
            document["secure_agg"] = {"modes": sorted(set(modes))}
        path = folder / f"{site}.toml"
        path.write_text(tomli_w.dumps(document), encoding="utf-8")
        paths[site] = path
    return paths


def _coordinator_table(
    address: str, state_dir: Path, root_certificates: Path | None
) -> dict[str, Any]:
    table: dict[str, Any] = {"address": address, "insecure": True, "connect_timeout_s": 60}
    if root_certificates is not None:
        table.update(
            insecure=False,
            root_certificates=str(root_certificates),
            auth_key=str(state_dir / "keys" / NODE_AUTH_KEY),
        )
    return table
